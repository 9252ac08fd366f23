"""The studio's state behind the page: loaded generators, rendering, SeFa, attention, projection, capture.

Why a class of its own: the page (Gradio) only turns controls into calls of :class:`Studio` and results
into pictures and text, so everything the page does is testable without a browser, and the rules live
in one place:

* checkpoints load only through :func:`natgan.sampling.load_generator` (``weights_only``, CRC and structure
  checks); a few stay cached (A/B and switching back are instant) and the least recently used is dropped;
* one generation at a time per device (a lock; the page's queue serialises as well), so many browser
  tabs cannot run the GPU out of memory;
* a latent renders through ``sample``'s own code (:class:`~natgan.sampling.ImageGenerator` for a plain seed,
  :func:`~natgan.latent.edit.images_from_stored` otherwise), so the captured command writes the same PNG;
* SeFa directions and the truncation centre are computed once per checkpoint (the centre once per class of a
  class-conditional checkpoint: the class's mean w unless the checkpoint stores one, as ``sample --trunc
  --class`` truncates);
* a class-conditional checkpoint renders every latent in the page's class: the latent tools get the generator
  bound to that class (:class:`~natgan.models.conditioning.ClassBoundGenerator`, as ``sample --class`` binds it),
  and a plain seed renders through ``sample --seeds --class``'s own label source.
"""

from __future__ import annotations

import math
import queue
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from natgan.errors import ConfigError, DataError, NatGanError
from natgan.latent.edit import images_from_stored
from natgan.models.contract import using_noise
from natgan.latent.sefa import Directions, factorize
from natgan.latent.space import n_rows
from natgan.models.contract import has_mapping_network
from natgan.latent.store import StoredLatents
from natgan.models.conditioning import ClassBoundGenerator
from natgan.sampling import ImageGenerator, LoadedGenerator, eval_mode, fixed_class, load_generator
from natgan.sampling.export import to_hwc
from natgan.studio.capture import Capture, capture_name, write_capture
from natgan.studio.catalog import Entry
from natgan.studio.spec import LatentSpec, build_latent

MAX_UPLOAD_BYTES = 20 * 2**20   # a projection target is resized to the model's resolution anyway
TOP_DIRECTIONS = 6              # SeFa components offered as sliders
MAX_PROJECTION_STEPS = 5000


@dataclass
class Features:
    """Which panels apply to a model; ``None`` = available, else the reason shown beside the disabled panel."""

    mixing: str | None
    noise: str | None
    attention: str | None


