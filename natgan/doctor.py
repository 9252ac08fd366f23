"""`nat-gan doctor`: what works on this machine, in seconds, with the fix for what does not.

A researcher on a fresh cluster node wants to know, before a long run is queued, whether nat-gan's
fast paths are usable there: which neighborhood-attention backends run (each one is actually executed
on a small problem and compared with the torch backend, backward included where it has one), whether
flex compiles on the GPU, whether the metric and projection networks' weights (Inception, VGG16, LPIPS)
are here or can be downloaded, whether the machine is busier than it has cores, and whether the cache
and run directories can be written. Each check is a :class:`Check`; ``required`` marks the ones whose
failure breaks a setup that needs them (the CLI then exits 1), the rest are information or warnings.

The checks run in-process and catch every exception, so one broken component (a CUDA driver, a
half-installed package) is reported as a failed row instead of stopping the report.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from natgan.errors import NatGanError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

# distribution name -> import name, in the order the version table prints them
PACKAGES = {"torch": "torch", "triton": "triton", "natten": "natten", "clean-fid": "cleanfid",
            "pyspng": "pyspng", "lmdb": "lmdb", "torchvision": "torchvision", "typer": "typer", "rich": "rich"}
REQUIRED_PACKAGES = ("torch", "lmdb", "typer", "rich")   # nat-gan cannot prepare or train without these
FID_PACKAGES = ("clean-fid", "torchvision")
FID_MODES = ("legacy_pytorch", "clean", "legacy_tensorflow")
NA_TOLERANCE = 2e-3   # max |backend - torch| relative to the output scale, fp32


@dataclass
class Check:
    """One row of the report: ``status`` is ok / warn / fail / skip; ``fix`` says what to do about it."""

    group: str
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False
    seconds: float = 0.0

    @property
    def blocking(self) -> bool:
        return self.required and self.status == FAIL


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check_versions() -> list[Check]:
    """Python, torch/CUDA and each package nat-gan uses; a missing required package is a failure."""
    rows = [Check("versions", "python", OK, f"{platform.python_version()} ({platform.machine()})")]
    cuda = torch.version.cuda or "none (CPU build)"
    rows.append(Check("versions", "torch", OK, f"{torch.__version__}, CUDA {cuda}"))
    for dist, module in PACKAGES.items():
        if dist == "torch":
            continue
        version = _version(dist)
        found = version is not None and importlib.util.find_spec(module) is not None
        if found:
            rows.append(Check("versions", dist, OK, version))
            continue
        required = dist in REQUIRED_PACKAGES
        why = {"natten": "optional: fused NA without positional bias",
               "pyspng": "optional: faster PNG decoding (Pillow is used instead)",
               "triton": "needed for the compiled flex attention on GPU"}.get(dist, "needed for FID"
                                                                                 if dist in FID_PACKAGES else "")
        rows.append(Check("versions", dist, FAIL if required else WARN, f"not installed{'; ' + why if why else ''}",
                          fix=f"pip install {dist}" + (" --no-build-isolation" if dist == "natten" else ""),
                          required=required))
    return rows


def check_devices() -> list[Check]:
    from natgan.devices import usable_cores

    rows = [Check("devices", "cpu", OK, f"{os.cpu_count()} cores, {usable_cores()} usable by this process, "
                                        f"torch uses {torch.get_num_threads()} threads"), check_load()]
    if not torch.cuda.is_available():
        rows.append(Check("devices", "cuda", SKIP, "no CUDA device visible"))
        return rows
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        rows.append(Check("devices", f"cuda:{i}", OK, f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
                                                      f"compute capability {props.major}.{props.minor}"))
    return rows


def check_load(load: float | None = None, cores: int | None = None) -> Check:
    """Warn when other work keeps the machine busier than it has cores: every CPU thread then waits for
    the scheduler, and nat-gan looks hung (the default thread count already avoids the busy cores)."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return Check("devices", "load", SKIP, "no load average on this system")
    if load <= cores:
        return Check("devices", "load", OK, f"load average {load:.1f} on {cores} cores")
    return Check("devices", "load", WARN, f"load average {load:.1f} exceeds the {cores} cores: other jobs keep "
                                          "the CPUs busy, so CPU work here runs slower",
                 fix="pass --threads 1 (or set NATGAN_THREADS=1) for steady speed beside other jobs, or run "
                     "when the machine is quieter; a GPU run is barely affected")


