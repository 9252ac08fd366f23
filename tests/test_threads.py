"""The CPU thread policy (natgan.devices) and `--threads` / NATGAN_THREADS on every command."""

from __future__ import annotations

import os

import pytest
import torch

from natgan import devices
from natgan.errors import ConfigError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_env(monkeypatch):
    for name in ("NATGAN_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_usable_cores_never_exceed_the_affinity_mask():
    assert 1 <= devices.usable_cores() <= len(os.sched_getaffinity(0))


def test_a_cgroup_quota_bounds_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(devices, "_cgroup_cpu_quota", lambda: 3)
    assert devices.usable_cores() == 3
    monkeypatch.setattr(devices, "_cgroup_cpu_quota", lambda: None)
    assert devices.usable_cores() == 16


def test_option_wins_over_environment_wins_over_default(monkeypatch, no_env):
    monkeypatch.setattr(devices, "default_threads", lambda: (5, "5 usable cores"))
    assert devices.resolve_threads(None) == (5, "5 usable cores")
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # honoured as every OpenMP program does (outer level)
    assert devices.resolve_threads(None) == (4, "OMP_NUM_THREADS")
    monkeypatch.setenv("NATGAN_THREADS", " 3 ")
    assert devices.resolve_threads(None) == (3, "NATGAN_THREADS")
    assert devices.resolve_threads(2) == (2, "--threads")


def test_torchrun_ranks_share_the_cores(monkeypatch, no_env):
    monkeypatch.setattr(devices, "usable_cores", lambda: 8)
    monkeypatch.setattr(devices, "busy_cores", lambda interval_s=0.0: 8.0)  # the other ranks, starting too
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert devices.default_threads() == (2, "8 usable cores, shared by 4 local ranks")


@pytest.mark.parametrize("value, source", [("0", "NATGAN_THREADS"), ("-1", "NATGAN_THREADS"),
                                           ("two", "NATGAN_THREADS"), ("2.5", "NATGAN_THREADS"),
                                           ("100000", "NATGAN_THREADS")])
def test_bad_counts_are_config_errors_naming_their_source(monkeypatch, no_env, value, source):
    monkeypatch.setenv("NATGAN_THREADS", value)
    with pytest.raises(ConfigError, match=f"^{source} '?{value}"):
        devices.resolve_threads(None)
    with pytest.raises(ConfigError, match="^--threads 0"):
        devices.resolve_threads(0)


@pytest.mark.parametrize("cores, busy, expected", [(2, None, 2), (2, 0.2, 2), (2, 1.0, 1), (2, 2.0, 1),
                                                   (2, 7.5, 1), (8, 3.0, 5), (8, 2.6, 5), (1, None, 1)])
def test_default_is_the_free_cores_this_process_may_use(monkeypatch, no_env, cores, busy, expected):
    """Threads beyond the cores that other work leaves free only wait for each other."""
    monkeypatch.setattr(devices, "usable_cores", lambda: cores)
    monkeypatch.setattr(devices, "busy_cores", lambda interval_s=0.0: busy)
    count, why = devices.default_threads()
    assert count == expected and f"{cores} usable cores" in why
    assert ("busy with other work" in why) == (busy is not None and busy >= 0.5)


def test_busy_cores_reads_the_cpus_of_this_process(monkeypatch):
    ticks = iter([{"cpu0": (100, 1000), "cpu1": (50, 1000)}, {"cpu0": (190, 1100), "cpu1": (50, 1100)}])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(devices, "_cpu_times", lambda cpus: next(ticks))
    assert devices.busy_cores(interval_s=0.0) == pytest.approx(0.9)  # cpu0 90 % busy, cpu1 idle


def test_busy_cores_of_this_machine_is_a_share_of_its_cpus():
    busy = devices.busy_cores(interval_s=0.05)
    assert busy is None or 0.0 <= busy <= len(os.sched_getaffinity(0)) + 1e-6


def test_apply_sets_torch_threads(restore_threads, no_env):
    assert devices.apply_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    assert devices.apply_cpu_threads(2) == 2 and torch.get_num_threads() == 2


@pytest.mark.parametrize("device, threads, requested, expected", [
    ("cpu", 2, 4, 0),      # 2 compute threads on 2 cores: decoding moves into the main process
    ("cpu", 1, 4, 1),      # one core left for one worker
    ("cpu", 1, 0, 0),      # never more than requested
    ("cuda:0", 2, 4, 1),   # the main process mostly waits on the GPU: one core kept for it
])
def test_loader_workers_do_not_oversubscribe(monkeypatch, device, threads, requested, expected):
    monkeypatch.setattr(devices, "usable_cores", lambda: 2)
    assert devices.loader_workers(requested, device, threads=threads) == expected


def test_the_trainer_caps_its_workers(monkeypatch, restore_threads):
    """recipe data.workers beyond the free cores does not start more processes than the cores allow."""
    import natgan.train.trainer as trainer_mod

    seen = {}

    def spy(*args, **kwargs):
        seen["workers"] = kwargs["num_workers"]
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer_mod.torch.utils.data, "DataLoader", spy)
    monkeypatch.setattr(devices, "usable_cores", lambda: 2)

    class Fake:
        recipe = type("R", (), {"data": type("D", (), {"path": "x", "workers": 8})()})()
        step, device = 0, torch.device("cpu")
        plan = type("P", (), {"micro": 1, "per_gpu": 1})()
        t = type("T", (), {"seed": 0})()
        dist = type("W", (), {"rank": 0, "world": 1})()
        G = type("G", (), {"resolution": 8, "normalization": "unit"})()

    class FakeDataset:
        def __init__(self, *a, **k):
            pass

        def __len__(self):
            return 4

    import natgan.data

    monkeypatch.setattr(natgan.data, "TrainingDataset", FakeDataset)
    torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="stop here"):
        next(trainer_mod.Trainer._data_iterator(Fake()))
    assert seen["workers"] == 1  # 2 cores, 1 compute thread: one worker, not the recipe's 8