@dataclass
class Model:
    entry: Entry
    loaded: LoadedGenerator
    features: Features
    _centres: dict = field(default_factory=dict)    # class (None: unconditional) -> truncation centre
    _bound: dict = field(default_factory=dict)      # class -> the generator bound to it
    _directions: Directions | None = None
    _directions_error: str | None = None

    @property
    def G(self) -> torch.nn.Module:
        return self.loaded.G

    @property
    def name(self) -> str:
        return self.loaded.ckpt["model"]["name"]

    @property
    def classes(self) -> list[str]:
        """The class names of a class-conditional checkpoint (as ``sample --class`` reads them), [] otherwise."""
        return self.loaded.class_names()

    def check_label(self, label: int | None) -> int | None:
        """``label`` when it fits this checkpoint: a class index of a conditional one, None for an unconditional one."""
        names = self.classes
        if not names:
            if label is not None:
                raise ConfigError(f"class {label}: {self.entry.label} is unconditional (model.num_classes = 0)")
            return None
        if label is None:
            raise ConfigError(f"{self.entry.label} is class-conditional ({len(names)} classes): choose a class")
        if not 0 <= int(label) < len(names):
            raise ConfigError(f"class {label}: {self.entry.label} has {len(names)} classes (0-{len(names) - 1})")
        return int(label)

    def generator(self, label: int | None) -> torch.nn.Module:
        """What the latent tools run: ``G`` when unconditional, else ``G`` bound to class ``label``."""
        label = self.check_label(label)
        if label is None:
            return self.G
        if label not in self._bound:
            self._bound[label] = ClassBoundGenerator(self.G, label)
        return self._bound[label]

    def centre(self, psi: float, label: int | None = None) -> torch.Tensor | None:
        """The truncation centre for ``psi`` (None for 1) by the policy every sampling path shares
        (:meth:`~natgan.sampling.LoadedGenerator.centre`, so ``sample --trunc [--class]`` agrees): the checkpoint's
        stored centre, else the mean w of 10k fixed latents, of class ``label`` for a conditional checkpoint.
        Computed once per checkpoint (and class)."""
        G = self.generator(label)
        if psi == 1.0:
            return None
        if label not in self._centres:
            self._centres[label] = self.loaded.centre(psi, G)
        return self._centres[label]

    def directions(self) -> Directions:
        """SeFa over every style layer, computed once (raises the reason when SeFa does not apply)."""
        if self._directions is None and self._directions_error is None:
            try:  # SeFa reads style weights, which no label enters: any class's bound generator gives them
                self._directions = factorize(self.generator(0 if self.classes else None))
            except NatGanError as exc:
                self._directions_error = str(exc)
        if self._directions is None:
            raise NatGanError(self._directions_error or "no directions")
        return self._directions

    def info(self) -> dict:
        ckpt = self.loaded.ckpt
        progress = ckpt.get("progress", {})
        metrics = {}
        for entry in ckpt.get("metrics") or []:
            if isinstance(entry, dict):
                metrics.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and not
                                isinstance(v, bool) and k not in ("step", "images_seen", "num", "seed")})
        return {"checkpoint": str(self.entry.path), "model": self.name, "resolution": int(self.G.resolution),
                "step": progress.get("step"), "images_seen": progress.get("images_seen"), "ema": self.loaded.ema,
                "latent": "one per layer (n_latent %d)" % n_rows(self.G) if n_rows(self.G) else "one latent",
                "mapping": has_mapping_network(self.generator(0 if self.classes else None)),
                "classes": len(self.classes), "metrics": metrics}


def features_of(G: torch.nn.Module) -> Features:
    from natgan.viz.capture import attention_modules

    return Features(
        mixing=None if n_rows(G) else "this model has one latent for the whole network (n_latent is None)",
        noise=None if hasattr(G, "noise_mode") else "this model has no noise inputs",
        attention=None if attention_modules(G) else "this model has no attention layers (convolutional)")


@dataclass
class Frame:
    """One rendered image and everything needed to reproduce it."""

    index: int                 # which checkpoint
    spec: LatentSpec
    latents: StoredLatents     # the latent shown (on the CPU)
    image: np.ndarray          # HWC uint8, exactly what `sample` writes
    ms: float                  # generation time, excluding one-off loads / centre / SeFa
    notes: list[str] = field(default_factory=list)


@dataclass
class AttentionView:
    image: np.ndarray
    caption: str
    levels: list[int]
    blocks: int                # blocks at the chosen level
    heads: int                 # heads of the chosen block
    level: int


@dataclass
class ProjectionUpdate:
    step: int
    steps: int
    image: np.ndarray | None   # HWC uint8 of the latest step
    lpips: float | None = None
    latents: StoredLatents | None = None  # set on the final update