def _na_problem(device: torch.device, *, size: int = 16, kernel: int = 5, dilation: int = 2, heads: int = 2,
                dim: int = 16, rpb: bool = True):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, size, size, heads, dim, generator=gen) for _ in range(3))
    bias = 0.5 * torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen) if rpb else None
    tensors = [t.to(device) for t in (q, k, v)] + ([bias.to(device)] if rpb else [])
    return tensors, kernel, dilation


def _na_outputs(tensors, kernel, dilation, backend: str, backward: bool) -> list[torch.Tensor]:
    from natgan.ops import neighborhood_attention

    leaves = [t.detach().clone().requires_grad_(backward) for t in tensors]
    rpb = leaves[3] if len(leaves) > 3 else None
    with torch.set_grad_enabled(backward):
        out = neighborhood_attention(*leaves[:3], kernel, dilation, rpb=rpb, backend=backend)
        if not backward:
            return [out.detach().float().cpu()]
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
    return [t.detach().float().cpu() for t in (out, *grads)]


def na_backend_check(backend: str, device: torch.device) -> Check:
    """Run ``backend`` on a small dilated problem and compare with the torch backend (grads too where possible)."""
    from natgan.ops import available_backends

    name = f"{backend} on {device}"
    if backend not in available_backends():
        fix = {"natten": "pip install --no-build-isolation natten (optional)",
               "flex": "upgrade torch to >= 2.5"}.get(backend, "")
        return Check("attention", name, SKIP, "not installed", fix=fix)
    rpb = backend != "natten"              # natten >= 0.20 has no relative positional bias
    backward = not (device.type == "cpu" and backend in ("natten", "flex"))  # forward-only there
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flex's "called without torch.compile" notice on CPU
            tensors, kernel, dilation = _na_problem(device, rpb=rpb)
            got = _na_outputs(tensors, kernel, dilation, backend, backward)
        ref = _na_outputs([t.cpu().double() for t in tensors], kernel, dilation, "torch", backward)
        errors = [((a.double() - b).abs().max() / max(1.0, b.abs().max().item())).item() for a, b in zip(got, ref)]
    except Exception as exc:  # noqa: BLE001 - any failure of a backend is a row, not a crash
        required = backend == "torch" or (backend == "flex" and device.type == "cuda")
        return Check("attention", name, FAIL, _first_line(exc), required=required,
                     fix=_backend_fix(backend, device), seconds=time.perf_counter() - start)
    worst = max(errors)
    what = ("forward + backward" if backward else "forward only") + (", RPB" if rpb else ", no RPB")
    status = OK if worst <= NA_TOLERANCE else FAIL
    return Check("attention", name, status, f"{what}; max error vs float64 torch {worst:.1e}",
                 fix="" if status == OK else "report this: the backend disagrees with the reference op",
                 required=backend == "torch" or (backend == "flex" and device.type == "cuda"),
                 seconds=time.perf_counter() - start)


def _backend_fix(backend: str, device: torch.device) -> str:
    if backend == "flex" and device.type == "cuda":
        return ("flex did not compile: install a torch >= 2.6 with its matching triton (python -m pip show "
                "triton), or set NATGAN_NA_BACKEND=torch (slower)")
    if backend == "natten":
        return "reinstall natten for this torch: pip install --no-build-isolation natten (optional)"
    return "reinstall torch"


def check_attention(devices: list[torch.device]) -> list[Check]:
    from natgan.ops.dispatch import BACKENDS

    return [na_backend_check(backend, device) for device in devices for backend in BACKENDS]


