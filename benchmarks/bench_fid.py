"""FID wall-clock: `nat-gan fid` (in-memory, overlapped, cached reference) vs the official StyleNAT path.

The official evaluation (StyleNAT ``src/evaluate.py``) generates at batch 4, writes every image as a PNG
with ``torchvision.utils.save_image``, then scores the PNG folder against the reference folder with
pytorch-fid (reference features recomputed every time, Inception batch = 4). Here that path is run
with clean-fid's ``compute_fid(gen_folder, ref_folder, mode=...)`` (legacy_pytorch = pytorch-fid to
~2e-6), with the *same* feature network object as ours, so only the pipelines differ.

Timed, on the same device and generator:
  ours (cold)     fid_for_generator: reference features computed and cached, generation overlapped
  ours (cached)   the same call again: reference statistics come from the cache
  official        generate + write PNGs (batch 4), then folder-vs-folder FID

Examples::

    # GPU, the real protocol (needs the pytorch-fid weights: --inception or $NATGAN_INCEPTION)
    python benchmarks/bench_fid.py --ckpt stylenat_ffhq256.pt --ref ffhq256_pngs/ --num 10000

    # CPU smoke scale (what the CPU numbers in docs/benchmarks.md use): random-init StyleNAT and
    # random-init Inception of the real architecture (timing only, FID values meaningless)
    python benchmarks/bench_fid.py --model stylenat --resolution 64 --num 64 --num-ref 64 --random-inception

A class-conditional generator (a conditional ``--ckpt``, or ``--set model.num_classes=10``) is scored as
``nat-gan fid`` scores it: image ``i`` gets the label of a reference image drawn with seed ``i``, and both paths
generate exactly those (z, label) pairs. The reference must then be labelled: the synthetic one gets a
dataset.json of balanced classes in a seeded random order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from natgan.metrics import build_inception, fid_for_generator
from natgan.models.normalization import to_unit
from natgan.sampling import auto_batch_size, latents_for_seeds, load_generator, resolve_device


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=Path, help="checkpoint to score (EMA weights)")
    src.add_argument("--model", default="stylenat", help="registered model, random init (default: stylenat)")
    p.add_argument("--resolution", type=int, default=None, help="with --model: output size (default: the model's)")
    p.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                   help="with --model: a model override, e.g. model.num_classes=10 (class-conditional)")
    p.add_argument("--num", type=int, default=10_000, help="generated images (default 10000; CPU: e.g. 64)")
    p.add_argument("--num-ref", type=int, default=None, help="synthetic reference images when --ref is not given "
                                                             "(default: --num)")
    p.add_argument("--ref", type=Path, help="reference image folder (default: a synthetic one, timing only)")
    p.add_argument("--mode", default="legacy_pytorch", choices=["clean", "legacy_pytorch", "legacy_tensorflow"])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=None, help="our batch (default: by device)")
    p.add_argument("--official-batch", type=int, default=4, help="official generation/Inception batch (default 4)")
    p.add_argument("--inception", type=Path, help="Inception weights file or directory")
    p.add_argument("--random-inception", action="store_true",
                   help="legacy_pytorch only: random-init FID-Inception of the real architecture (timing only)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="official loader workers")
    p.add_argument("--skip-official", action="store_true")
    p.add_argument("--workdir", type=Path, help="where PNGs and the cache go (default: a temp dir, removed)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p.parse_args(argv)


def random_pytorch_fid_weights(path: Path) -> Path:
    """A state dict with pytorch-fid's exact keys and shapes, random values (same compute as the real net)."""
    from cleanfid import inception_pytorch

    captured = {}
    original_loader, original_load = inception_pytorch.load_state_dict_from_url, torch.nn.Module.load_state_dict
    inception_pytorch.load_state_dict_from_url = lambda *a, **k: {}
    torch.nn.Module.load_state_dict = lambda self, sd, *a, **k: captured.setdefault("net", self)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inception_pytorch.fid_inception_v3()
    finally:
        inception_pytorch.load_state_dict_from_url, torch.nn.Module.load_state_dict = original_loader, original_load
    torch.save(captured["net"].state_dict(), path)
    # Not the official file, on purpose (timing only): named as a user would name it, so the digest check of
    # natgan.metrics.weight_trust admits this one file.
    from natgan.metrics.weight_trust import UNOFFICIAL_ENV

    named = [p for p in os.environ.get(UNOFFICIAL_ENV, "").split(os.pathsep) if p]
    os.environ[UNOFFICIAL_ENV] = os.pathsep.join([*named, str(path)])
    return path


