"""`nat-gan bench` / natgan.bench: JSON structure, FLOP counting, timing, memory, tables, errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

import tiny_model  # noqa: F401  (registers "_tiny_test")
from natgan.bench import (BenchSettings, PeakMemory, benchmark, count_flops, measure_generator, na_flops,
                          resolve_config, time_calls)
from natgan.bench.measure import attention_backend
from natgan.devices import precision_context, resolve_device
from natgan.cli import app, main
from natgan.cli.bench import results_table
from natgan.errors import ConfigError

TINY = tiny_model.NAME
FAST = dict(warmup=1, rounds=2, device="cpu")


@pytest.fixture
def second_tiny(monkeypatch):
    """A second registered model (same builder, wider) so multi-model runs compare two names."""
    from natgan.models import registry

    base = registry.get_spec(TINY)
    spec = registry.ModelSpec("_tiny_wide", base.config_cls, base.builder, "test-only", {"width": 32}, 1.5)
    monkeypatch.setitem(registry._REGISTRY, "_tiny_wide", spec)
    return spec


# ---------------------------------------------------------------------------------------------- FLOPs


def test_flops_of_known_modules():
    lin, conv = nn.Linear(64, 32), nn.Conv2d(3, 8, 3, padding=1)
    x, img = torch.randn(4, 64), torch.randn(1, 3, 16, 16)
    report = count_flops(lambda: (lin(x), conv(img)), [lin, conv])
    assert report.counted == 2 * 4 * 64 * 32 + 2 * (8 * 16 * 16) * (3 * 3 * 3)
    assert report.total == report.counted and report.analytic == 0 and report.na_calls == 0
    assert set(report.by_op) >= {"addmm", "convolution"}


def test_neighborhood_attention_is_charged_analytically(monkeypatch):
    """The NA entry point's own dispatches are hidden and it is charged 4·B·H·W·heads·K²·D."""
    import natgan.ops

    def fake_na(q, k, v, kernel_size, dilation=1, rpb=None, scale=None, backend=None):
        dense = q.flatten(1, 2).transpose(1, 2) @ k.flatten(1, 2).permute(0, 2, 3, 1)   # would be counted
        return v + dense.mean() * 0

    monkeypatch.setattr(natgan.ops, "neighborhood_attention", fake_na, raising=False)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):                                    # x [B, H, W, 8], 2 heads of 4
            from natgan.ops import neighborhood_attention        # looked up at call time, like the models

            q, k, v = self.qkv(x).view(*x.shape[:3], 3, 2, 4).unbind(3)
            return neighborhood_attention(q, k, v, 3, 2)

    block, x = Block(), torch.randn(2, 6, 6, 8)
    report = count_flops(lambda: block(x), [block])
    assert report.na_calls == 1
    assert report.analytic == 4 * 2 * 6 * 6 * 2 * 9 * 4 == na_flops(torch.empty(2, 6, 6, 2, 4), (3, 3))
    assert report.counted == 2 * (2 * 6 * 6) * 8 * 24                     # only the qkv projection
    assert natgan.ops.neighborhood_attention is fake_na                   # restored after counting
    assert "analytic neighbourhood attention" in report.method


def test_real_neighborhood_attention_op_is_charged_by_formula():
    """The pure-PyTorch op computes dense halo GEMMs; only the model FLOPs of NA are charged."""
    import natgan.ops

    q, k, v = (torch.randn(1, 16, 16, 2, 8) for _ in range(3))
    rpb = torch.zeros(2, 5, 5)
    report = count_flops(lambda: natgan.ops.neighborhood_attention(q, k, v, 3, 2, rpb=rpb, backend="torch"))
    assert (report.na_calls, report.counted) == (1, 0)
    assert report.total == report.analytic == 4 * 16 * 16 * 2 * 9 * 8
    with FlopCounterMode(display=False) as raw:  # plain torch counter: the op's registered formula, same figure
        natgan.ops.neighborhood_attention(q, k, v, 3, 2, rpb=rpb, backend="torch")
    assert raw.get_total_flops() == report.total
    q.requires_grad_(True)
    with FlopCounterMode(display=False) as raw:  # backward of the op is charged twice the forward
        natgan.ops.neighborhood_attention(q, k, v, 3, 2, rpb=rpb, backend="torch").sum().backward()
    assert raw.get_total_flops() == 3 * report.total