def check_flex_compile(device: torch.device) -> Check:
    """Whether the automatic backend choice would pick the compiled flex kernels on ``device``."""
    from natgan.ops.na_flex import flex_available, flex_compilable

    if device.type != "cuda":
        return Check("attention", f"flex compiles on {device}", SKIP, "flex compiles on CUDA only; CPU uses torch")
    if not flex_available():
        return Check("attention", f"flex compiles on {device}", FAIL, "this torch has no flex_attention",
                     fix="upgrade torch to >= 2.6", required=True)
    if not flex_compilable(device):
        return Check("attention", f"flex compiles on {device}", FAIL, "triton is missing",
                     fix="install the triton that matches this torch", required=True)
    return Check("attention", f"flex compiles on {device}", OK, "triton present; see the flex row for the run")


def weights_file_problem(path: Path) -> str | None:
    """Why a weights file cannot load, found without loading it: a torch zip archive cut short (no end of
    central directory: an interrupted download) or bytes that are neither a zip nor a pickle. None if it
    looks whole (a legacy pickle cannot be checked without reading it all)."""
    import zipfile

    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == b"PK\x03\x04":
            return None if zipfile.is_zipfile(path) else "truncated (the zip archive has no end; an interrupted " \
                                                              "download?)"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if len(head) < 2 or head[0] != 0x80:
        return "not a torch weights file (neither a zip archive nor a pickle)"
    return None


def check_inception(downloads: tuple[bool, str] | None = None, weights_dir: str | Path | None = None) -> list[Check]:
    """Where each FID mode's weights are; where downloads are impossible a missing file is a failure."""
    try:
        from natgan.metrics.weights import find_weights, weights_for_mode
    except Exception as exc:  # noqa: BLE001 - clean-fid missing or broken
        return [Check("fid", "clean-fid", FAIL, _first_line(exc), fix="pip install clean-fid torchvision")]
    possible, why = downloads or download_status()
    offline = not possible
    rows = []
    for mode in FID_MODES:
        spec = weights_for_mode(mode)
        try:
            path = find_weights(mode, weights_dir=weights_dir)
        except Exception as exc:  # noqa: BLE001 - e.g. NATGAN_INCEPTION points at a missing file
            rows.append(Check("fid", f"Inception for {mode}", FAIL, _first_line(exc), required=offline,
                              fix=f"put {spec.filename} there, or unset NATGAN_INCEPTION"))
            continue
        problem = weights_file_problem(path) if path is not None else None
        if problem is not None:
            rows.append(Check("fid", f"Inception for {mode}", FAIL, f"{path}: {problem}", required=True,
                              fix=f"delete it and download {spec.url} again"))
            continue
        if path is not None:
            rows.append(Check("fid", f"Inception for {mode}", OK, str(path)))
            continue
        detail = f"{spec.filename} not found" + (f" and no download: {why}" if offline
                                                 else "; downloaded on first use")
        rows.append(Check("fid", f"Inception for {mode}", FAIL if offline else WARN, detail, required=offline,
                          fix=f"download {spec.url} to {spec.cache_location()} "
                              f"(or set NATGAN_INCEPTION to its folder)"))
    return rows


DOWNLOAD_PROBE_S = 3.0


def download_status() -> tuple[bool, str]:
    """Whether a missing weights file can be downloaded here, and why not: ``NATGAN_OFFLINE``, or none of
    the download hosts answers a TCP connection within :data:`DOWNLOAD_PROBE_S` (nothing is fetched)."""
    from urllib.parse import urlsplit

    from natgan.metrics.weights import WEIGHTS, _offline

    if _offline():
        return False, "NATGAN_OFFLINE is set"
    return probe_hosts(sorted({urlsplit(spec.url).hostname for spec in WEIGHTS.values()} - {None}))


def probe_hosts(hosts: list[str]) -> tuple[bool, str]:
    """True at the first host that accepts a TCP connection on port 443; else False with each failure."""
    import socket

    failures = []
    for host in hosts:
        try:
            socket.create_connection((host, 443), timeout=DOWNLOAD_PROBE_S).close()
            return True, f"{host} is reachable"
        except OSError as exc:
            failures.append(f"{host}: {exc.strerror or _first_line(exc)}")
    return False, "no network (" + "; ".join(failures) + ")"


def download_check(downloads: tuple[bool, str] | None = None) -> Check:
    """Whether missing weights files can be fetched here (:func:`download_status`), as a row."""
    possible, why = downloads or download_status()
    if possible:
        return Check("weights", "downloads", OK, f"possible: {why}")
    return Check("weights", "downloads", WARN, f"impossible: {why}",
                 fix="put the weights files in the weights directory (nat-gan doctor --weights DIR lists them "
                     "with their URLs)")