# ------------------------------------------------------------------------------------------ CLI


def _all_commands():
    import typer

    from natgan.cli import app

    group = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, path + [name])
        else:
            out.append((" ".join(path), cmd))

    walk(group, [])
    return out


def test_every_command_has_threads():
    commands = _all_commands()
    assert len(commands) >= 14  # prepare's five, train, sample, fid, visualize, bench, import, project, ...
    for name, cmd in commands:
        options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert "--threads" in options, name


def run(capsys, *argv):
    from natgan.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_threads_option_sets_torch_threads_before_the_command(capsys, restore_threads, tmp_path):
    import json

    code, out, _ = run(capsys, "doctor", "--threads", "2", "--json", "--no-attention", "--run-dir", str(tmp_path))
    rows = {(c["group"], c["name"]): c for c in json.loads(out)["checks"]}
    assert "torch uses 2 threads" in rows[("devices", "cpu")]["detail"] and torch.get_num_threads() == 2
    code, out, _ = run(capsys, "doctor", "--json", "--no-attention", "--run-dir", str(tmp_path))  # NATGAN_THREADS=1
    rows = {(c["group"], c["name"]): c for c in json.loads(out)["checks"]}
    assert "torch uses 1 threads" in rows[("devices", "cpu")]["detail"]


@pytest.mark.parametrize("argv, env, expected", [
    (["bench", "--list", "--threads", "0"], None, "--threads 0: expected 1 to"),
    (["prepare", "check", "missing.lmdb", "--threads", "-3"], None, "--threads -3: expected 1 to"),
    (["bench", "--list"], "many", "NATGAN_THREADS 'many': not a whole number"),
])
def test_bad_thread_counts_are_one_line_usage_errors(capsys, monkeypatch, argv, env, expected):
    if env is not None:
        monkeypatch.setenv("NATGAN_THREADS", env)
    code, out, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_load_benchmark_table_states_shares_and_timeouts():
    """benchmarks/bench_load.py's report (the measurement itself is a benchmark, not a test)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_load.py"
    spec = importlib.util.spec_from_file_location("bench_load", path)
    bench_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_load)

    def run(condition, config, value, threads, bound=None):
        return {"round": 0, "condition": condition, "config": config, "img_per_s": value, "bound": bound,
                "threads": threads, "load_at_start": 3.0, "seconds": 10.0}

    runs = [run("idle", "torch", 20.0, 2), run("idle", "nat-gan", 18.0, 2),
            run("loaded", "torch", None, None, bound=0.5), run("loaded", "nat-gan", 9.0, 1)]
    summary = bench_load.summarize(runs, ["torch", "nat-gan"])
    rows = {r["config"]: r for r in summary}
    assert rows["nat-gan"]["loaded_vs_own_idle"] == pytest.approx(0.5)
    assert rows["nat-gan"]["loaded_vs_torch_idle"] == pytest.approx(0.45)
    assert rows["torch"]["loaded"] is None and rows["torch"]["loaded_vs_own_idle"] == pytest.approx(0.025)
    report = {"machine": {"cpu": "x", "cores": 2, "usable_cores": 2, "torch": "t", "date": "d"},
              "settings": {"steps": 20, "warmup": 5, "busy": 2, "rounds": 1}, "runs": runs, "summary": summary}
    table = bench_load.markdown(report, ["--steps", "20"])
    assert "| torch defaults (before) | 2 / — | 20.00 | < 0.50 | 2 % | 2 % |" in table
    assert "| nat-gan default (after) | 2 / 1 | 18.00 | 9.00 | 50 % | 45 % |" in table
