"""Section ``ddp``: ``torchrun -m natgan train`` with one process (NCCL on CUDA, gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

from natgan.bench.acceptance import SectionContext

from gpu_sections.common import ROOT, last_line


def ddp_section(ctx: SectionContext) -> None:
    """`torchrun -m natgan train` with one process: the process group (NCCL on CUDA, gloo on CPU), DDP and the
    rank-0 checkpoint of the real CLI. One GPU cannot host two NCCL ranks, so this is the single-rank path."""
    from natgan import checkpoint
    from natgan.data import prepare_digits

    data = ctx.workdir / "digits32.lmdb"
    prepare_digits(data, sizes=[32], progress=False)
    steps, outdir = 2 if ctx.smoke else 4, ctx.workdir / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "natgan",
           "train", "--recipe", str(ROOT / "recipes" / "demo.toml"), "--data", str(data), "--outdir", str(outdir),
           "--no-progress", "--set", f"train.iterations={steps}", "--set", f"train.checkpoint_every={steps}",
           "--set", f"train.sample_every={steps}", "--set", "data.workers=0",
           "--set", f"train.device={'cuda' if ctx.device.type == 'cuda' else 'cpu'}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=ctx.child_timeout())
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - start
    (ctx.out_dir or ctx.workdir).joinpath("torchrun.log").write_text(out)
    backend = "NCCL" if ctx.device.type == "cuda" else "gloo"
    latest = outdir / "latest.pt"
    step = checkpoint.load(latest)["progress"]["step"] if proc.returncode == 0 and latest.is_file() else None
    ctx.check(f"torchrun, 1 process ({backend}): {steps} training steps and a checkpoint", step == steps,
              f"exit {proc.returncode}, checkpoint step {step}; {last_line(out)}")
    ctx.record("torchrun run, start to finish", seconds, "s",
               note=f"process group start, data, {steps} steps, checkpoint")