def test_stylenat_flops_charge_every_partition():
    from natgan.models import create

    G = create("stylenat", resolution=32, style_dim=16, n_mlp=2, channels=[32] * 4, min_heads=4, kernel_size=3,
               dilations=[[1], [1], [1, 2], [1, 4]], d_channels=[16] * 4).generator.eval()
    report = count_flops(lambda: G(torch.randn(1, 16)), [G])
    # 8x8: one partition (4 heads); 16x16 and 32x32: two partitions of 2 heads; two blocks per level
    assert report.na_calls == 2 * 1 + 2 * 2 + 2 * 2
    hd = 8
    expected = sum(2 * 4 * res * res * 4 * 9 * hd for res in (8, 16, 32))
    assert report.analytic == expected
    assert report.total == report.counted + report.analytic


def test_parameter_views_do_not_break_the_counter():
    """A module returning a view of a parameter (StyleGAN2's constant input) under no_grad."""
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.const = nn.Parameter(torch.randn(1, 4))
            self.lin = nn.Linear(4, 2)

        def forward(self, batch):
            return self.lin(self.const.expand(batch, 4))

    m = Const()
    assert count_flops(lambda: m(3), [m]).total == 2 * 3 * 4 * 2
    assert all(p.requires_grad for p in m.parameters())


# --------------------------------------------------------------------------------------- timing/memory


def test_time_calls_counts_and_statistics():
    calls = []
    timing = time_calls(lambda: calls.append(1), warmup=3, rounds=5, device="cpu")
    assert len(calls) == 8 and len(timing.seconds) == 5
    assert timing.first_call_s is not None and timing.total == pytest.approx(sum(timing.seconds))
    timing.seconds = [1.0, 3.0]
    assert timing.mean == 2.0 and timing.std == pytest.approx(2 ** 0.5) and timing.per_second(4) == 2.0
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, rounds=0, device="cpu")