class Studio:
    def __init__(self, entries: Sequence[Entry], device: torch.device, *, ema: bool = True,
                 weights: str | Path | None = None, random_lpips: bool = False, max_models: int = 3,
                 workdir: str | Path | None = None):
        if not entries:
            raise ConfigError("give at least one checkpoint")
        self.entries = list(entries)
        self.device = device
        self.ema = ema
        self.weights = weights
        self.random_lpips = random_lpips
        self.max_models = max(2, int(max_models))
        self.lock = threading.Lock()   # one generation at a time on this device
        self._models: OrderedDict[int, Model] = OrderedDict()
        self._lpips = None
        self._captures = 0
        self.first_class = 0            # the class the page starts in (for a class-conditional first checkpoint)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="natgan-studio-"))

    # ------------------------------------------------------------------------------------------- models
    def index_of(self, label_or_index: str | int) -> int:
        if isinstance(label_or_index, int) and 0 <= label_or_index < len(self.entries):
            return label_or_index
        for i, entry in enumerate(self.entries):
            if entry.label == label_or_index:
                return i
        raise ConfigError(f"checkpoint '{label_or_index}' is not one of those this studio was given")

    def model(self, index: int) -> Model:
        """The loaded checkpoint ``index`` (cached; the least recently used beyond ``max_models`` is dropped)."""
        if index in self._models:
            self._models.move_to_end(index)
            return self._models[index]
        entry = self.entries[index]
        with self.lock:
            loaded = load_generator(entry.path, ema=self.ema, device=self.device)
            loaded.G.eval()
            model = Model(entry, loaded, features_of(loaded.G))
        self._models[index] = model
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        return model

    def class_named(self, index: int, text: str, *, option: str = "--class") -> int:
        """``--class`` text for checkpoint ``index`` -> its one class index, read as ``sample --class`` reads it
        (one-line errors for an unknown class, several classes, or an unconditional checkpoint)."""
        try:
            found = self.model(index).loaded.chosen_classes(text, option=option)
        except ConfigError as exc:
            raise ConfigError(f"{self.entries[index].label}: {exc}") from None
        if len(found) != 1:
            raise ConfigError(f"{option} '{text}': the studio shows one class at a time, not {len(found)}")
        return found[0]

    def first_loadable(self) -> tuple[int, list[str]]:
        """The first checkpoint that loads, and one line per checkpoint that did not before it."""
        failures = []
        for i in range(len(self.entries)):
            try:
                self.model(i)
                return i, failures
            except NatGanError as exc:
                failures.append(str(exc))
        raise NatGanError("no checkpoint loads: " + "; ".join(failures))

    # ---------------------------------------------------------------------------------------- rendering
    def render(self, index: int, spec: LatentSpec) -> Frame:
        """The image of ``spec`` on checkpoint ``index`` (validated; one-line errors for bad controls)."""
        spec = spec.validated()
        model = self.model(index)
        G = model.generator(spec.label)   # bound to the spec's class when the checkpoint is class-conditional
        notes = []
        if spec.mixing and model.features.mixing:
            raise ConfigError(f"style mixing: {model.features.mixing}")
        if spec.noise_mode != "const" and model.features.noise:
            spec = replace(spec, noise_mode="const")
        with self.lock:
            w_avg = model.centre(spec.psi, spec.label)   # computed once per checkpoint (and class)
            directions = model.directions() if any(spec.strengths) else None
            start = time.perf_counter()
            latents = build_latent(G, spec, w_avg=w_avg, directions=directions, name=capture_name(spec),
                                   model=model.name)
            if spec.seed_only:  # `sample --seeds N --trunc PSI [--class K]`'s own path
                labels = None if spec.label is None else fixed_class(spec.label)
                with eval_mode(model.G, spec.noise_mode):
                    images = ImageGenerator(model.G, batch_size=1, psi=spec.psi, w_avg=w_avg,
                                            labels=labels).images([int(spec.seed)])
            else:               # `sample --w FILE.npz`'s own path
                images = images_from_stored(G, latents.to(self.device), batch_size=1, noise_mode=spec.noise_mode)
            image = to_hwc(images.cpu())[0]
            ms = (time.perf_counter() - start) * 1000
        if spec.noise_mode == "random":
            notes.append("random noise: every render draws new noise, so the captured command gives another image")
        if spec.projected is not None and spec.label is not None and has_mapping_network(G):
            notes.append("a projected latent is a finished w: the class changes only the seeds mixed into it")
        return Frame(index, spec, latents, image, ms, notes)

    def carry_class(self, label: int | None, source: int | None, target: int) -> tuple[int | None, list[str]]:
        """The class to show on checkpoint ``target`` for class ``label`` of checkpoint ``source``: the class of
        the same name, else the same index, else class 0 (None when ``target`` is unconditional)."""
        names = self.model(target).classes
        before = self.model(source).classes if source is not None else []
        name = before[label] if label is not None and label < len(before) else None
        if not names:
            return None, ([f"class {name} left out: {self.entries[target].label} is unconditional"]
                          if name is not None else [])
        if name is not None and name in names:
            return names.index(name), []
        new = label if label is not None and label < len(names) else 0
        why = f"no class {name} in {self.entries[target].label}" if name is not None else \
            f"{self.entries[target].label} is class-conditional"
        return new, [f"{why}: class {names[new]} shown"]

    def render_b(self, index: int, spec: LatentSpec, source: int | None = None) -> Frame:
        """The same latent on checkpoint ``index`` for A/B: direction strengths belong to A's own SeFa
        components and are left out; a projected latent is kept when it fits B; the class is A's class
        (``source`` is A's checkpoint), matched by name (see :meth:`carry_class`)."""
        notes = ["directions are A's own SeFa components: not applied to B"] if any(spec.strengths) else []
        label, class_notes = self.carry_class(spec.label, source, index)
        notes += class_notes
        spec = replace(spec, strengths=(), label=label)
        model = self.model(index)
        if spec.mixing and model.features.mixing:
            spec = replace(spec, mix_seed=None, mix_layers="")
            notes.append(f"style mixing left out on B: {model.features.mixing}")
        try:
            frame = self.render(index, spec)
        except NatGanError as exc:
            if spec.projected is None:
                raise
            frame = self.render(index, replace(spec, projected=None))
            notes.append(f"projected latent left out on B ({exc}); B shows seed {spec.seed:g}")
        frame.notes = notes + frame.notes
        return frame

    def directions(self, index: int) -> Directions:
        model = self.model(index)
        with self.lock:
            return model.directions()

    def switch(self, spec: LatentSpec, index: int, source: int | None = None) -> tuple[LatentSpec, list[str]]:
        """The spec to keep when checkpoint ``index`` is chosen (coming from checkpoint ``source``): seeds, psi,
        noise and mixing stay; direction strengths reset (each checkpoint has its own components); a projected
        latent stays when it fits; the class stays by name where it can (see :meth:`carry_class`)."""
        model = self.model(index)
        label, notes = self.carry_class(spec.label, source, index)
        spec = replace(spec, label=label)
        if any(spec.strengths):
            notes.append("direction strengths reset: each checkpoint has its own SeFa components")
        spec = replace(spec, strengths=())
        if spec.projected is not None:
            try:
                spec.projected.synthesis_input(model.generator(label), "projected latent")
            except NatGanError as exc:
                notes.append(f"projected latent dropped: {exc}")
                spec = replace(spec, projected=None)
        if spec.mixing and model.features.mixing:
            notes.append(f"style mixing off: {model.features.mixing}")
            spec = replace(spec, mix_seed=None, mix_layers="")
        return spec, notes

    # ---------------------------------------------------------------------------------------- attention
    def attention(self, frame: Frame, *, level: int | None = None, block: int = 0, head: int = 0,
                  where: tuple[float, float] | None = None, cmap: str = "inferno") -> AttentionView:
        """The frame's image with one head's map over it (``where``: the clicked pixel as fractions)."""
        from natgan.viz.maps import attention_maps
        from natgan.viz.overlay import overlay

        model = self.model(frame.index)
        if model.features.attention:
            raise NatGanError(f"attention: {model.features.attention}")
        G = model.generator(frame.spec.label)
        with self.lock:
            latents = frame.latents.to(self.device)
            with torch.no_grad():
                w = latents.synthesis_input(G, "latent")
            with eval_mode(G, frame.spec.noise_mode), using_noise(G, {k: v[:1] for k, v in latents.noise.items()}):
                maps = attention_maps(G, 0, levels="all", w=w, query=where, model=model.name)
        levels = maps.levels
        chosen_level = level if level in levels else levels[-1]
        at_level = maps.at(chosen_level)
        block = min(max(int(block), 0), len(at_level) - 1)
        chosen = at_level[block]
        head = min(max(int(head), 0), len(chosen.heads) - 1)
        image, caption = overlay(frame.image, chosen, head, cmap=cmap, where=where)
        return AttentionView(image, caption, levels, len(at_level), len(chosen.heads), chosen_level)

    # --------------------------------------------------------------------------------------- projection
    def _lpips_model(self):
        if self._lpips is None:
            from natgan.metrics.lpips import load_lpips

            self._lpips = load_lpips(self.weights, random_init=self.random_lpips, device=self.device)
        return self._lpips

    def load_target(self, path: str | Path, index: int) -> torch.Tensor:
        """An uploaded file as a projection target: size-capped, decoded only as an image."""
        from natgan.latent.project import load_target

        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError:
            raise DataError(f"{path.name}: upload not found") from None
        if size > MAX_UPLOAD_BYTES:
            raise DataError(f"{path.name}: {size / 2**20:.1f} MiB is over the {MAX_UPLOAD_BYTES // 2**20} MiB "
                            f"upload limit")
        try:
            return load_target(path, int(self.model(index).G.resolution))
        except DataError as exc:
            raise DataError(str(exc).replace(str(path), path.name)) from None

    def project(self, index: int, target: torch.Tensor, *, steps: int = 200, space: str = "w", seed: int = 303,
                every: int = 1, label: int | None = None) -> Iterator[ProjectionUpdate]:
        """Run ``project`` on a worker thread, yielding progress (every ``every`` steps) and the final latent.
        A class-conditional checkpoint projects in class ``label`` (as ``project --class``: it starts from that
        class's mean w).

        Closing the iterator early (the page went away) stops the optimisation at its next step.
        """
        from natgan.latent.project import ProjectionSettings, project

        if not (isinstance(steps, int) or float(steps).is_integer()) or not 1 <= steps <= MAX_PROJECTION_STEPS:
            raise ConfigError(f"projection steps {steps}: expected 1 to {MAX_PROJECTION_STEPS}")
        steps = int(steps)
        model = self.model(index)
        G = model.generator(label)
        settings = ProjectionSettings(steps=steps, space=space if has_mapping_network(G) else "w", seed=seed)
        settings.validate()
        if settings.space == "wplus" and not n_rows(G):
            raise ConfigError("projection space wplus: this model has one latent for every layer")
        lpips = self._lpips_model()
        updates: queue.Queue = queue.Queue()
        cancel = threading.Event()

        class _Stopped(Exception):
            pass

        def on_step(step: int, image: torch.Tensor) -> None:
            if cancel.is_set():
                raise _Stopped()
            if step % every == 0 or step == steps:
                updates.put(ProjectionUpdate(step, steps, to_hwc(image.cpu())[0]))

        def work() -> None:
            try:
                with self.lock:
                    result = project(G, target, lpips, settings, name="projected", on_step=on_step)
                result.latents.model = model.name
                updates.put(ProjectionUpdate(steps, steps, to_hwc(result.image)[0], result.lpips, result.latents))
            except _Stopped:
                updates.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
                updates.put(exc)

        worker = threading.Thread(target=work, name="natgan-studio-projection", daemon=True)
        worker.start()
        try:
            while True:
                item = updates.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.latents is not None:
                    return
        finally:
            cancel.set()
            worker.join()

    # ------------------------------------------------------------------------------------------ capture
    def capture(self, frame: Frame) -> Capture:
        """PNG + latent .npz + the `nat-gan sample` command, in a fresh folder of the studio's work directory."""
        self._captures += 1
        folder = self.workdir / f"capture-{self._captures:04d}"
        return write_capture(folder, frame.image, frame.latents, self.entries[frame.index].path, frame.spec,
                             no_ema=not self.ema, classes=self.model(frame.index).classes)


def fraction(xy: Sequence[float], size: int) -> tuple[float, float]:
    """A click at pixel ``(x, y)`` of a ``size``-px image -> ``(fy, fx)`` in [0, 1)."""
    x, y = (float(v) for v in xy)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ConfigError(f"pixel {xy}: expected finite coordinates")
    clamp = lambda v: min(max(v / size, 0.0), 1.0 - 1e-9)  # noqa: E731
    return clamp(y + 0.5), clamp(x + 0.5)
