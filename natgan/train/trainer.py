"""The GAN training loop shared by every registered model.

The trainer owns the loop, persistence and signals; what one step does to G and D is the update rule's
job (:mod:`natgan.train.updates`, chosen by ``train.update``). After the rule: EMA -> counters. Everything
random comes from generators whose state is checkpointed, and the data order is a pure function of (seed,
images seen), so ``--resume`` continues bit-for-bit.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.console import Console

from natgan import augment, checkpoint, devices
from natgan.errors import ConfigError, DataError, Interrupted, NatGanError, unwrap_worker_error
from natgan.fsutil import atomic_write_text
from natgan.metrics.registry import is_better, numbers_line, scalars
from natgan.models import count_params, create, set_requires_grad
from natgan.recipe import Recipe
from natgan.train import distributed, preview, rng_state, schedule
from natgan.train.batch_checks import check_discriminator_batch
from natgan.train.finetune import load_weights
from natgan.train.freeze import describe_frozen, frozen_modules, parameters_of
from natgan.train.display import Display
from natgan.train.rundir import RunDir, new_run_id, run_id_of
from natgan.train.sampler import ResumableSampler
from natgan.train.updates import Networks, make_update


@dataclass
class BatchPlan:
    """How the global batch maps onto GPUs and micro-batches."""

    global_batch: int
    world: int
    per_gpu: int
    micro: int
    accumulation: int

    @classmethod
    def make(cls, batch: int, world: int, batch_per_gpu: int | None) -> "BatchPlan":
        if batch % world:
            raise ConfigError(f"key 'train.batch': global batch {batch} is not divisible by {world} GPUs")
        per_gpu = batch // world
        micro = min(batch_per_gpu or per_gpu, per_gpu)
        if per_gpu % micro:
            raise ConfigError(f"key 'train.batch_per_gpu': {micro} does not divide the per-GPU batch {per_gpu}")
        return cls(batch, world, per_gpu, micro, per_gpu // micro)


@dataclass
class TrainResult:
    step: int
    images_seen: int
    latest: str | None
    last_grid: str | None
    stopped_early: bool
    reason: str
    metrics: list = field(default_factory=list)


class Trainer:
    """Build everything a run needs from a recipe; :meth:`run` trains until done or interrupted."""

    def __init__(self, recipe: Recipe, outdir: str | Path, *, resume_from: dict | None = None,
                 init_from: dict | None = None, init_optim: bool = False, max_steps: int | None = None,
                 console: Console | None = None, show_progress: bool = True, fid_extractor: Any = None):
        self.recipe = recipe
        self.t = recipe.train
        self.run_dir = RunDir(outdir)
        self.max_steps = max_steps
        self.console = console or Console()
        self.show_progress = show_progress
        self.fid_extractor = fid_extractor
        self.stop_reason: str | None = None
        distributed.check_device(self.t.device)
        self.dist, self.device = distributed.init(self.t.device)
        self.plan = BatchPlan.make(self.t.batch, self.dist.world, self.t.batch_per_gpu)

        torch.manual_seed(self.t.seed)
        pair = create(recipe.model_name, config=recipe.model)
        self.G, self.D = pair.generator.to(self.device), pair.discriminator.to(self.device)
        check_discriminator_batch(self.D, self.plan.micro)
        if self.t.activation_checkpointing:
            if not hasattr(self.G, "set_activation_checkpointing"):
                raise ConfigError(f"key 'train.activation_checkpointing': model '{recipe.model_name}' "
                                  f"does not support activation checkpointing")
            self.G.set_activation_checkpointing(True)
        self.G_ema = copy.deepcopy(self.G).eval()
        set_requires_grad(self.G_ema, False)
        g_set, d_set = schedule.g_settings(self.t), schedule.d_settings(self.t)
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=g_set.lr, betas=g_set.betas)
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=d_set.lr, betas=d_set.betas)

        self.step = 0
        self.images_seen = 0
        self.class_names: list[str] | None = None  # a conditional run's class names (from the data), checkpointed
        self.metrics: list[dict] = []
        self.gens = rng_state.TrainerGenerators(self.t.seed + 7919 * self.dist.rank)
        rng_state.seed_globals(self.t.seed + 7919 * self.dist.rank)
        self.run_id = run_id_of(resume_from or {}) or new_run_id()
        self.frozen_d = frozen_modules(self.D, self.G.resolution, levels=self.t.freeze_d, layers=self.t.freezed)
        self.daug = augment.build(self.t, normalization=self.G.normalization, generator=self.gens.aug,
                               reduce=lambda t: distributed.all_reduce_mean(t, self.dist))
        self.update = make_update(self.t.update, Networks(self.G, self.D, self.g_opt, self.d_opt), train=self.t,
                                  plan=self.plan, dist=self.dist, device=self.device, gens=self.gens,
                                  autocast=self.autocast, flip=recipe.data.flip, daug=self.daug,
                                  d_frozen=parameters_of(self.D, self.frozen_d))
        if resume_from is not None:
            self._restore(resume_from)
        elif init_from is not None:
            load_weights(self, init_from, optim=init_optim)
        else:
            distributed.broadcast_module(self.G, self.dist)
            distributed.broadcast_module(self.D, self.dist)
            self.G_ema.load_state_dict(self.G.state_dict())

    # -------------------------------------------------------------------------------------- setup
    def autocast(self):
        return devices.autocast(self.t.precision, self.device)

    def _restore(self, ck: dict) -> None:
        w = ck["weights"]
        self.G.load_state_dict(w["G"])
        self.G_ema.load_state_dict(w.get("G_ema", w["G"]))
        if "D" not in w:
            raise NatGanError("checkpoint has no discriminator weights (key 'weights.D'): it cannot resume training")
        self.D.load_state_dict(w["D"])
        optim = ck.get("optim", {})
        if "G" in optim and "D" in optim:
            self.g_opt.load_state_dict(optim["G"])
            self.d_opt.load_state_dict(optim["D"])
        self.step = ck["progress"]["step"]
        self.images_seen = ck["progress"]["images_seen"]
        self.metrics = list(ck.get("metrics", []))
        extra = ck.get("extra", {})
        self.update.load_state_dict(extra)
        self.daug.load_state_dict(extra.get("augment", {}))
        if extra.get("classes"):
            self.class_names = list(extra["classes"])
        rng = ck.get("rng", {})
        if rng:
            rng_state.restore(rng, self.gens, rank=self.dist.rank)

    def _data_iterator(self) -> Iterator[Any]:
        """Opens the data now (errors surface here) and returns the batch stream: images, or (images, labels)
        for a class-conditional model, whose dataset labels also become the pool fake labels are drawn from."""
        from natgan.data import TrainingDataset
        from natgan.data.labels import check_labels

        path = self.recipe.data.path
        if not path:
            raise DataError("no training data: give --data PATH or set data.path in the recipe")
        num_classes = getattr(self.G, "num_classes", 0)
        dataset = TrainingDataset(path, self.G.resolution, normalization=self.G.normalization,
                                  with_labels=num_classes > 0)
        if num_classes:
            check_labels(num_classes, dataset.class_names, path)
            self.update.label_pool = torch.as_tensor(dataset.labels, dtype=torch.long)
            self.class_names = list(dataset.class_names)
        if len(dataset) < self.plan.micro:
            raise DataError(f"{path}: {len(dataset)} images, fewer than one micro-batch ({self.plan.micro})")
        start = self.step * self.plan.per_gpu
        sampler = ResumableSampler(len(dataset), seed=self.t.seed, rank=self.dist.rank, world=self.dist.world,
                                   start=start)
        from natgan.devices import loader_workers

        workers = loader_workers(self.recipe.data.workers, self.device)  # workers + CPU threads <= cores
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.plan.micro, sampler=sampler, num_workers=workers, drop_last=True,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator())  # keeps the global RNG untouched when the iterator starts
        return self._batches(loader)

    def _batches(self, loader: Any) -> Iterator[Any]:
        try:
            for batch in loader:
                if isinstance(batch, (tuple, list)):
                    yield batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
                else:
                    yield batch.to(self.device, non_blocking=True)
        except NatGanError as exc:  # a worker's DataError: show its line, naming the record
            raise unwrap_worker_error(exc) from None

    # the update rule's entry points under the names the pre-refactor Trainer had (tests drive them)
    def _flip(self, real: torch.Tensor) -> torch.Tensor:
        return self.update.flip(real)

    def _joint_step(self, data: Iterator[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.update.step(data, self.step)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Called after the optimizer steps of update ``self.step + 1``. Up to ``train.ema_start`` updates
        G_ema is a copy of G (HiT starts its EMA at step 10); afterwards weights (and, with
        ``ema_buffers = "average"``, floating-point buffers such as BatchNorm statistics) are averaged."""
        beta = 0.0 if self.step + 1 <= self.t.ema_start else self.t.ema_beta
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1 - beta)
        average_buffers = self.t.ema_buffers == "average"
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            if average_buffers and b.is_floating_point():
                b_ema.lerp_(b, 1 - beta)
            else:
                b_ema.copy_(b)

    def _set_lrs(self) -> tuple[float, float]:
        g_lr, d_lr = schedule.learning_rates(self.t, self.step)
        for group in self.g_opt.param_groups:
            group["lr"] = g_lr
        for group in self.d_opt.param_groups:
            group["lr"] = d_lr
        return g_lr, d_lr

    # ------------------------------------------------------------------------------- persistence
    def make_checkpoint(self, rng: dict | None = None) -> dict:
        return checkpoint.make_checkpoint(
            model_name=self.recipe.model_name, model_config=dataclasses.asdict(self.recipe.model),
            recipe=self.recipe.to_dict(), normalization=self.G.normalization,
            G=self.G.state_dict(), G_ema=self.G_ema.state_dict(), D=self.D.state_dict(),
            optim={"G": self.g_opt.state_dict(), "D": self.d_opt.state_dict()},
            step=self.step, images_seen=self.images_seen, rng=rng_state.capture(self.gens) if rng is None else rng,
            metrics=self.metrics,
            extra={**self.update.state_dict(), "augment": self.daug.state_dict(), "run_id": self.run_id,
                   **({"classes": self.class_names} if self.class_names else {})})

    def save_checkpoint(self) -> Path | None:
        ck = self.make_checkpoint()  # every rank: RNG states are gathered collectively
        if not self.dist.is_main:
            return None
        bad = checkpoint.first_non_finite(ck["weights"])
        if bad is not None:  # finite losses can hide weights that have already diverged
            good = self.run_dir.newest_valid()
            where = f"; last good checkpoint: {good[0]}" if good else "; no checkpoint was written yet"
            raise NatGanError(f"non-finite weights at step {self.step} ({bad}): not saving this state{where} "
                              f"(try a lower learning rate or precision = \"fp32\")")
        return self.run_dir.save(ck, self.step, self.t.keep_checkpoints)

    def save_grid(self, writer: Any = None) -> Path | None:
        if not self.dist.is_main:
            return None
        path = self.run_dir.path / "samples" / f"step-{self.step:07d}.png"
        grid = preview.save_preview(self.G_ema, path)
        if writer is not None:
            writer.add_image("samples", grid, self.step, dataformats="HWC")
        return path

    def evaluate_metrics(self, writer: Any = None) -> dict:
        """``eval.metrics`` of G_ema (natgan.metrics registry), logged per output and kept in the history."""
        from natgan.metrics import evaluate_generator
        from natgan.metrics.settings import default_reference, evaluation_kwargs

        found = default_reference(self.recipe.to_dict())
        result = evaluate_generator(self.G_ema, found[0] if found else None, **evaluation_kwargs(self.recipe.eval),
                                    device=self.device, extractor=self.fid_extractor, progress=False, seed=self.t.seed)
        record = {"step": self.step, "kimg": self.images_seen / 1000, **result}
        previous = self.metrics
        self.metrics = [*previous, record]
        numbers = scalars(result, result["metrics"])
        if writer is not None:
            for key, value in numbers.items():
                writer.add_scalar(f"metrics/{key}", value, self.step)
        if self.t.keep_best is not None and self.t.keep_best in numbers:
            self._keep_best(self.t.keep_best, numbers[self.t.keep_best], previous)
        return record

    def _keep_best(self, key: str, value: float, history: list[dict]) -> None:
        """Write best.pt (atomically) when ``value`` beats every earlier ``key`` in the metrics history."""
        best = None
        for old in history:
            if isinstance(old.get(key), (int, float)) and (best is None or is_better(key, float(old[key]), best)):
                best = float(old[key])
        if not is_better(key, value, best):
            return
        # Only the main process evaluates, so no collective RNG gather: best.pt holds weights and history,
        # not a resumable RNG state (resume from latest.pt / ckpt-*.pt).
        ck = self.make_checkpoint(rng={})
        ck["extra"]["best"] = {"metric": key, "value": value, "step": self.step, "previous": best}
        checkpoint.save(ck, self.run_dir.path / "best.pt")

    # ------------------------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        main = self.dist.is_main
        if main:
            self.run_dir.lock()
            self.run_dir.claim(self.run_id)
        writer = None
        previous_handlers = self._install_signal_handlers()
        display = Display(total=self.t.iterations, start=self.step, log_every=self.t.log_every, console=self.console,
                          log_file=self.run_dir.path / "log.txt" if main else None,
                          enabled=main and self.show_progress)
        latest = grid = None
        flags = contextlib.ExitStack()  # the global TF32 flags hold for the run and are restored after it
        flags.enter_context(devices.precision_context(self.t.precision, self.device))
        try:
            if main:
                atomic_write_text(self.run_dir.path / "recipe.toml", self.recipe.to_toml())
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.run_dir.path / "tb"))
                display.message(self._banner())
                if self.t.augment != "none":
                    display.message(f"augmentation: {augment_summary(self.t)}")
                if self.frozen_d:
                    display.message(describe_frozen(self.D, self.G.resolution, self.frozen_d,
                                                    levels=self.t.freeze_d, layers=self.t.freezed))
                display.message(preview.preview_note())
            data = self._data_iterator()
            steps_this_run = 0
            t_last, seen_last = time.perf_counter(), self.images_seen
            while self.step < self.t.iterations:
                g_lr, d_lr = self._set_lrs()
                stats = self.update.step(data, self.step)
                self._update_ema()
                self.daug.after_step(self.plan.global_batch)
                self._check_finite(stats)
                self.step += 1
                steps_this_run += 1
                self.images_seen += self.plan.global_batch

                log_now = self.step % self.t.log_every == 0 or self.step == self.t.iterations
                now = time.perf_counter()
                rate = (self.images_seen - seen_last) / max(now - t_last, 1e-9)
                shown = None
                if log_now:
                    shown = {k: float(distributed.all_reduce_mean(v.float().reshape(1), self.dist))
                             for k, v in stats.items()}
                    t_last, seen_last = now, self.images_seen
                    augment_stats = self.daug.stats()
                    if writer is not None:
                        for k, v in shown.items():
                            writer.add_scalar(f"loss/{k}", v, self.step)
                        for k, v in augment_stats.items():
                            writer.add_scalar(f"augment/{k}", v, self.step)
                        writer.add_scalar("lr/G", g_lr, self.step)
                        writer.add_scalar("lr/D", d_lr, self.step)
                        writer.add_scalar("speed/img_per_s", rate, self.step)
                        writer.add_scalar("progress/kimg", self.images_seen / 1000, self.step)
                    shown.update(augment_stats)
                display.update(self.step, self.images_seen / 1000, rate, shown)

                done = self.step == self.t.iterations
                if self.recipe.eval.every and (self.step % self.recipe.eval.every == 0 or done) and main:
                    record = self.evaluate_metrics(writer)
                    display.message(f"step {self.step}: {numbers_line(record, ', ')} ({record.get('mode', '')}, "
                                    f"{record.get('num_gen', '')} images)")
                if self.step % self.t.sample_every == 0 or done:
                    grid = self.save_grid(writer) or grid
                stop = self.stop_reason is not None or (self.max_steps is not None and steps_this_run >= self.max_steps)
                stop = distributed.any_flag(stop, self.device, self.dist)
                if self.step % self.t.checkpoint_every == 0 or done or stop:
                    latest = self.save_checkpoint() or latest
                if stop:
                    if self.stop_reason is None:
                        self.stop_reason = f"--max-steps {self.max_steps} reached"
                    break
            if grid is None:
                grid = self.save_grid(writer)
            if latest is None and self.step > 0 and main:
                latest = self.save_checkpoint()
            display.write_log(f"stopped at step {self.step}: {self.stop_reason}" if self.stop_reason is not None
                              else f"finished at step {self.step}")
        except BaseException as exc:  # the log says why the run ended, whatever ended it
            display.write_log(f"error at step {self.step}: {_first_line(exc)}")
            raise
        finally:
            flags.close()
            display.close()
            self._restore_signal_handlers(previous_handlers)
            if writer is not None:
                writer.close()
            if main:
                self.run_dir.unlock()
        return TrainResult(self.step, self.images_seen, str(self.run_dir.latest) if latest else None,
                           str(grid) if grid else None, self.stop_reason is not None,
                           self.stop_reason or "finished", self.metrics)

    def _banner(self) -> str:
        p = self.plan
        return (f"training {self.recipe.model_name} at {self.G.resolution}px on {self.device} "
                f"(x{self.dist.world}): G {count_params(self.G) / 1e6:.2f} M, "
                f"D {count_params(self.D) / 1e6:.2f} M params; "
                f"batch {p.global_batch} = {p.world} x {p.accumulation} x {p.micro}; "
                f"step {self.step}/{self.t.iterations}; run dir {self.run_dir.path}")

    def _check_finite(self, stats: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.float().reshape(()) for v in stats.values()])
        if not bool(torch.isfinite(values).all()):
            shown = ", ".join(f"{k} {float(v):.4g}" for k, v in zip(stats, values))
            good = self.run_dir.newest_valid() if self.dist.is_main else None
            where = f"; last good checkpoint: {good[0]}" if good else "; no checkpoint was written yet"
            raise NatGanError(f"non-finite loss at step {self.step} ({shown}): stopping without saving this "
                              f"state{where} (try a lower learning rate or precision = \"fp32\")")

    # ------------------------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> dict:
        def request_stop(signum, frame):
            name = signal.Signals(signum).name
            if self.stop_reason is not None and signum == signal.SIGINT:
                good = self.run_dir.latest if self.run_dir.latest.exists() else None
                raise Interrupted(f"second Ctrl-C at step {self.step}: stopped at once without a final checkpoint; "
                                  + (f"the last one written is {good}" if good else "no checkpoint was written yet"))
            self.stop_reason = f"{name} received"

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not in the main thread (e.g. a notebook worker): no handlers
            return {}
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _first_line(exc: BaseException) -> str:
    """One line for log.txt: the exception's own first line (a KeyboardInterrupt has none: its name)."""
    text = str(unwrap_worker_error(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def schedule_summary(recipe: Recipe, world: int = 1) -> dict[str, Any]:
    """What ``--dry-run`` prints besides the recipe: batch split, learning rates, regularisation cadence."""
    t = recipe.train
    plan = BatchPlan.make(t.batch, world, t.batch_per_gpu)
    g, d = schedule.g_settings(t), schedule.d_settings(t)
    return {
        "iterations": t.iterations,
        "total_kimg": t.iterations * t.batch / 1000,
        "global_batch": t.batch, "gpus": world, "per_gpu_batch": plan.per_gpu, "micro_batch": plan.micro,
        "accumulation_steps": plan.accumulation,
        "g_lr": g.lr, "g_betas": list(g.betas), "d_lr": d.lr, "d_betas": list(d.betas),
        "ttur": t.ttur,
        "update": ("simultaneous: one forward, G and D from the same logits, R1 in the D loss"
                   if t.update == "simultaneous" else "alternating: D step, then G step"),
        "lr_decay": f"linear to 0 from step {t.lr_decay_start} to {t.iterations}" if t.lr_decay else "none",
        "r1": f"gamma {t.r1} every {t.r1_every} steps" if t.r1 > 0 else "off",
        "bcr": f"real {t.bcr_real}, fake {t.bcr_fake}" if t.bcr else "off",
        "path_length": f"weight {t.pl_weight} every {t.g_reg_every} steps" if t.pl_weight > 0 else "off",
        "style_mixing": t.style_mixing,
        "augment": augment_summary(t),
        "freeze_d": (f"first {t.freeze_d} D resolution levels frozen" if t.freeze_d else
                     f"first {t.freezed} D layers frozen (stylegan2-ada-pytorch's --freezed)" if t.freezed else "off"),
        "ema": (f"beta {t.ema_beta}" + (f", a copy of G for the first {t.ema_start} steps" if t.ema_start else "")
                + (", buffers averaged" if t.ema_buffers == "average" else ", buffers copied")),
        "precision": t.precision,
        "checkpoint_every": t.checkpoint_every, "sample_every": t.sample_every,
        "fid": (f"{', '.join(recipe.eval.metrics)} ({recipe.eval.mode}) with {recipe.eval.num} images every "
                f"{recipe.eval.every} steps" + (f"; best.pt by {t.keep_best}" if t.keep_best else "")
                if recipe.eval.every else "off"),
    }



def augment_summary(t: Any) -> str:
    """One line on D's augmentation for ``--dry-run``."""
    if t.augment == "none":
        return "off"
    if t.augment == "diffaug":
        return f"DiffAugment {t.diffaug_policy}"
    if t.augment == "fixed":
        return f"ADA '{t.augment_pipe}' at fixed p = {t.augment_p}"
    return (f"ADA '{t.augment_pipe}': p from {t.augment_p} toward r_t = {t.ada_target} every {t.ada_interval} "
            f"steps, 0 -> 1 in {t.ada_kimg:g} kimg")
