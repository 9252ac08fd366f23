"""Where tensors compute and at what precision: one device resolver and one precision scope.

``sample``, ``fid``, ``visualize``, ``bench`` and the trainer all name devices the same way (``auto``,
``cpu``, ``cuda``, ``cuda:N``, ``mps``) and get the same one-line errors for ones this machine lacks.
The precision scope sets torch's *global* TF32 / cuDNN flags for a block and puts them back after it,
so a benchmark or a training run inside a larger program (a notebook, a test session) leaves the
process as it found it. The CPU thread policy (how many intra-op threads, how many DataLoader workers)
lives here too: :func:`resolve_threads`, :func:`apply_cpu_threads`, :func:`loader_workers`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from natgan.errors import ConfigError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def resolve_device(name: str | torch.device | None = "auto", *, option: str = "--device",
                   local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; unusable devices are ConfigErrors naming ``option``.

    A CUDA device without an index becomes ``cuda:local_rank`` (one process per GPU under torchrun) or,
    without ``local_rank``, the current CUDA device.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"{option} '{name}': not a device (expected auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} '{name}': CUDA is not available on this machine (use cpu)")
        index = device.index if device.index is not None else (
            local_rank if local_rank is not None else torch.cuda.current_device())
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{option} '{name}': this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{option} '{name}': Apple MPS is not available on this machine")
        return device
    if device.type != "cpu":
        raise ConfigError(f"{option} '{name}': unsupported device type '{device.type}' (use cpu, cuda or mps)")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context forwards run under: bf16 autocast (weights stay fp32), otherwise nothing."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device
                      ) -> Iterator[Callable[[], contextlib.AbstractContextManager]]:
    """Set the global TF32 flags for the block, yield a factory of :func:`autocast`, restore the flags.

    fp32: TF32 off. tf32: TF32 on for matmuls and cuDNN (the official codes' setting; no effect on CPU).
    bf16: autocast to bfloat16 with TF32 on for what stays fp32. On CUDA ``cudnn.benchmark`` is on too,
    as in the official training scripts.
    """
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}': expected one of {', '.join(PRECISIONS)}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    tf32 = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield lambda: autocast(precision, device)
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


# ------------------------------------------------------------------------------------------ CPU threads
#
# torch's default intra-op thread count is the machine's physical core count, whatever share of the
# machine this process may use or is left by other jobs, and its OpenMP threads spin-wait between
# parallel regions. On a busy box every parallel region then waits for a thread the scheduler has
# parked while its siblings burn their time slices spinning: the demo training ran 5-20x slower than with
# one thread (docs/benchmarks.md, "CPU threads under load"). So every command (1) lets waiting OpenMP
# threads sleep, set before torch starts its thread pool, and (2) resolves its thread count here, once,
# before it computes.

THREADS_ENV = "NATGAN_THREADS"
MAX_THREADS = 1024
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE",   # GNU/LLVM OpenMP: waiting threads sleep instead of spinning
              "KMP_BLOCKTIME": "0"}           # Intel OpenMP (some torch builds): the same, in its own words


def set_openmp_wait_policy() -> bool:
    """Make idle OpenMP threads sleep (:data:`OPENMP_ENV`) unless the user set these variables; True when
    it took effect. OpenMP reads them once, when torch loads it, so this must run before ``import torch``
    (the CLI calls it first thing); afterwards it changes nothing and says so."""
    import sys

    if "torch" in sys.modules:
        return False
    for name, value in OPENMP_ENV.items():
        os.environ.setdefault(name, value)
    return True


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets, Slurm), bounded by a cgroup v2
    CPU quota (``docker --cpus``) where there is one. ``os.cpu_count()`` counts the whole machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_cpu_quota() -> int | None:
    """``cpu.max`` of this process's cgroup v2 (``"200000 100000"`` -> 2 CPUs), None when unlimited/absent."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return max(1, math.ceil(int(text[0]) / int(text[1])))
    except (OSError, ValueError, ZeroDivisionError):
        pass
    return None


def parse_threads(value: str | int, source: str) -> int:
    """A thread count from an option or the environment: a whole number from 1 to MAX_THREADS."""
    try:
        count = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{source} '{value}': not a whole number of threads") from None
    if not 1 <= count <= MAX_THREADS:
        raise ConfigError(f"{source} {count}: expected 1 to {MAX_THREADS} threads "
                          f"(this process may use {usable_cores()} cores)")
    return count


LOAD_SAMPLE_S = 0.2   # how long the default watches the CPUs before choosing (once per command)


def busy_cores(interval_s: float = LOAD_SAMPLE_S) -> float | None:
    """How many of this process's CPUs other work keeps busy right now: the non-idle share of each CPU in
    the affinity mask over ``interval_s`` (Linux ``/proc/stat``), summed; None where that cannot be read.

    Why a sample and not the load average: the 1-minute load average lags a minute behind (a job that just
    ended still counts, one that just started does not), while the choice is made once, at the start."""
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        first = _cpu_times(cpus)
        time.sleep(interval_s)
        second = _cpu_times(cpus)
    except (AttributeError, OSError, ValueError):
        return None
    busy = 0.0
    for cpu, (busy1, total1) in second.items():
        busy0, total0 = first.get(cpu, (busy1, total1))
        if total1 > total0:
            busy += (busy1 - busy0) / (total1 - total0)
    return busy if second else None


def _cpu_times(cpus: set[str]) -> dict[str, tuple[int, int]]:
    """``{cpuN: (busy jiffies, total jiffies)}`` for the named CPUs (idle and iowait are not busy)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in cpus:
            ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            out[fields[0]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def default_threads() -> tuple[int, str]:
    """The cores this process may use (:func:`usable_cores`), less those other work keeps busy now
    (:func:`busy_cores`), shared among the processes torchrun started on this machine, at least one:
    threads beyond the free cores only wait for each other."""
    cores = usable_cores()
    ranks = _local_world_size()
    share = f", shared by {ranks} local ranks" if ranks > 1 else ""
    busy = busy_cores() if cores > 1 and ranks == 1 else None  # ranks start together: their sample sees each other
    if busy is None or busy < 0.5:
        return max(1, cores // ranks), f"{cores} usable cores{share}"
    free = max(1, min(cores, int(cores - busy + 0.5)))
    return free, f"{cores} usable cores, {busy:.1f} busy with other work"


def _local_world_size() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_threads(threads: int | None = None, *, option: str = "--threads") -> tuple[int, str]:
    """The intra-op thread count and why: ``--threads``, else ``$NATGAN_THREADS``, else ``$OMP_NUM_THREADS``
    (the variable every OpenMP program honours; torchrun sets it to 1 per rank), else
    :func:`default_threads` (the free cores this process may use, never more)."""
    if threads is not None:
        return parse_threads(threads, option), option
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        env = os.environ.get(name, "").strip()
        if name == "OMP_NUM_THREADS":
            env = env.split(",")[0].strip()  # OpenMP's nested list "4,2": the outer level is torch's
        if env:
            return parse_threads(env, name), name
    return default_threads()


def apply_cpu_threads(threads: int | None = None, *, option: str = "--threads") -> int:
    """Set torch's intra-op threads by :func:`resolve_threads` (every CLI command calls this first)."""
    import torch

    count, _ = resolve_threads(threads, option=option)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def current_threads() -> int:
    """torch's intra-op thread count now (what :func:`apply_cpu_threads` set)."""
    import torch

    return torch.get_num_threads()


def loader_workers(requested: int, device: "torch.device | str" = "cpu", *, threads: int | None = None) -> int:
    """DataLoader worker processes that do not oversubscribe the cores this process may use.

    Each worker runs one torch thread (torch sets that in its workers) beside the main process. On a CPU
    device the main process computes with ``threads`` (default: torch's current count), so workers get
    what is left: ``workers + threads <= cores``; with an accelerator the main process mostly waits, so one
    core is kept for it. Fewer workers than requested only moves decoding into the main process.
    """
    import torch

    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    busy = (threads if threads is not None else torch.get_num_threads()) if kind == "cpu" else 1
    return max(0, min(int(requested), usable_cores() - busy))
