"""Where tensors compute and at what precision: one device resolver and one precision scope.

``sample``, ``fid``, ``visualize``, ``bench`` and the trainer all name devices the same way (``auto``,
``cpu``, ``cuda``, ``cuda:N``, ``mps``) and get the same one-line errors for ones this machine lacks.
The precision scope sets torch's *global* TF32 / cuDNN flags for a block and puts them back after it,
so a benchmark or a training run inside a larger program (a notebook, a test session) leaves the
process as it found it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from natgan.errors import ConfigError

PRECISIONS = ("fp32", "tf32", "bf16")


def resolve_device(name: str | torch.device | None = "auto", *, option: str = "--device",
                   local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; unusable devices are ConfigErrors naming ``option``.

    A CUDA device without an index becomes ``cuda:local_rank`` (one process per GPU under torchrun) or,
    without ``local_rank``, the current CUDA device.
    """
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