def build_generator(args, device):
    if args.ckpt:
        loaded = load_generator(args.ckpt, device=device)
        return loaded.G, f"{args.ckpt} ({loaded.ckpt['model']['name']})"
    from natgan.model_choice import resolve_model

    G = resolve_model(args.model, sets=args.set, resolution=args.resolution).generator.to(device).eval()
    return G, f"{args.model} random init" + (f" ({', '.join(args.set)})" if args.set else "")


def synthetic_reference(folder: Path, n: int, resolution: int, num_classes: int = 0) -> Path:
    """Smooth random RGB PNGs: a stand-in reference with the real size and count (timing only); with
    ``num_classes``, a stylegan2-ada dataset.json of balanced classes in a seeded random order (every class
    present, as a conditional generator's metrics need a label of each class)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((resolution, resolution), Image.BICUBIC).save(folder / f"{i:06d}.png")
    if num_classes:
        labels = np.random.default_rng(1).permutation(np.arange(n) % num_classes)
        (folder / "dataset.json").write_text(json.dumps(
            {"labels": [[f"{i:06d}.png", int(c)] for i, c in enumerate(labels)]}))
    return folder


def label_source(G, ref: Path):
    """The labels ``nat-gan fid`` gives a conditional ``G``'s image i (a reference label drawn with seed i), as a
    function of the seeds; None for an unconditional ``G``."""
    from natgan.data import open_dataset
    from natgan.sampling.classes import dataset_labels, num_classes_of

    if not num_classes_of(G):
        return None
    src = open_dataset(ref, int(G.resolution))
    try:
        if src.labels is None:
            sys.exit(f"{ref}: the generator is class-conditional; the reference needs labels (dataset.json)")
        return dataset_labels(src.labels)
    finally:
        src.close()


def call_g(G, seeds: range, labels, device) -> torch.Tensor:
    """``G`` on the latents (and, when conditional, the labels) of ``seeds``."""
    z = latents_for_seeds(seeds, G.z_dim).to(device)
    return G(z) if labels is None else G(z, labels(seeds).to(device))


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def official_path(G, args, device, ref: Path, out: Path, network, labels=None) -> dict:
    """StyleNAT evaluate.py: batch-4 generation, save_image per PNG, then folder-vs-folder pytorch-fid.

    Image ``i`` uses seed ``i``'s latent (and label, ``labels``, for a conditional G), as ``nat-gan fid`` does,
    so both paths score the same images and their FIDs must agree (the official script draws fresh random
    latents instead).
    """
    from cleanfid import fid as cleanfid_fid
    from torchvision.utils import save_image

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    count = 0
    with torch.inference_mode():
        while count < args.num:
            b = min(args.official_batch, args.num - count)
            images = to_unit(call_g(G, range(count, count + b), labels, device), G.normalization)
            for img in images:
                save_image(img, out / f"{count:06d}.png", normalize=True, value_range=(0, 1))
                count += 1
    sync(device)
    t1 = time.perf_counter()
    value = cleanfid_fid.compute_fid(str(out), str(ref), mode=args.mode, custom_feat_extractor=network,
                                     batch_size=args.official_batch, num_workers=args.workers, device=device,
                                     verbose=False, use_dataparallel=False)
    t2 = time.perf_counter()
    return {"fid": float(value), "generate_and_write_s": t1 - t0, "score_s": t2 - t1, "total_s": t2 - t0}


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_fid_"))
    try:
        G, described = build_generator(args, device)
        result = compare(G, described, args, device, workdir)
        _report(result, args.json)
        return result
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def compare(G, described: str, args: argparse.Namespace, device: torch.device, workdir: Path,
            extractor=None, on_ours=None) -> dict:
    """Time ours (cold, cached) and the official path on ``G``; the cache lives in ``workdir``.

    ``extractor``: a :class:`~natgan.metrics.FeatureExtractor` to use instead of the mode's Inception.
    ``on_ours(dict)`` is called with our timings before the (slow) official path starts. G runs once at each
    batch size first, untimed: compiled kernels (flex) are built per batch size and would otherwise be
    charged to whichever path ran first.
    """
    os.environ["NATGAN_CACHE_DIR"] = str(workdir / "cache")
    inception = args.inception
    if args.random_inception and extractor is None:
        if args.mode != "legacy_pytorch":
            sys.exit("--random-inception exists for --mode legacy_pytorch only")
        inception = random_pytorch_fid_weights(workdir / "pt_inception-2015-12-05-6726825d.pth")
    extractor = extractor or build_inception(args.mode, device=device, inception=inception)
    ref = args.ref or synthetic_reference(workdir / "ref", args.num_ref or args.num, int(G.resolution),
                                          int(getattr(G, "num_classes", 0) or 0))
    labels = label_source(G, ref)
    batch = args.batch or auto_batch_size(device, int(G.resolution))
    common = dict(num=args.num, mode=args.mode, batch_size=batch, device=device, extractor=extractor,
                  progress=False, workers=args.workers)
    with torch.inference_mode():
        for b in sorted({batch, args.official_batch}):
            call_g(G, range(b), labels, device)
    sync(device)

    t = time.perf_counter()
    cold = fid_for_generator(G, str(ref), **common)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = fid_for_generator(G, str(ref), **common)
    warm_s = time.perf_counter() - t
    ours = {"batch": cold["batch_size"], "cold_s": cold_s, "cached_s": warm_s, "fid": cold["fid"],
            "reference_s": cold["timings"]["reference_s"],
            "generate_and_embed_s": warm["timings"]["generate_and_embed_s"],
            "images_per_s": warm["timings"]["images_per_s"]}
    if on_ours is not None:
        on_ours(ours)
    official = None if args.skip_official else official_path(G, args, device, ref, workdir / "official",
                                                              extractor.network, labels)
    result = {
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                    _cpu_name(), "torch": torch.__version__, "python": platform.python_version(),
                    "threads": torch.get_num_threads()},
        "generator": described, "resolution": int(G.resolution), "num": args.num, "num_ref": cold["num_ref"],
        **({"labels": cold["generated"]["labels"]} if labels is not None else {}),
        "mode": args.mode, "inception": extractor.describe() if not args.random_inception else
        "random-init (timing only)",
        "ours": ours,
        "official": official,
    }
    if official:
        result["speedup_cold"] = official["total_s"] / cold_s
        result["speedup_cached"] = official["total_s"] / warm_s
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _report(r: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['generator']} @ {r['resolution']}px, FID-{r['num']} vs {r['num_ref']} reference images, "
          f"{r['mode']} ({r['inception']} Inception), {r['machine']['device']}")
    if r.get("labels"):
        print(f"  labels        {r['labels']}")
    o = r["ours"]
    print(f"  ours, cold    {o['cold_s']:9.1f} s   (reference {o['reference_s']:.1f} s, batch {o['batch']})")
    print(f"  ours, cached  {o['cached_s']:9.1f} s   ({o['images_per_s']:.2f} generated img/s)")
    if r["official"]:
        f = r["official"]
        print(f"  official      {f['total_s']:9.1f} s   (generate + PNGs {f['generate_and_write_s']:.1f} s, "
              f"score {f['score_s']:.1f} s)")
        print(f"  speed-up      {r['speedup_cold']:.2f}x cold, {r['speedup_cached']:.2f}x cached")


if __name__ == "__main__":
    main()
