"""Wall time of the metric set `fid,kid,pr,dc,is` vs FID alone (and vs the five metrics run one by one).

The five metrics read two feature sets (Inception pool3 + its logits; VGG16 fc2), so one evaluation
generates each image once and runs each network once per image, on both sides; run one by one they
would embed everything again per metric. Reference features are recomputed in every run (no cache), so
the comparison is compute for compute. Networks have random weights of the real architectures unless
real weights are given (timing only: the values are meaningless then).

    # CPU (docs/benchmarks.md): 64px narrow StyleGAN2, random-weight Inception and VGG16
    python benchmarks/bench_metrics.py --device cpu --num 128 --resolution 64 \
        --model-config '{"channel_max": 64, "channel_multiplier": 1}' --json
    # class-conditional: G gets the labels `nat-gan fid` gives it (the synthetic reference is labelled)
    python benchmarks/bench_metrics.py --device cpu --num 128 --model-config '{"num_classes": 10}' --json
    # GPU acceptance: importable
    from bench_metrics import measure; measure("cuda", 50_000, 256)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fid import _cpu_name, random_pytorch_fid_weights, synthetic_reference  # noqa: E402

from natgan.metrics import build_inception, evaluate_generator  # noqa: E402
from natgan.metrics.vgg import build_vgg16  # noqa: E402
from natgan.sampling import auto_batch_size, resolve_device  # noqa: E402

ALL = ["fid", "kid", "pr", "dc", "is"]


def _generator(model: str, resolution: int, device: torch.device, config: dict | None = None):
    from natgan.models import create

    torch.manual_seed(0)
    return create(model, resolution=resolution, **(config or {})).generator.to(device).eval()


def measure(device: str = "auto", n: int = 10_000, res: int = 64, *, model: str = "stylegan2",
            mode: str = "legacy_pytorch", separately: bool = True, batch: int | None = None, workers: int = 0,
            weights: str | Path | None = None, workdir: str | Path | None = None,
            model_config: dict | None = None, runs: tuple[str, ...] = ("fid", "all")) -> dict:
    """Seconds for ``fid`` alone, for ``fid,kid,pr,dc,is`` together and (``separately``) one metric at a time.

    ``weights``: a weights directory with the real Inception/VGG16 files; None = random weights of the
    same architectures (same compute). ``model_config``: overrides of the generator's config (a narrow
    generator keeps generation, which every run pays alike, from hiding the metric cost on a CPU).
    ``runs``: which of the two timed runs to do (``fid`` alone, ``all`` five), e.g. to repeat one of them.
    Returns plain data (machine, sizes, seconds, ratios).
    """
    dev = resolve_device(device)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench_metrics_"))
    try:
        G = _generator(model, res, dev, model_config)
        inception = None if weights else random_pytorch_fid_weights(tmp / "pt_inception-2015-12-05-6726825d.pth")
        extractors = {"inception": build_inception(mode, device=dev, inception=inception, weights_dir=weights),
                      "vgg16": build_vgg16(device=dev, weights_dir=weights, random_weights=weights is None)}
        k = int(getattr(G, "num_classes", 0) or 0)  # conditional: a labelled reference, labels as `nat-gan fid`
        ref = synthetic_reference(tmp / "ref", n, res, k)
        kw = dict(num=n, mode=mode, batch_size=batch or auto_batch_size(dev, res), device=dev, extractors=extractors,
                  progress=False, workers=workers, use_cache=False)

        def run(metrics: list[str]) -> tuple[float, dict]:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            result = evaluate_generator(G, str(ref), metrics=metrics, **kw)
            return time.perf_counter() - start, result

        out = {
            "machine": {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "python": platform.python_version()},
            "generator": f"{model} random init {json.dumps(model_config or {})}", "resolution": res,
            "num": n, "num_ref": n, "mode": mode,
            "weights": "real" if weights else "random (timing only)", "batch": kw["batch_size"],
        }
        if k:
            out["labels"] = (f"class-conditional ({k} classes): image i gets the label of a synthetic reference "
                             f"image drawn with seed i (balanced classes), as nat-gan fid")
        if "fid" in runs:
            fid_s, fid_result = run(["fid"])
            out.update(fid_only_s=round(fid_s, 2), fid_only_timings=fid_result["timings"])
        if "all" in runs:
            all_s, result = run(ALL)
            out.update(all_five_s=round(all_s, 2), all_five_timings=result["timings"])
            if "fid" in runs:
                out["ratio_all_vs_fid"] = round(all_s / fid_s, 3)
        one_by_one = {m: run([m])[0] for m in ALL} if separately else None
        if one_by_one and "all" in runs:
            out["one_by_one_s"] = {m: round(s, 2) for m, s in one_by_one.items()}
            out["one_by_one_sum_s"] = round(sum(one_by_one.values()), 2)
            out["ratio_all_vs_sum"] = round(all_s / sum(one_by_one.values()), 3)
        return out
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--num", type=int, default=10_000, help="generated = reference images (default 10000)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--model", default="stylegan2", help="registered model, random init")
    p.add_argument("--model-config", type=json.loads, default=None,
                   help='generator config overrides as JSON, e.g. \'{"channel_max": 64}\'')
    p.add_argument("--mode", default="legacy_pytorch", choices=["clean", "legacy_pytorch", "legacy_tensorflow"])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--weights", type=Path, help="weights directory (default: random weights, timing only)")
    p.add_argument("--no-separately", action="store_true", help="skip the one-metric-at-a-time runs")
    p.add_argument("--runs", default="fid,all", help="which timed runs: fid (alone), all (five together)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = measure(args.device, args.num, args.resolution, model=args.model, mode=args.mode, batch=args.batch,
                workers=args.workers, weights=args.weights, separately=not args.no_separately,
                model_config=args.model_config, runs=tuple(args.runs.split(",")))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{r['num']} images at {r['resolution']}px on {r['machine']['device']}: "
              f"fid alone {r.get('fid_only_s')} s, "
              f"fid,kid,pr,dc,is {r.get('all_five_s')} s ({r.get('ratio_all_vs_fid')}x)"
              + (f", one by one {r['one_by_one_sum_s']} s" if "one_by_one_sum_s" in r else ""))
    return r


if __name__ == "__main__":
    main()
