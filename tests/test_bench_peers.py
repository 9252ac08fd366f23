"""benchmarks/bench_peers.py's machinery for the StyleSwin / official StyleNAT peers, without the official code.

The end-to-end parity run needs checkouts of microsoft/StyleSwin and SHI-Labs/StyleNAT, which are not part of
nat-gan (see docs/benchmarks.md for the command and its numbers). What is tested here is everything of ours
that the run relies on: the NATTEN 0.17 stand-in the official StyleNAT code runs on (against a per-query
reference written from the documented semantics, and against nat-gan's own NA op), the in-memory channel
table narrowing, running only a script's ``add_argument`` calls, and the clean slate between checkouts.
"""

import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import natten_v017  # noqa: E402
from natgan.bench import peers as runner  # noqa: E402
from natgan.bench.measure import BenchSettings  # noqa: E402
from natgan.ops.dispatch import neighborhood_attention  # noqa: E402
from peers.official import official_checkout  # noqa: E402
from peers.stylenat import stylenat_levels  # noqa: E402
from peers.transformer import narrow_channel_tables, official_parser  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_window(i: int, length: int, kernel: int, dilation: int) -> list[int]:
    """NATTEN 0.17's window of query ``i`` on one axis, straight from the definition (shared fixture README)."""
    group, a = i % dilation, i // dilation
    count = -(-(length - group) // dilation)
    start = min(max(a - kernel // 2, 0), count - kernel)
    return [(start + t) * dilation + group for t in range(kernel)]


def _reference_na(q, k, v, kernel, dilation, rpb):
    """Per-query loops: logits (q . k + rpb[key - query in dilated units]), softmax, weighted sum of v."""
    B, heads, H, W, D = q.shape
    out = torch.zeros_like(v)
    for i in range(H):
        rows = _reference_window(i, H, kernel, dilation)
        for j in range(W):
            cols = _reference_window(j, W, kernel, dilation)
            logits, values = [], []
            for r in rows:
                for c in cols:
                    bias = rpb[:, (r - i) // dilation + kernel - 1, (c - j) // dilation + kernel - 1]
                    logits.append((q[:, :, i, j] * k[:, :, r, c]).sum(-1) + bias)
                    values.append(v[:, :, r, c])
            attn = torch.stack(logits, -1).softmax(-1)
            out[:, :, i, j] = (attn[..., None] * torch.stack(values, -2)).sum(-2)
    return out


def test_axis_neighbours_shift_windows_at_borders_inside_each_dilation_group():
    index, bias = natten_v017.axis_neighbours(7, 3, 2)
    assert index[0].tolist() == [0, 2, 4] and index[6].tolist() == [2, 4, 6]      # even group: 4 positions
    assert index[5].tolist() == [1, 3, 5] and index[1].tolist() == [1, 3, 5]      # odd group: 3 positions
    assert bias[0].tolist() == [2, 3, 4] and bias[6].tolist() == [0, 1, 2]        # key - query + k - 1
    assert bias[3].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="exceeds"):
        natten_v017.axis_neighbours(8, 5, 2)


@pytest.mark.parametrize("shape, kernel, dilation", [((5, 6), 3, 1), ((11, 9), 3, 3), ((10, 12), 5, 2),
                                                     ((7, 7), 7, 1)])
def test_stand_in_matches_the_per_query_definition(shape, kernel, dilation):
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, *shape, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=torch.float64)
    logits = natten_v017.na2d_qk(q, k, kernel_size=kernel, dilation=dilation, rpb=rpb)
    assert logits.shape == (2, 3, *shape, kernel * kernel)
    out = natten_v017.na2d_av(logits.softmax(-1), v, kernel_size=kernel, dilation=dilation)
    torch.testing.assert_close(out, _reference_na(q, k, v, kernel, dilation, rpb), atol=1e-12, rtol=0)


def test_stand_in_agrees_with_natgans_own_na_op():
    """Two independent implementations of the same semantics (the official StyleNAT code scales q itself)."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 4, 16, 12, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(4, 5, 5, generator=gen, dtype=torch.float64)
    theirs = natten_v017.na2d_av(natten_v017.na2d_qk(q, k, 3, (2, 3), rpb=rpb).softmax(-1), v, 3, (2, 3))
    heads_last = [t.permute(0, 2, 3, 1, 4) for t in (q, k, v)]
    ours = neighborhood_attention(*heads_last, 3, (2, 3), rpb=rpb, scale=1.0, backend="torch")
    torch.testing.assert_close(ours.permute(0, 3, 1, 2, 4), theirs, atol=1e-12, rtol=0)


def _write_checkout(root: Path, value: int) -> Path:
    (root / "models").mkdir(parents=True)                       # no __init__.py: a namespace package
    (root / "models" / "net.py").write_text(textwrap.dedent(f"""
        VALUE = {value}

        class Net:
            def __init__(self, multiplier):
                widths = [512, 512, 256 * multiplier]
                table = {{4: 512, 8: 128 * multiplier}}
                self.widths, self.table = widths, table
    """))
    return root


def test_checkouts_with_the_same_namespace_package_get_a_clean_slate(tmp_path):
    cpu = torch.device("cpu")
    marker = types.ModuleType("natten")
    sys.modules["natten"], before = marker, sys.modules.get("natten")
    try:
        for value in (1, 2):
            root = _write_checkout(tmp_path / f"checkout{value}", value)
            with official_checkout(root, cpu, natten_v017.stand_in_modules()):
                from models import net
                import natten

                assert net.VALUE == value and natten.functional.na2d_qk is natten_v017.na2d_qk
            assert "models" not in sys.modules and "models.net" not in sys.modules
            assert sys.modules["natten"] is marker and "natten.functional" not in sys.modules
    finally:
        if before is None:
            sys.modules.pop("natten", None)
        else:
            sys.modules["natten"] = before


def test_channel_tables_are_narrowed_in_memory_only(tmp_path):
    root = _write_checkout(tmp_path / "checkout", 1)
    source = (root / "models" / "net.py").read_text()
    with official_checkout(root, torch.device("cpu")):
        from models import net

        narrow_channel_tables(net, {"Net": "widths"}, 8)
        built = net.Net(2)
        assert built.widths == [64, 64, 64] and built.table == {4: 512, 8: 256}
        narrow_channel_tables(net, {"Net": "table"}, 4)
        assert net.Net(2).table == {4: 128, 8: 64}
        with pytest.raises(SystemExit, match="expected one 'channels = ...' in Net.__init__, found 0"):
            narrow_channel_tables(net, {"Net": "channels"}, 8)
    assert (root / "models" / "net.py").read_text() == source


def test_only_the_scripts_add_argument_calls_run(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import argparse
        open({str(marker)!r}, "w").write("module level ran")

        if __name__ == "__main__":
            parser = argparse.ArgumentParser()
            parser.add_argument("--size", type=int, default=256)
            parser.add_argument("--D_sn", action="store_true")
            args = parser.parse_args()
            open({str(marker)!r}, "w").write("main ran")
    """))
    args = official_parser(script).parse_args(["--size", "32", "--D_sn"])
    assert (args.size, args.D_sn) == (32, True)
    assert not marker.exists()


def test_stylenat_levels_follow_the_official_ffhq_pattern():
    kernels, dilations = stylenat_levels(256)
    assert kernels == [[3]] + [[7]] * 6
    assert dilations == [[1], [1], [1, 2], [1, 4], [1, 8], [1, 16], [1, 32]]     # conf/runs/ffhq_256.yaml
    assert stylenat_levels(32) == (kernels[:4], dilations[:4])


def test_running_out_of_device_memory_in_a_training_step_is_reported_not_fatal(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(runner, "measure_train_step", out_of_memory)
    settings = BenchSettings(train=True, train_batch=16)
    row = runner.train_step(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), settings, torch.device("cpu"), "x")
    assert row["img_per_s"] is None and row["error"] == "out of memory at batch 16"
    assert runner.best([row, {"img_per_s": 2.0}], "img_per_s") == {"img_per_s": 2.0}