def weights_table(weights_dir: str | Path | None = None) -> list[dict]:
    """``nat-gan doctor --weights DIR``: every weights file, what needs it, its URL and where it was found
    (``DIR``, ``$NATGAN_WEIGHTS``, the cache, the upstream tool's place) or None."""
    from natgan.metrics.weights import USES, WEIGHTS, find, inception_query

    rows = []
    for needs, names in USES:
        for name in names:
            spec = WEIGHTS[name]
            query = inception_query("clean" if name == "inception-torchscript" else "legacy_pytorch", None,
                                    weights_dir) if name.startswith("inception") else \
                dict(name=name, weights_dir=weights_dir)
            try:
                found, error = find(**query), None
            except Exception as exc:  # noqa: BLE001 - e.g. NATGAN_INCEPTION names a missing file
                found, error = None, _first_line(exc)
            rows.append({"needed by": needs, "file": spec.filename, "url": spec.url,
                         "found": str(found) if found else None, "error": error})
    return rows


def weight_file_status(name: str, path: Path | None, downloads: tuple[bool, str] = (True, "")) -> Check:
    """One weights file as the loaders will judge it: official (sha256 matches), unknown (refused), missing.

    A missing file that cannot be downloaded (``downloads`` = :func:`download_status`) is a failure: what
    needs it cannot run. It blocks for VGG16/LPIPS; the Inception files block through their FID-mode rows."""
    from natgan.metrics.weight_files import WEIGHTS
    from natgan.metrics.weight_trust import sha256_file
    from natgan.metrics.weights import needed_by

    spec = WEIGHTS[name]
    if path is None:
        fix = f"download {spec.url} into the weights directory (--weights DIR or NATGAN_WEIGHTS)"
        if downloads[0]:
            return Check("weights", spec.filename, SKIP, f"missing; downloaded on first use by {needed_by(name)}",
                         fix=fix)
        return Check("weights", spec.filename, FAIL, f"missing and no download ({downloads[1]}): "
                     f"{needed_by(name)} cannot run", fix=fix, required=not name.startswith("inception"))
    try:
        digest = sha256_file(path)
    except OSError as exc:
        return Check("weights", spec.filename, FAIL, f"{path}: {exc.strerror or _first_line(exc)}")
    if digest == spec.sha256:
        return Check("weights", spec.filename, OK, f"official (sha256 {digest[:16]}...) at {path}")
    return Check("weights", spec.filename, FAIL, f"unknown: {path} has sha256 {digest}, not the official "
                                                 f"{spec.sha256}; metrics refuse it",
                 fix=f"replace it with {spec.url}")


def check_weight_files(weights_dir: Path | None = None, downloads: tuple[bool, str] = (True, "")) -> list[Check]:
    """Digest status of every weights file nat-gan knows by name, where the metrics would find it."""
    try:
        from natgan.metrics.weight_files import WEIGHTS
        from natgan.metrics.weights import find
    except Exception as exc:  # noqa: BLE001 - clean-fid missing or broken
        return [Check("weights", "weights files", FAIL, _first_line(exc))]
    rows = []
    for name in WEIGHTS:
        env = os.environ.get("NATGAN_INCEPTION") if name.startswith("inception") else None
        try:
            path = find(name, weights_dir=weights_dir, explicit=(env, "NATGAN_INCEPTION") if env else None)
        except Exception as exc:  # noqa: BLE001 - e.g. NATGAN_WEIGHTS is not a directory
            rows.append(Check("weights", WEIGHTS[name].filename, FAIL, _first_line(exc)))
            continue
        rows.append(weight_file_status(name, path, downloads))
    return rows