def test_cpu_peak_memory_sees_a_transient_allocation():
    for _ in range(2):                         # the second region must not hide in memory freed by the first
        with PeakMemory("cpu") as mem:
            x = torch.ones(64 * 2**20 // 4)    # 64 MiB, touched, then freed inside the region
            del x
        assert mem.report.method.startswith("CPU peak RSS")
        assert mem.report.delta_bytes >= 60 * 2**20
    with PeakMemory("cpu") as small:
        torch.ones(16)
    assert small.report.delta_bytes < 16 * 2**20


def test_precision_and_backend_contexts_restore_state(monkeypatch):
    monkeypatch.delenv("NATGAN_NA_BACKEND", raising=False)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision_context("bf16", torch.device("cpu")) as autocast:
        assert torch.backends.cuda.matmul.allow_tf32 is True
        with autocast():
            assert nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with precision_context("fp32", torch.device("cpu")) as autocast:
        assert torch.backends.cuda.matmul.allow_tf32 is False
        with autocast():
            assert nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with attention_backend("flex"):
        assert os.environ["NATGAN_NA_BACKEND"] == "flex"
    assert "NATGAN_NA_BACKEND" not in os.environ


# ------------------------------------------------------------------------------------------- measuring


def test_benchmark_json_structure():
    out = benchmark([TINY], BenchSettings(batches=(1, 3), train=True, train_rounds=2, **FAST))
    assert set(out) == {"machine", "settings", "results", "failures"} and out["failures"] == []
    assert out["machine"]["device"] == "cpu" and out["machine"]["device_name"]
    assert out["settings"]["batches"] == [1, 3] and out["settings"]["rounds"] == 2
    (row,) = out["results"]
    assert row["model"] == TINY and row["resolution"] == 8
    assert row["g_params"] == 8 * 16 + 16 + 32 * 192 + 192 and row["d_params"] == 193
    assert row["paper_img_per_s"] is None and row["paper_g_params_m"] is None
    assert row["precision"] == "tf32" and row["compile"] is None and row["protocol"].startswith("reduced")
    # tiny G: map Linear(8->16) + out Linear(32->192) per image
    assert row["gflops_per_img"] == pytest.approx(2 * (8 * 16 + 32 * 192) / 1e9, abs=1e-3)
    assert [t["batch"] for t in row["throughput"]] == [1, 3]
    for t in row["throughput"]:
        assert t["img_per_s"] > 0 and t["ms_per_call"] > 0 and t["added_memory_mb"] is not None
        assert t["img_per_s"] == pytest.approx(t["batch"] / (t["ms_per_call"] / 1e3), rel=0.02)
    train = row["train"]
    assert train["batch"] == 3 and train["rounds"] == 2 and train["img_per_s"] > 0 and train["step_ms"] > 0
    json.dumps(out)  # JSON-ready


def test_threads_setting_is_scoped_to_the_run():
    before = torch.get_num_threads()
    out = benchmark([TINY], BenchSettings(threads=1, flops=False, **FAST))
    assert out["machine"]["threads"] == 1 and out["settings"]["threads"] == 1
    assert torch.get_num_threads() == before


def test_measure_generator_on_a_plain_module_and_official_defaults():
    from natgan.models import create

    G = create(TINY).generator
    res = measure_generator(G, BenchSettings(batches=(2,), flops=False, **FAST))
    assert "gflops_per_img" not in res and res["throughput"][0]["batch"] == 2
    assert res["warmup"] == 1 and res["rounds"] == 2
    cpu_default = measure_generator(G, BenchSettings(batches=(1,), flops=False, device="cpu"))
    assert (cpu_default["warmup"], cpu_default["rounds"]) == (2, 5)


def test_training_step_updates_both_networks():
    from natgan.bench.measure import train_step_fn
    from natgan.models import create

    pair = create(TINY)
    g0 = [p.detach().clone() for p in pair.generator.parameters()]
    d0 = [p.detach().clone() for p in pair.discriminator.parameters()]
    step = train_step_fn(pair.generator, pair.discriminator, 2, torch.device("cpu"),
                         lambda: torch.autocast("cpu", enabled=False))
    step()
    assert all(not torch.equal(a, b) for a, b in zip(g0, pair.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, pair.discriminator.parameters()))


def test_overrides_and_recipes(tmp_path):
    name, cfg = resolve_config(TINY, sets=["model.width=4"], resolution=16)
    assert (name, cfg.width, cfg.resolution) == (TINY, 4, 16)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nname = "{TINY}"\nwidth = 6\n')
    assert resolve_config(None, recipe=str(recipe))[1].width == 6
    with pytest.raises(ConfigError, match="describes model"):
        resolve_config("stylegan2", recipe=str(recipe))
    with pytest.raises(ConfigError, match="only model"):
        resolve_config(TINY, sets=["train.batch=2"])
    with pytest.raises(ConfigError, match="model.widht"):
        resolve_config(TINY, sets=["model.widht=2"])


@pytest.mark.parametrize("kwargs, match", [
    ({"precision": "fp16"}, "--precision"),
    ({"attn_backend": "cuda"}, "--attn-backend"),
    ({"compile": "fast"}, "--compile"),
    ({"batches": (0,)}, "--batch"),
    ({"rounds": 0}, "--rounds"),
    ({"peak_tflops": -1.0}, "--peak-tflops"),
])
def test_settings_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BenchSettings(**kwargs).validate()


def test_unknown_model_fails_before_measuring(second_tiny):
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        benchmark([TINY, "nope"], BenchSettings(**FAST))
    with pytest.raises(ConfigError, match="one model"):
        benchmark([TINY, "_tiny_wide"], BenchSettings(**FAST), recipe="x.toml")


def test_one_failing_model_does_not_stop_the_others(second_tiny, monkeypatch):
    """`bench --models a,b` measures a when b runs out of memory, and reports b's failure."""
    from natgan.bench import measure

    real = measure.benchmark_model

    def failing(name, *args, **kwargs):
        if name == "_tiny_wide":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(measure, "benchmark_model", failing)
    result = benchmark(["_tiny_wide", TINY], BenchSettings(**FAST, flops=False))
    assert [r["model"] for r in result["results"]] == [TINY]
    assert result["failures"] == [{"model": "_tiny_wide", "stage": "measurement",
                                   "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}]
    with pytest.raises(torch.OutOfMemoryError):  # one model alone: its own error
        benchmark(["_tiny_wide"], BenchSettings(**FAST, flops=False))


def test_cli_reports_a_refused_model_and_measures_the_rest(capsys):
    """A configuration one model refuses (a key it lacks) is reported, HiT at 16 px is measured, exit 1."""
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--models", f"{TINY},hit-b", "--resolution", "16", "--set", "model.low_res_stages=1",
              "--rounds", "1", "--warmup", "0", "--device", "cpu", "--no-flops", "--json"])
    captured = capsys.readouterr()
    assert exc.value.code == 1
    data = json.loads(captured.out)
    assert [r["model"] for r in data["results"]] == ["hit-b"] and data["results"][0]["resolution"] == 16
    assert [(f["model"], f["stage"]) for f in data["failures"]] == [(TINY, "configuration")]
    assert captured.err.startswith("error: bench: 1 of 2 models could not be measured")
    assert f"{TINY} (configuration): --set model.low_res_stages=1: unknown key" in captured.err


def test_paper_figures_only_for_the_paper_configuration(second_tiny):
    """The paper's parameter count and speed stand beside a measurement of the registered configuration only."""
    paper = benchmark(["_tiny_wide"], BenchSettings(**FAST, flops=False))["results"][0]
    assert paper["paper_g_params_m"] == 1.5
    changed = benchmark(["_tiny_wide"], BenchSettings(**FAST, flops=False), sets=["model.width=8"])["results"][0]
    assert changed["paper_g_params_m"] is None and changed["paper_img_per_s"] is None


def test_list_is_readable_at_80_columns():
    from rich.console import Console

    from natgan.bench.listing import model_table
    from natgan.cli.bench import model_list

    rows = model_table()
    console = Console(width=80, record=True)
    for part in model_list(rows):
        console.print(part, soft_wrap=False)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    for r in rows:
        assert f"{r['model']}: {' '.join(r['description'].split())}" in flat
    table_rows = [line for line in text.splitlines() if line.startswith("│ ")]
    assert len(table_rows) == len(rows)  # one line per model, nothing wrapped


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_several_models_one_table(second_tiny, tmp_path, monkeypatch):
    from natgan.cli.console import console

    monkeypatch.setattr(console, "_width", 250)  # not "width": its setter would pin the old width after the test
    out_file = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--models", f"{TINY},_tiny_wide", "--batch", "1,2", "--warmup", "0",
                                   "--rounds", "1", "--device", "cpu", "--output", str(out_file)],
                             )
    assert res.exit_code == 0, res.output
    for text in (TINY, "_tiny_wide", "img/s b1", "img/s b2", "GFLOP/img", "Generator throughput on"):
        assert text in res.stdout
    saved = json.loads(out_file.read_text())
    assert [r["model"] for r in saved["results"]] == [TINY, "_tiny_wide"]
    assert saved["results"][1]["paper_g_params_m"] == 1.5


