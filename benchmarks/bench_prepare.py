"""Benchmark `nat-gan prepare` against the official LMDB builder, and the training reader.

    .venv/bin/python benchmarks/bench_prepare.py --rosinality /tmp/rosinality/prepare_data.py

What it measures (all on this machine's CPU cores):

1. prepare: images/s of ``natgan.data.prepare_dataset`` (folder -> LMDB at ``--size``), and of
   rosinality's ``prepare_data.py`` (the builder StyleSwin uses; pass its path, it is not part of
   nat-gan) on the same images with the same worker count, plus its default ``--n_worker 8``. Every
   build runs in a fresh interpreter and only the building is timed (imports excluded for both); the
   tools alternate ``--repeat`` times and the best run of each is kept, because a shared machine's
   background load moves wall-clock numbers a lot. CPU-ms/img (user+system time of the process tree)
   is the load-independent measure of work. The two outputs are compared record by record.
2. reader: images/s of ``TrainingDataset`` (LMDB read + JPEG decode + random flip + ImageNet
   normalisation) in one process, and through a DataLoader with ``--loader-workers`` workers.

Images: ``--count`` procedurally made photographs: random square crops of the two photographs
scikit-learn ships (china.jpg, flower.jpg), random flip, colour jitter, Lanczos upscale and mild
Gaussian grain so file sizes match real photos. ``--format png`` (default): 1024x1024 PNG, FFHQ's
size and format (~1.6 MB each); ``jpeg``: 1024x1024 JPEG q95; ``webp``: LSUN-like webp, shorter side
256, aspect up to 1.6:1. They are cached in ``--images-dir``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_seconds() -> float:
    """User+system CPU of this process and its reaped children (the pool workers): load-independent work."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_images(root: Path, count: int, fmt: str) -> Path:
    """Photo-like images (see module docstring); reused when already there."""
    size = 256 if fmt in ("webp", "png256") else 1024
    folder = root / f"{fmt}{size}" / "images"  # one subfolder: rosinality's ImageFolder needs a class dir
    ext = {"png": ".png", "png256": ".png", "jpeg": ".jpg", "webp": ".webp"}[fmt]
    existing = sorted(folder.glob(f"*{ext}")) if folder.is_dir() else []
    if len(existing) >= count:
        return folder.parent
    folder.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("sklearn")
    base = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images"
    photos = [Image.open(base / n).convert("RGB") for n in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    print(f"making {count} {size}x{size} {fmt} images in {folder} ...", file=sys.stderr)
    for i in range(len(existing), count):
        photo = photos[i % 2]
        side = int(rng.integers(160, min(photo.size)))
        x, y = int(rng.integers(0, photo.width - side)), int(rng.integers(0, photo.height - side))
        width = size if fmt != "webp" else int(rng.integers(size, int(size * 1.6)))  # LSUN: short side 256
        img = photo.crop((x, y, x + side, y + side)).resize((width, size), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img).astype(np.float32) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)
        arr += rng.normal(0, 2.5, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if fmt in ("png", "png256"):
            img.save(folder / f"{i:05d}.png")
        elif fmt == "webp":
            img.save(folder / f"{i:05d}.webp", quality=80)
        else:
            img.save(folder / f"{i:05d}.jpg", quality=95)
    return folder.parent


def bench_natgan(src: Path, out: Path, size: int, workers: int) -> dict:
    from natgan.data import prepare_dataset

    shutil.rmtree(out, ignore_errors=True)
    t, cpu = time.perf_counter(), cpu_seconds()
    result = prepare_dataset(src, out, sizes=size, workers=workers, progress=False)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
    return {"tool": f"nat-gan prepare (--workers {workers})", "images": result["count"], "seconds": wall,
            "images_per_s": result["count"] / wall, "cpu_ms_per_image": 1e3 * cpu / result["count"]}


def bench_rosinality(script: Path, src: Path, out: Path, size: int, workers: int) -> dict:
    """Their `prepare()` on their ImageFolder, timed alone (imports done before the clock starts)."""
    import lmdb
    import tqdm  # noqa: F401
    from torchvision import datasets

    spec = importlib.util.spec_from_file_location("rosinality_prepare_data", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its pool pickles resize_worker by module name
    spec.loader.exec_module(module)
    shutil.rmtree(out, ignore_errors=True)
    devnull = open(os.devnull, "w")
    stderr, sys.stderr = sys.stderr, devnull  # their tqdm bar
    try:
        t, cpu = time.perf_counter(), cpu_seconds()
        imgset = datasets.ImageFolder(str(src))
        with lmdb.open(str(out), map_size=1024 ** 4, readahead=False) as env:
            module.prepare(env, imgset, workers, sizes=(size,), resample=Image.LANCZOS)
        wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
    finally:
        sys.stderr = stderr
        devnull.close()
    return {"tool": f"rosinality prepare_data.py (--n_worker {workers})", "images": len(imgset), "seconds": wall,
            "images_per_s": len(imgset) / wall, "cpu_ms_per_image": 1e3 * cpu / len(imgset)}


def compare_records(ours: Path, theirs: Path, size: int) -> dict:
    import lmdb

    def records(path):
        env = lmdb.open(str(path), readonly=True, lock=False)
        with env.begin() as txn:
            n = int(txn.get(b"length"))
            recs = [txn.get(f"{size}-{i:05d}".encode()) for i in range(n)]
        env.close()
        return recs

    a, b = records(ours), records(theirs)
    identical = sum(x == y for x, y in zip(a, b))
    return {"records": len(a), "byte_identical": identical, "same_length": len(a) == len(b)}


def stage_profile(src: Path, size: int, count: int = 40) -> dict:
    """Single-process ms per image for each stage of the per-image work, to show where the time goes:
    Pillow's decode (what the official builder uses) vs ours (libspng for PNG), resize, JPEG encode."""
    from natgan.data import imaging

    files = sorted(p for p in src.rglob("*") if p.is_file())[:count]
    datas = [p.read_bytes() for p in files]

    def pillow_decode(data: bytes):
        img = Image.open(io.BytesIO(data))
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")

    def timed(fn, items):
        fn(items[0])
        t = time.perf_counter()
        out = [fn(x) for x in items]
        return out, 1e3 * (time.perf_counter() - t) / len(items)

    _, pil_ms = timed(pillow_decode, datas)
    imgs, ours_ms = timed(imaging.decode_rgb, datas)
    resized, resize_ms = timed(lambda im: imaging.resize_square(im, size, Image.Resampling.LANCZOS), imgs)
    _, encode_ms = timed(lambda im: imaging.encode(im, "jpeg"), resized)
    return {"images": len(datas), "decode_pillow_ms": pil_ms, "decode_natgan_ms": ours_ms,
            "resize_ms": resize_ms, "encode_ms": encode_ms}


def bench_reader(lmdb_path: Path, size: int, seconds: float, loader_workers: int, batch: int) -> list[dict]:
    import torch
    from torch.utils.data import DataLoader

    from natgan.data import TrainingDataset

    torch.set_num_threads(1)
    ds = TrainingDataset(lmdb_path, size, normalization="imagenet", flip=True)
    rows = []
    n, t, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t < seconds:
        ds[n % len(ds)]
        n += 1
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    rows.append({"reader": "TrainingDataset, 1 process", "images_per_s": n / wall, "cpu_ms_per_image": 1e3 * cpu / n})
    if loader_workers > 0:
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=loader_workers, drop_last=True,
                            persistent_workers=True)
        it = iter(loader)
        next(it)  # warm up the workers
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            try:
                n += next(it).shape[0]
            except StopIteration:
                it = iter(loader)
        wall = time.perf_counter() - t
        rows.append({"reader": f"DataLoader({loader_workers} workers, batch {batch})", "images_per_s": n / wall})
    return rows


def run_one(tool: str, workers: int, args: argparse.Namespace) -> dict:
    """One timed build in a fresh interpreter: no threads, imports or pools left over from other runs
    (a leftover thread, e.g. tqdm's monitor, would change multiprocessing's start method), and all of
    its worker processes are its own children, so their CPU time is counted."""
    cmd = [sys.executable, __file__, "--one", tool, "--workers", str(workers), "--size", str(args.size),
           "--count", str(args.count), "--format", args.format, "--images-dir", str(args.images_dir)]
    if args.rosinality:
        cmd += ["--rosinality", str(args.rosinality)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tool} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rosinality", type=Path, help="path to rosinality's prepare_data.py (fetched outside the repo)")
    ap.add_argument("--images-dir", type=Path, default=Path("/tmp/natgan-bench"))
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--format", choices=("png", "png256", "jpeg", "webp"), default="png",
                    help="png/jpeg: 1024x1024 (FFHQ-like); png256: 256x256 PNG (the FFHQ-256 folder StyleNAT "
                         "trains from); webp: shorter side 256, up to 1.6:1 (LSUN-like)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--reader-seconds", type=float, default=10.0)
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per tool; the best is reported")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", choices=("natgan", "rosinality"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    src = make_images(args.images_dir, args.count, args.format)
    work = args.images_dir / "out"
    work.mkdir(parents=True, exist_ok=True)
    if args.one:  # a single timed build, in a fresh process (see run_one)
        out = work / f"{args.one}-{args.workers}.lmdb"
        if args.one == "natgan":
            row = bench_natgan(src, out, args.size, args.workers)
        else:
            row = bench_rosinality(args.rosinality, src, out, args.size, args.workers)
        print(json.dumps(row))
        return
    report: dict = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "images": args.count,
                    "image_format": {"webp": "webp 256xW (LSUN-like)", "png256": "png 256x256"}.get(
                        args.format, f"{args.format} 1024x1024"),
                    "size": args.size, "prepare": []}

    ours_out, theirs_out = work / f"natgan-{args.workers}.lmdb", work / f"rosinality-{args.workers}.lmdb"
    runs = [("natgan", args.workers)]
    if args.rosinality:
        runs += [("rosinality", args.workers)] + ([("rosinality", 8)] if args.workers != 8 else [])
    trials: list[list[dict]] = [[] for _ in runs]
    for _ in range(args.repeat):  # alternate the tools so background load hits them alike; keep each best
        for k, (tool, workers) in enumerate(runs):
            trials[k].append(run_one(tool, workers, args))
    report["prepare"] = [max(t, key=lambda r: r["images_per_s"]) for t in trials]
    if args.rosinality:
        report["records_vs_rosinality"] = compare_records(ours_out, theirs_out, args.size)
        base = report["prepare"][1]
        report["speedup_vs_rosinality_same_workers"] = report["prepare"][0]["images_per_s"] / base["images_per_s"]
        report["cpu_ratio_rosinality_over_natgan"] = base["cpu_ms_per_image"] / report["prepare"][0]["cpu_ms_per_image"]
    report["stages"] = stage_profile(src, args.size)
    report["reader"] = bench_reader(ours_out, args.size, args.reader_seconds, args.loader_workers, args.batch)

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"CPU: {report['cpu']} ({report['cores']} cores); {args.count} {report['image_format']} images -> "
          f"{args.size}x{args.size} JPEG q100, Lanczos")
    for row in report["prepare"]:
        print(f"  {row['tool']:<42} {row['images_per_s']:8.1f} img/s  ({row['seconds']:.1f} s, "
              f"{row['cpu_ms_per_image']:.1f} CPU-ms/img)")
    if "speedup_vs_rosinality_same_workers" in report:
        print(f"  speed-up at equal workers: {report['speedup_vs_rosinality_same_workers']:.2f}x (CPU per image: "
              f"theirs/ours {report['cpu_ratio_rosinality_over_natgan']:.2f}); records "
              f"byte-identical: {report['records_vs_rosinality']['byte_identical']}/"
              f"{report['records_vs_rosinality']['records']}")
    st = report["stages"]
    print(f"  per image, one process: decode {st['decode_pillow_ms']:.1f} ms (Pillow) / "
          f"{st['decode_natgan_ms']:.1f} ms (nat-gan), resize {st['resize_ms']:.1f} ms, "
          f"JPEG encode {st['encode_ms']:.2f} ms")
    for row in report["reader"]:
        cpu = f"  ({row['cpu_ms_per_image']:.2f} CPU-ms/img)" if "cpu_ms_per_image" in row else ""
        print(f"  {row['reader']:<42} {row['images_per_s']:8.1f} img/s{cpu}")


if __name__ == "__main__":
    main()
