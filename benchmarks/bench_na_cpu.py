"""CPU benchmark of natgan's neighborhood attention (torch backend) against natten 0.21's CPU forward.

Times, on one problem (default: 64x64 map, 16 heads of 32 channels, kernel 7, batch 1):
  * ``natten.na2d`` forward without RPB (natten has neither RPB nor a CPU backward);
  * our torch backend forward with RPB, and forward + backward with RPB;
and measures the peak resident memory of one forward + backward on a large map (default 256x256,
4 heads of 32 channels), each memory case in a fresh subprocess so that ``ru_maxrss`` belongs to it.

    python benchmarks/bench_na_cpu.py                 # full run (natten takes several s per call)
    python benchmarks/bench_na_cpu.py --no-natten --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from natgan.ops import neighborhood_attention  # noqa: E402


def _inputs(args, size: int, heads: int, requires_grad: bool):
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, size, size, heads, args.head_dim)
    q, k, v = (torch.randn(shape, generator=gen).requires_grad_(requires_grad) for _ in range(3))
    rpb = (0.5 * torch.randn(heads, 2 * args.kernel - 1, 2 * args.kernel - 1, generator=gen)).requires_grad_(
        requires_grad
    )
    return q, k, v, rpb


def _best_time(fn, repeats: int) -> tuple[float, float]:
    """(min, median) wall seconds over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def time_cases(args) -> list[tuple[str, float, float]]:
    rows = []
    q, k, v, rpb = _inputs(args, args.size, args.heads, requires_grad=False)
    if not args.no_natten:
        import natten

        def natten_forward():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                natten.na2d(q, k, v, kernel_size=args.kernel, dilation=args.dilation)

        rows.append(("natten.na2d forward (no RPB)", *_best_time(natten_forward, args.natten_repeats)))

    def ours_forward():
        with torch.no_grad():
            neighborhood_attention(q, k, v, args.kernel, args.dilation, rpb=rpb, backend="torch")

    rows.append(("natgan torch forward (RPB)", *_best_time(ours_forward, args.repeats)))

    qg, kg, vg, rpbg = _inputs(args, args.size, args.heads, requires_grad=True)
    grad_out = torch.randn_like(qg)

    def ours_forward_backward():
        out = neighborhood_attention(qg, kg, vg, args.kernel, args.dilation, rpb=rpbg, backend="torch")
        torch.autograd.grad(out, (qg, kg, vg, rpbg), grad_out)

    rows.append(("natgan torch forward+backward (RPB)", *_best_time(ours_forward_backward, args.repeats)))
    return rows


def _peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, unlike ru_maxrss, is not inherited from the forking parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; macOS: bytes


def memory_case(args) -> dict:
    """Run in a subprocess: peak RSS of one forward + backward with RPB on the large map."""
    # one small call first: one-time costs (lazy imports, op registration) are not the op's memory
    small = _inputs(args, max(16, args.kernel * args.dilation), args.memory_heads, requires_grad=True)
    warm = neighborhood_attention(*small[:3], args.kernel, args.dilation, rpb=small[3], backend="torch")
    torch.autograd.grad(warm, small, torch.ones_like(warm))
    q, k, v, rpb = _inputs(args, args.memory_size, args.memory_heads, requires_grad=True)
    grad_out = torch.randn_like(q)
    before = _peak_rss_mb()
    out = neighborhood_attention(q, k, v, args.kernel, args.dilation, rpb=rpb, backend="torch")
    torch.autograd.grad(out, (q, k, v, rpb), grad_out)
    tensor_mb = 4 * q.numel() * 4 / 2**20  # q, k, v, grad_out
    return {"peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before, "inputs_mb": tensor_mb}


def measure_memory(args) -> dict:
    cmd = [sys.executable, __file__, "--memory-case"] + [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("batch", "head_dim", "kernel", "dilation", "memory_size", "memory_heads")
    ] + ([f"--threads={args.threads}"] if args.threads else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="feature map height = width for timing")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--dilation", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of our backend (after a warm-up)")
    parser.add_argument("--natten-repeats", type=int, default=2, help="timed natten calls (several s each)")
    parser.add_argument("--memory-size", type=int, default=256)
    parser.add_argument("--memory-heads", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-natten", action="store_true", help="skip the natten baseline")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--memory-case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:
        print(json.dumps(memory_case(args)))
        return

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; problem: batch {args.batch}, "
        f"{args.size}x{args.size}, {args.heads} heads x {args.head_dim}, kernel {args.kernel}, "
        f"dilation {args.dilation}, float32"
    )
    mem = None if args.no_memory else measure_memory(args)  # first: nothing big allocated here yet
    rows = time_cases(args)
    baseline = rows[0][1] if not args.no_natten else None
    print(f"{'case':40s} {'min s':>9s} {'median s':>9s} {'speed-up vs natten fwd':>24s}")
    for name, best, median in rows:
        speedup = f"{baseline / best:.1f}x" if baseline else "-"
        print(f"{name:40s} {best:9.3f} {median:9.3f} {speedup:>24s}")
    if mem is not None:
        print(
            f"peak RSS, forward+backward with RPB, batch {args.batch}, {args.memory_size}x{args.memory_size}, "
            f"{args.memory_heads} heads x {args.head_dim}, kernel {args.kernel}: {mem['peak_rss_mb']:.0f} MB "
            f"(peak before the call, inputs allocated: {mem['rss_before_mb']:.0f} MB; q, k, v, grad_out: "
            f"{mem['inputs_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    main()