def test_cli_json_and_table_builder(second_tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--model", TINY, "--json", "--rounds", "1", "--warmup", "0", "--device", "cpu", "--train",
              "--train-rounds", "1", "--no-flops"])
    assert (exc.value.code or 0) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["results"][0]["train"]["batch"] == 1 and "gflops_per_img" not in data["results"][0]
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(results_table(data))
    text = console.export_text()
    assert "train img/s" in text and "GFLOP/img" not in text


@pytest.mark.parametrize("args, code, message", [
    (["--model", "nope"], 2, "unknown model 'nope'"),
    (["--model", TINY, "--precision", "fp16"], 2, "--precision"),
    (["--model", TINY, "--batch", "1,x"], 2, "--batch"),
    (["--model", TINY, "--compile-mode", "reduce-overhead"], 2, "--compile-mode needs --compile"),
    ([], 2, "give --model"),
])
def test_cli_errors_one_line(capsys, args, code, message):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert exc.value.code == code
    assert message in err and err.strip().count("\n") == 0


# ------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_gpu_events_memory_and_compile():
    dev = torch.device("cuda")
    timing = time_calls(lambda: torch.randn(512, 512, device=dev) @ torch.randn(512, 512, device=dev),
                        warmup=2, rounds=3, device=dev)
    assert len(timing.seconds) == 3 and all(s > 0 for s in timing.seconds)
    with PeakMemory(dev) as mem:
        x = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev)
        del x
    assert mem.report.delta_bytes >= 64 * 2**20 and mem.report.method.startswith("CUDA")
    out = benchmark([TINY], BenchSettings(batches=(1, 4), warmup=3, rounds=5, device="cuda", precision="bf16",
                                          compile="default", train=True, train_rounds=2))
    row = out["results"][0]
    assert row["throughput"][1]["peak_memory_mb"] is not None and row["train"]["img_per_s"] > 0
    assert out["machine"]["device_name"] == torch.cuda.get_device_name(0)


