"""GPU acceptance in one command: every GPU goal and correctness check, time-boxed, reported as it goes.

    python benchmarks/gpu_acceptance.py --budget 540 --out DIR         # on a GPU node (what .ci/gpu runs)
    python benchmarks/gpu_acceptance.py --device cpu --smoke --out DIR  # every section on tiny sizes (CI)
    python benchmarks/gpu_acceptance.py --list                          # sections, caps and goals

Sections run in priority order, each under its own cap (clamped to what is left of ``--budget``; a smoke run
has no caps and no budget: it checks that every section runs, and a busy CI machine must not fail it); a
failing section is recorded and the next one runs; ``DIR/acceptance.json`` and ``DIR/acceptance.md``
are rewritten after every section, so a run cut off at its limit still reports what it did (see
:mod:`natgan.bench.acceptance`). Every figure is printed next to its goal with pass/fail.

Each section's code is a module of ``benchmarks/gpu_sections/`` (what several share is in its ``common``);
this script lists them in ``SECTIONS`` with their caps and goals, and ``--only NAME`` runs one alone. To add a
measurement, write ``def my_section(ctx)`` that calls ``ctx.record(...)``/``ctx.check(...)`` in a module of
its own there and add one ``Section(...)`` entry to ``SECTIONS`` at its priority. Runs from the source tree: nothing
needs installing but the packages (``.ci/gpu`` carries the missing ones as wheels).

``--smoke`` shrinks every model and problem (tiny configs, 1-2 timed rounds, no compilation) so that
the whole script runs on a CPU in seconds; its figures are judged against the same GPU goals (and fail
them: CPU numbers), but only section errors make a smoke run fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):  # the source tree, not an installed copy; and the sibling benchmarks
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

from gpu_sections.ada import ada_section  # noqa: E402
from gpu_sections.common import GOALS  # noqa: E402
from gpu_sections.ddp import ddp_section  # noqa: E402
from gpu_sections.doctor import doctor_section  # noqa: E402
from gpu_sections.fid import fid_section  # noqa: E402
from gpu_sections.generators import generators_section  # noqa: E402
from gpu_sections.gpu_tests import gpu_tests_section  # noqa: E402
from gpu_sections.metrics import metrics_section  # noqa: E402
from gpu_sections.na_op import na_op_section  # noqa: E402
from gpu_sections.peers import peers_section  # noqa: E402
from gpu_sections.training import training_section  # noqa: E402
from natgan.bench.acceptance import Section, run_sections  # noqa: E402

SECTIONS: list[Section] = [   # priority order; caps sum to the default budget, 540 s
    Section("doctor", doctor_section, 40, ("needed doctor checks pass (NA backends vs torch, flex compiles, dirs)",)),
    Section("gpu_tests", gpu_tests_section, 90, ("pytest -m gpu: no failures",)),
    Section("na_op", na_op_section, 90, (f"flex/torch vs float64 CPU: fp32 <= {GOALS['na_fp32_err']}, "
                                         f"bf16 <= {GOALS['na_bf16_err']} (forward and all gradients)",
                                         "every StyleNAT-256/-1024 geometry measured")),
    Section("generators", generators_section, 140,
            (f"StyleNAT-256 batch 1 TF32 >= {GOALS['stylenat_b1_tf32_img_s']:g} img/s",
             f"StyleNAT-256 batch 32 bf16 >= {GOALS['stylenat_b32_bf16_img_s']:g} img/s")),
    Section("training", training_section, 90, (f"training >= {GOALS['train_img_s_per_gpu']:g} img/s per GPU "
                                               "with R1 + bCR", "activation checkpointing lowers memory at 1024")),
    Section("fid", fid_section, 60, (f"FID >= {GOALS['fid_speedup']:g}x faster than the official path",
                                     f"the two FIDs agree to {GOALS['fid_agreement_rel']:g}")),
    Section("ddp", ddp_section, 30, ("torchrun -m natgan train, one NCCL rank: steps and checkpoint",)),
    # Past the default 540 s budget: reached with a larger --budget, or alone with --only ada,metrics,peers.
    Section("ada", ada_section, 90, (f"ADA bgc <= {GOALS['ada_overhead_pct']:g} % slower than no augmentation",)),
    Section("metrics", metrics_section, 240, ("fid,kid,pr,dc,is together far below the sum of single runs",)),
    Section("peers", peers_section, 120, ("parity with the official code (float32) and img/s ratio >= 1",)),
]


def machine_info(device: torch.device) -> dict:
    from natgan import __version__
    from natgan.bench.measure import device_name

    info = {"device_name": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "nat-gan": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        if commit:
            info["commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        from torch import _dynamo

        _dynamo.reset()
    except Exception:  # noqa: BLE001 - best effort between sections
        pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=540, help="seconds for the whole run (default 540)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-acceptance"),
                   help="report folder (default: $OUT, else ./gpu-acceptance)")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep sections' scratch files here (default: a temporary folder, removed)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: every section in seconds (CPU CI)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; --smoke: 1, which a shared box runs "
                        "far faster than several spinning threads)")
    p.add_argument("--only", default=None, help="comma list of sections to run (default: all)")
    p.add_argument("--cap", action="append", default=[], metavar="SECTION=SECONDS",
                   help="change one section's cap, e.g. --cap na_op=200 (repeatable)")
    p.add_argument("--list", action="store_true", help="print the sections, caps and goals, and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke and args.threads is None:
        args.threads = 1
    if args.list:
        for s in SECTIONS:
            print(f"{s.name:12s} cap {s.cap_s:4.0f} s  {'; '.join(s.goals)}")
        return 0
    from natgan.errors import NatGanError
    from natgan.devices import resolve_device

    try:
        device = resolve_device(args.device)
    except NatGanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sections = SECTIONS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {s.name for s in SECTIONS}]
        if unknown:
            print(f"error: --only {','.join(unknown)}: no such section (see --list)", file=sys.stderr)
            return 2
        sections = [s for s in SECTIONS if s.name in wanted]
    for item in args.cap:
        name, _, seconds = item.partition("=")
        try:
            index = [s.name for s in sections].index(name.strip())
            cap = float(seconds)
        except ValueError:
            print(f"error: --cap {item}: expected SECTION=SECONDS with a section of this run (see --list)",
                  file=sys.stderr)
            return 2
        sections[index] = dataclasses.replace(sections[index], cap_s=cap)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    report = run_sections(sections, out_dir=args.out, budget_s=args.budget, device=device, smoke=args.smoke,
                          machine=machine_info(device), cleanup=_cleanup, log=log, work_root=args.workdir)
    print((args.out / "acceptance.md").read_text())
    statuses = report["summary"]["sections"].values()
    if args.smoke:  # CPU figures fail GPU goals by design; only broken sections fail a smoke run
        return 0 if all(s in ("passed", "failed") for s in statuses) else 1
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
