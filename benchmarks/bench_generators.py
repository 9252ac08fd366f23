"""Generator throughput / memory / FLOPs of the registered models, side by side, as a Markdown table.

The same measurement as ``nat-gan bench --models ...`` (it calls :func:`natgan.bench.benchmark`), plus a
Markdown table ready for docs/benchmarks.md and the JSON next to it. Examples::

    # this CPU (2 cores): default sizes, small batches, reduced rounds
    python benchmarks/bench_generators.py --device cpu --batch 1,4 --warmup 1 --rounds 3
    # GPU, official protocol at batch 1 plus larger batches in bf16
    python benchmarks/bench_generators.py --device cuda --batch 1 --precision tf32
    python benchmarks/bench_generators.py --device cuda --batch 32 --precision bf16 --rounds 100 --train
    # class-conditional configurations (G and D get uniform random labels, seeded; the table says so)
    python benchmarks/bench_generators.py --models stylenat,stylegan2 --set model.num_classes=10 --batch 1,4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODELS = "stylenat,styleswin,hit-b,stylegan2,ganformer"


def markdown(result: dict) -> str:
    """One row per model; img/s, ms/call and added memory per batch size (+ training columns)."""
    m, s, rows = result["machine"], result["settings"], result["results"]
    head = ["model", "res", "G params (M)", "GFLOP/img"]
    for b in s["batches"]:
        head += [f"img/s b{b}", f"ms b{b}", f"+MB b{b}"]
    paper = any(r.get("paper_img_per_s") for r in rows)
    if paper:
        head += ["paper img/s (b1, GPU)"]
    train = any(r.get("train") for r in rows)
    if train:
        head += ["train img/s", "train ms/step", "train batch"]
    lines = [f"Device: {m['device_name']} ({m['device']}), torch {m['torch']}; precision {s['precision']}, "
             f"compile {s['compile'] or 'off'}, {s['warmup']} warm-up / {s['rounds']} timed passes; "
             f"memory = {rows[0].get('memory_method', '-') if rows else '-'} (added over the resident baseline).",
             *[f"{r['model']}: {r['labels']}." for r in rows if r.get("labels")],
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["resolution"]), f"{r['g_params'] / 1e6:.2f}",
                 "-" if r.get("gflops_per_img") is None else f"{r['gflops_per_img']:.1f}"]
        by_batch = {t["batch"]: t for t in r["throughput"]}
        for b in s["batches"]:
            t = by_batch[b]
            mem = "-" if t["added_memory_mb"] is None else f"{t['added_memory_mb']:.0f}"
            cells += [f"{t['img_per_s']:.3g}", f"{t['ms_per_call']:.0f}", mem]
        if paper:
            cells.append("-" if r.get("paper_img_per_s") is None else f"{r['paper_img_per_s']:.2f}")
        if train:
            tr = r.get("train") or {}
            cells += [f"{tr.get('img_per_s', 0):.3g}", f"{tr.get('step_ms', 0):.0f}", str(tr.get("batch", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from natgan.bench import BenchSettings, benchmark
    from natgan.model_choice import parse_int_list

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--batch", default="1")
    p.add_argument("--warmup", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--precision", default="tf32", choices=("fp32", "tf32", "bf16"))
    p.add_argument("--compile", default=None, help="torch.compile mode (default, reduce-overhead, ...)")
    p.add_argument("--attn-backend", default=None)
    p.add_argument("--train", action="store_true")
    p.add_argument("--train-batch", type=int)
    p.add_argument("--train-rounds", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--resolution", type=int)
    p.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                   help="model override, e.g. model.num_classes=10 (class-conditional: uniform random labels)")
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="write JSON here and Markdown next to it (.md)")
    args = p.parse_args(argv)

    settings = BenchSettings(batches=tuple(parse_int_list(args.batch, "--batch")), warmup=args.warmup,
                             rounds=args.rounds, precision=args.precision, compile=args.compile,
                             attn_backend=args.attn_backend, train=args.train, train_batch=args.train_batch,
                             train_rounds=args.train_rounds, device=args.device, peak_tflops=args.peak_tflops,
                             threads=args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    result = benchmark(names, settings, resolution=args.resolution, sets=args.set,
                       on_start=lambda n, i, k: print(f"[{i + 1}/{k}] {n} ...", file=sys.stderr, flush=True))
    table = markdown(result)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