@pytest.mark.gpu
def test_gpu_official_protocol_label():
    out = benchmark([TINY], BenchSettings(device="cuda", flops=False))
    assert out["results"][0]["protocol"].startswith("official")
    assert (out["settings"]["warmup"], out["settings"]["rounds"]) == (10, 500)


@pytest.mark.slow
def test_compile_on_cpu():
    out = benchmark([TINY], BenchSettings(batches=(2,), compile="default", flops=False, **FAST))
    row = out["results"][0]
    assert row["compile"] == "default" and row["throughput"][0]["img_per_s"] > 0
    assert row["compile_graph_breaks"] == 0                    # the tiny model compiles in one graph


def test_benchmark_script_markdown(second_tiny, tmp_path, capsys):
    """benchmarks/bench_generators.py: same API, a Markdown table and JSON written next to each other."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generators.py"
    spec = importlib.util.spec_from_file_location("bench_generators", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gen.json"
    assert module.main(["--models", f"{TINY},_tiny_wide", "--batch", "1,2", "--warmup", "0", "--rounds", "1",
                        "--device", "cpu", "--train", "--train-rounds", "1", "--out", str(out)]) == 0
    table = out.with_suffix(".md").read_text()
    assert table.count(f"| {TINY} |") == 1 and "| _tiny_wide |" in table and "train img/s" in table
    assert json.loads(out.read_text())["results"][1]["model"] == "_tiny_wide"


def test_list_counts_match_real_builds():
    """--list builds on the meta device (no weights allocated); the counts must equal real builds."""
    from natgan.bench.listing import _shapes_only
    from natgan.models import count_params, create

    meta, real = _shapes_only(TINY), create(TINY)
    assert next(meta.generator.parameters()).device.type == "meta"
    assert count_params(meta.generator) == count_params(real.generator)
    assert count_params(meta.discriminator) == count_params(real.discriminator)
    nat = _shapes_only("stylenat")                      # the official FFHQ-256 pair (reference §1.7)
    assert (count_params(nat.generator), count_params(nat.discriminator)) == (48_921_000, 26_211_585)


# ------------------------------------------------------------------------------------- class-conditional

COND_SETS = ["model.resolution=16", "model.style_dim=16", "model.n_mlp=2", "model.channel_max=16",
             "model.num_classes=3"]  # a reduced conditional StyleGAN2 (tests/reduced_models.py)


def _conditional_pair():
    from natgan.models import create
    from reduced_models import reduced

    torch.manual_seed(0)
    return create("stylegan2", **reduced("stylegan2", 3))


def test_bench_inputs_labels_are_uniform_seeded_and_leave_z_alone():
    """A conditional G gets seeded labels in [0, K) from a stream of their own: z is what the unconditional
    model gets, the same seed gives the same labels, and every class is drawn."""
    from natgan.bench.measure import bench_inputs

    G = _conditional_pair().generator
    z, c = bench_inputs(G, 64, torch.device("cpu"), 5)
    assert c.dtype == torch.long and c.shape == (64,) and set(c.tolist()) == {0, 1, 2}
    z2, c2 = bench_inputs(G, 64, torch.device("cpu"), 5)
    assert torch.equal(z, z2) and torch.equal(c, c2)
    assert not torch.equal(c, bench_inputs(G, 64, torch.device("cpu"), 6)[1])
    plain = create_tiny()
    zu, cu = bench_inputs(plain, 64, torch.device("cpu"), 5)
    assert cu is None and torch.equal(zu, torch.randn(64, plain.z_dim, generator=torch.Generator().manual_seed(5)))


def create_tiny():
    from natgan.models import create

    return create(TINY).generator


def test_conditional_generator_throughput_and_flops():
    """measure_generator on a conditional G: every call (FLOPs pass and timed calls) gets labels, and the
    result says which. Without labels the conditional G raises, so a finished measurement proves they were fed."""
    G = _conditional_pair().generator
    seen = []
    G.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[1] if len(args) > 1 else kwargs.get("c")),
                                with_kwargs=True)
    res = measure_generator(G, BenchSettings(batches=(2,), **FAST), label="cond")
    assert res["labels"].startswith("class-conditional (3 classes): uniform random class labels")
    assert res["gflops_per_img"] > 0 and res["throughput"][0]["img_per_s"] > 0
    assert seen and all(c is not None and c.dtype == torch.long for c in seen)
    assert {len(c) for c in seen} == {1, 2}  # the FLOPs pass (batch 1) and the timed batch


def test_conditional_training_step_feeds_labels_to_g_and_d():
    """One step of the bench's training step on a conditional pair updates G's label embedding and D's
    projection head (only labels reach them), so both networks were given labels."""
    from natgan.bench.measure import train_step_fn

    pair = _conditional_pair()
    G, D = pair.generator, pair.discriminator
    embed0 = G.label_embed.embed.weight.detach().clone()
    head = [(n, p.detach().clone()) for n, p in D.named_parameters() if "mapping" in n or "head" in n]
    assert head
    step = train_step_fn(G, D, 4, torch.device("cpu"), lambda: torch.autocast("cpu", enabled=False))
    step()
    assert not torch.equal(embed0, G.label_embed.embed.weight)
    params = dict(D.named_parameters())
    assert any(not torch.equal(p0, params[n]) for n, p0 in head)


def test_conditional_config_benches_through_the_cli(capsys):
    """`nat-gan bench --set model.num_classes=3 --train` measures G and the training step and says which labels
    were fed, in the JSON and in the table caption."""
    sets = [a for s in COND_SETS for a in ("--set", s)]
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--model", "stylegan2", *sets, "--json", "--rounds", "1", "--warmup", "0", "--device", "cpu",
              "--train", "--train-rounds", "1", "--batch", "2"])
    captured = capsys.readouterr()
    assert (exc.value.code or 0) == 0, captured.err
    (row,) = json.loads(captured.out)["results"]
    assert "uniform random class labels" in row["labels"] and "uniform random class labels" in row["train"]["labels"]
    assert row["throughput"][0]["img_per_s"] > 0 and row["train"]["img_per_s"] > 0
    result = benchmark(["stylegan2"], BenchSettings(flops=False, **FAST), sets=COND_SETS)
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(results_table(result))
    caption = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "stylegan2: class-conditional (3 classes): uniform random class labels" in caption
    assert "labels" not in benchmark([TINY], BenchSettings(flops=False, **FAST))["results"][0]


def _script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conditional_config_in_the_benchmark_script(tmp_path, capsys):
    """benchmarks/bench_generators.py --set model.num_classes=...: measured, and the Markdown says how."""
    out = tmp_path / "gen.json"
    assert _script("bench_generators").main(
        ["--models", "stylegan2", *[a for s in COND_SETS for a in ("--set", s)], "--batch", "2", "--warmup", "0",
         "--rounds", "1", "--device", "cpu", "--train", "--train-rounds", "1", "--out", str(out)]) == 0
    table = out.with_suffix(".md").read_text()
    assert "stylegan2: class-conditional (3 classes): uniform random class labels" in table
    assert "| stylegan2 | 16 |" in table


def test_conditional_recipe_in_the_trainer_benchmark(tmp_path):
    """benchmarks/bench_train.py on recipes/demo_conditional.toml: the real trainer on the digits' labels."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo_conditional.toml"
    report = _script("bench_train").measure_training(
        recipe, steps=1, warmup=1, device="cpu", workdir=tmp_path,
        sets=["model.resolution=16", "model.channels=[16,16,16]", "model.d_channels=[16,16,16]", "train.batch=2"])
    assert report["finished_step"] == 2 and report["img_per_s"] > 0
    assert report["labels"].startswith("class-conditional (10 classes): the trainer's own labels")