def check_weight_locations(weights_dir: Path | None = None) -> list[Check]:
    """Flag the folders that may hold weights and that someone else can write (one row each)."""
    from natgan.metrics.weight_files import WEIGHTS
    from natgan.metrics.weight_trust import writable_by_others

    own = [Path(p) for p in (weights_dir, os.environ.get("NATGAN_WEIGHTS"), os.environ.get("NATGAN_INCEPTION")) if p]
    searched = {spec.cache_location().parent for spec in WEIGHTS.values()}
    searched |= {spec.tool_location().parent for spec in WEIGHTS.values()}
    rows = []
    for folder in sorted({*own, *searched}, key=str):
        folder = folder if folder.is_dir() else folder.parent
        if not folder.exists() or not writable_by_others(folder):
            continue
        if folder in searched and folder not in own:
            rows.append(Check("weights", f"location {folder}", WARN, f"{folder} is writable by others: nat-gan "
                              "never loads weights found there", fix="keep weights in --weights DIR / NATGAN_WEIGHTS"))
        else:
            rows.append(Check("weights", f"location {folder}", WARN, f"{folder} is writable by others: anyone may "
                              "swap the files (loaders still check digests)", fix=f"chmod go-w {folder}"))
    return rows


def writable_check(name: str, path: Path, env: str) -> Check:
    """Write + delete a file in ``path``, or, when it does not exist yet, in the nearest existing parent
    (nothing is left behind: the doctor creates no directories)."""
    target = path
    while not target.exists() and target.parent != target:
        target = target.parent
    try:
        if not target.is_dir():
            raise NotADirectoryError(f"{target} is not a directory")
        with tempfile.NamedTemporaryFile(dir=target, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("dirs", name, FAIL, f"{path}: {exc.strerror or _first_line(exc)}", required=True,
                     fix=f"make {target} writable or point {env} at a writable directory")
    where = "writable" if target == path else f"will be created; {target} is writable"
    return Check("dirs", name, OK, f"{path} ({where})")


def check_dirs(run_dir: Path | None = None) -> list[Check]:
    from natgan.metrics.cache import cache_dir

    try:
        rows = [writable_check("cache", cache_dir(), "NATGAN_CACHE_DIR")]
    except NatGanError as exc:
        rows = [Check("dirs", "cache", FAIL, str(exc), required=True,
                      fix="point NATGAN_CACHE_DIR at a writable directory")]
    if run_dir is not None:
        rows.append(writable_check("runs", run_dir, "--run-dir"))
    return rows


def _timed(fn: Callable[[], list[Check] | Check]) -> list[Check]:
    start = time.perf_counter()
    try:
        out = fn()
    except NatGanError as exc:  # a configuration the check cannot even start with (e.g. $NATGAN_CACHE_DIR)
        name = getattr(fn, "__name__", "check").removeprefix("check_").replace("_", " ")
        out = Check("config", name, FAIL, str(exc), required=True, fix="fix the setting the message names")
    rows = out if isinstance(out, list) else [out]
    for row in rows:
        row.seconds = row.seconds or time.perf_counter() - start
    return rows


def run_checks(*, device: str = "auto", run_dir: Path | None = Path("runs"),
               attention: bool = True, weights_dir: str | Path | None = None) -> list[Check]:
    """Every check, in report order. ``device``: ``auto`` checks CPU and every visible CUDA device."""
    from natgan.devices import resolve_device

    if device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if torch.cuda.is_available() else [])
    else:
        devices = [resolve_device(device)]
    rows = _timed(check_versions) + _timed(check_devices)
    if attention:
        for dev in devices:
            if dev.type == "cuda":
                rows += _timed(lambda dev=dev: check_flex_compile(dev))
        rows += check_attention(devices)
    downloads = download_status()
    rows += _timed(lambda: check_inception(downloads, weights_dir)) + _timed(lambda: [download_check(downloads)])
    rows += _timed(lambda: check_weight_files(weights_dir, downloads))
    rows += _timed(lambda: check_weight_locations(weights_dir))
    rows += _timed(lambda: check_dirs(run_dir))
    return rows


def summary(rows: list[Check]) -> dict:
    """JSON-ready report: every row plus the verdict the exit code follows."""
    blocking = [r for r in rows if r.blocking]
    return {"ok": not blocking, "blocking": [f"{r.group}/{r.name}" for r in blocking],
            "counts": {s: sum(r.status == s for r in rows) for s in (OK, WARN, FAIL, SKIP)},
            "checks": [asdict(r) for r in rows]}
