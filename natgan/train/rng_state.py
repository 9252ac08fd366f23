"""Capture and restore every random stream a training run uses, in ``weights_only``-safe form.

Streams: torch's global CPU and CUDA generators (models draw noise from them), numpy and Python
``random`` (libraries may), and the trainer's own CPU generators for latents, augmentations and flips.
Each rank's state is gathered into the checkpoint so a multi-GPU run resumes exactly as well.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist

STREAMS = ("z", "aug", "flip")


class TrainerGenerators:
    """Dedicated CPU generators: latents drawn on CPU give the same images on any device."""

    def __init__(self, seed: int):
        self.z = torch.Generator().manual_seed(seed * 3 + 1)
        self.aug = torch.Generator().manual_seed(seed * 3 + 2)
        self.flip = torch.Generator().manual_seed(seed * 3 + 3)


def seed_globals(seed: int) -> None:
    """Seed numpy's and Python's global generators from the run seed, so a fresh run is as reproducible
    as a resumed one (torch's global generator is seeded by the trainer before it builds the models)."""
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def capture_local(gens: TrainerGenerators) -> dict:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "state": list(py_state),
                   "gauss": py_gauss if py_gauss is not None else "none"},
        "generators": {name: getattr(gens, name).get_state() for name in STREAMS},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def capture(gens: TrainerGenerators) -> dict:
    """All ranks call this; every rank gets ``{"ranks": [state of rank 0, 1, ...]}``."""
    local = capture_local(gens)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        return {"ranks": gathered}
    return {"ranks": [local]}


def restore(rng: dict, gens: TrainerGenerators, *, rank: int) -> bool:
    """Restore this rank's streams; False (fresh streams kept) if the checkpoint came from fewer ranks."""
    ranks = rng.get("ranks", [])
    if rank >= len(ranks):
        return False
    state = ranks[rank]
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), None if py["gauss"] == "none" else py["gauss"]))
    for name in STREAMS:
        getattr(gens, name).set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    return True