class _MeanColours(nn.Module):
    """An offline stand-in for Inception: 2x2 mean colours of the 299-px resized image (12 numbers)."""

    def forward(self, x):
        x = torch.nn.functional.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_conditional_generator_in_the_fid_benchmark(tmp_path, monkeypatch):
    """benchmarks/bench_fid.py --set model.num_classes=3: the synthetic reference is labelled, and our path and
    the official write-PNGs path generate the same (z, label) pairs, so their FIDs agree."""
    import warnings

    from natgan.metrics import FeatureExtractor

    bench_fid = _script("bench_fid")
    monkeypatch.setenv("NATGAN_CACHE_DIR", str(tmp_path / "cache"))  # compare() points it into its workdir too
    args = bench_fid.parse_args(["--model", "stylegan2", *[a for s in COND_SETS for a in ("--set", s)], "--num", "8",
                                 "--num-ref", "9", "--workers", "0", "--batch", "4", "--device", "cpu"])
    G, described = bench_fid.build_generator(args, torch.device("cpu"))
    assert G.num_classes == 3 and "model.num_classes=3" in described
    ext = FeatureExtractor(_MeanColours().eval(), mode="legacy_pytorch", name=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bench_fid.compare(G, described, args, torch.device("cpu"), tmp_path / "work", extractor=ext)
    ours, official = result["ours"]["fid"], result["official"]["fid"]
    assert "class-conditional (3 classes)" in result["labels"]
    assert ours == pytest.approx(official, rel=1e-3)


def test_conditional_generator_in_the_metrics_benchmark(tmp_path, monkeypatch):
    """benchmarks/bench_metrics.py with a conditional model config: labelled synthetic reference, FID measured."""
    from natgan.metrics import FeatureExtractor

    bench_metrics = _script("bench_metrics")
    monkeypatch.setattr(bench_metrics, "random_pytorch_fid_weights", lambda path: None)
    monkeypatch.setattr(bench_metrics, "build_inception",
                        lambda mode, **kw: FeatureExtractor(_MeanColours().eval(), mode=mode, name=None))
    monkeypatch.setattr(bench_metrics, "build_vgg16", lambda **kw: None)
    out = bench_metrics.measure("cpu", 8, 16, model="stylegan2", workdir=tmp_path, separately=False, runs=("fid",),
                                batch=4, model_config={"style_dim": 16, "n_mlp": 2, "channel_max": 16,
                                                       "num_classes": 3})
    assert "class-conditional (3 classes)" in out["labels"] and out["fid_only_s"] > 0


def test_conditional_checkpoint_in_the_learning_curve(tmp_path):
    """benchmarks/learning_curve.py --recipe recipes/demo_conditional.toml: the generated digits of a conditional
    checkpoint carry labels drawn from the digits' labels (it called G without labels)."""
    from natgan import recipe as recipes
    from natgan.data import prepare_digits
    from natgan.sampling.classes import dataset_labels
    from natgan.train import train
    from reduced_models import reduced

    data = tmp_path / "digits16.lmdb"
    prepare_digits(data, sizes=[16], progress=False)
    recipe = recipes.from_dict({"model": {"name": "stylegan2", **reduced("stylegan2", 10)},
                                "data": {"path": str(data), "workers": 0},
                                "train": {"batch": 2, "iterations": 1, "lr_decay": False, "checkpoint_every": 1,
                                          "sample_every": 1}})
    train(recipe, tmp_path / "run", show_progress=False)
    curve = _script("learning_curve")
    pool = torch.tensor([3, 3, 7])
    images = curve.generated(tmp_path / "run" / "latest.pt", 5, pool)
    assert images.shape == (5, 3, 16, 16) and images.dtype == torch.uint8
    from natgan import checkpoint

    G = checkpoint.build_generator(checkpoint.load(tmp_path / "run" / "latest.pt"))
    z = torch.randn(5, G.z_dim, generator=torch.Generator().manual_seed(123))
    from natgan.models.normalization import to_uint8

    with torch.no_grad():
        expected = to_uint8(G(z, dataset_labels(pool)(range(5))), G.normalization)
    assert torch.equal(images, expected)


def test_conditional_recipe_in_the_ada_benchmark():
    """benchmarks/bench_ada.py --recipe recipes/demo_conditional.toml: the real update rule on synthetic reals
    with seeded uniform labels, fakes labelled from a uniform pool (it fed unlabelled reals)."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo_conditional.toml"
    configs = {"none": ["train.augment=\"none\"", "train.batch=2"],
               "diffaug": ["train.augment=\"diffaug\"", "train.batch=2"]}
    out = _script("bench_ada").measure("cpu", steps=1, rounds=1, warmup=0, recipe=str(recipe), configs=configs)
    assert out["labels"].startswith("class-conditional (10 classes): seeded uniform random labels")
    assert set(out["img_per_s"]) == {"none", "diffaug"} and all(v > 0 for v in out["img_per_s"].values())
