"""Update rules: what one training step does to G and D, kept apart from the loop that calls them.

As stylegan2-ada-pytorch's ``Loss.accumulate_gradients`` separates the algorithm from ``training_loop``,
an :class:`UpdateRule` owns the losses, regularisers and optimizer steps of one step; :class:`Trainer`
keeps the loop, persistence and signals. Two rules exist, chosen by ``train.update``:

- :class:`AlternatingUpdate` (StyleGAN2/StyleSwin/StyleNAT): D step -> lazy R1 step -> G step -> lazy
  path-length step, each with its own forward passes.
- :class:`SimultaneousUpdate` (HiT): one forward of G and D per micro-batch; D and G get the gradients
  of their own losses on the same logits, and both optimizers step once.

Every image the discriminator sees goes through :meth:`UpdateRule.run_D`, which applies the run's
discriminator augmentation (ADA / DiffAugment, :mod:`natgan.augment`) first, so augmentation also
reaches inside R1 and bCR without either knowing about it. The RNG draw order is part of the contract:
``--resume`` is bit-exact only because every rule draws from the checkpointed generators in a fixed order.

Class-conditional models (``G.num_classes > 0``): the data yields ``(images, labels)``; D sees every real
with its own label and every fake with the label it was generated for. Fake labels are drawn as
stylegan2-ada-pytorch draws them, the label of a uniformly random dataset image (so they follow the
dataset's class distribution), from the checkpointed latent generator right before the latents; style
mixing keeps the label of the image. Unconditional runs draw nothing extra, so their streams are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import torch

from natgan import augment
from natgan.models import set_requires_grad
from natgan.train import distributed, losses


@dataclass
class Networks:
    """The trained networks and their optimizers (the EMA copy is the trainer's business)."""

    G: torch.nn.Module
    D: torch.nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer


class UpdateRule:
    """Shared pieces of both rules: latents, style mixing, flips, D with augmentation, bCR, R1 weighting.

    ``d_frozen`` holds the ids of discriminator parameters Freeze-D keeps fixed; they never receive a
    gradient, so Adam leaves them (and their moments) bitwise unchanged.
    """

    def __init__(self, nets: Networks, *, train: Any, plan: Any, dist: Any, device: torch.device, gens: Any,
                 autocast: Callable[[], ContextManager], daug: augment.DAugment | None = None,
                 d_frozen: frozenset[int] = frozenset(), flip: bool = False):
        self.nets, self.t, self.plan, self.dist, self.device = nets, train, plan, dist, device
        self.gens, self.autocast, self.d_frozen, self.flip_reals = gens, autocast, d_frozen, flip
        self.daug = daug or augment.DAugment.none()
        self.pl_mean = torch.zeros((), device=device)
        # every dataset image's label (set by the trainer for a conditional model): fake labels are drawn from it
        self.label_pool: torch.Tensor | None = None

    # state beyond the networks that a checkpoint must carry
    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean.detach().cpu()}

    def load_state_dict(self, extra: dict) -> None:
        if "pl_mean" in extra:
            self.pl_mean = extra["pl_mean"].to(self.device)

    def step(self, data: Iterator[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------- pieces
    def latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.nets.G.z_dim, generator=self.gens.z).to(self.device)

    def fake_labels(self, n: int) -> torch.Tensor | None:
        """Labels for ``n`` fakes: those of uniformly drawn dataset images (None for an unconditional model)."""
        if self.label_pool is None:
            return None
        pick = torch.randint(len(self.label_pool), (n,), generator=self.gens.z)
        return self.label_pool[pick].to(self.device)

    def next_real(self, data: Iterator[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next (flipped) real batch and its labels (None when the data carries none)."""
        item = next(data)
        images, labels = item if isinstance(item, (tuple, list)) else (item, None)
        return self.flip(images), labels

    def generate(self, n: int, *, return_w: bool = False, c: torch.Tensor | None = None):
        """G(z[, c]) with style mixing at the recipe's probability for models with several latents."""
        G = self.nets.G
        z = self.latents(n)
        mixing = self.t.style_mixing > 0 and getattr(G, "n_latent", None)
        if not mixing and not return_w:
            return G(z) if c is None else G(z, c)
        w = G.mapping(z) if c is None else G.mapping(z, c)
        if mixing and torch.rand((), generator=self.gens.aug).item() < self.t.style_mixing:
            w2 = G.mapping(self.latents(n)) if c is None else G.mapping(self.latents(n), c)
            cut = int(torch.randint(1, G.n_latent, (), generator=self.gens.aug))
            w = torch.cat([w[:, :cut], w2[:, cut:]], dim=1)
        if return_w:
            return G.synthesis(w), w
        return G.synthesis(w)

    def flip(self, real: torch.Tensor) -> torch.Tensor:
        """Dataset x-flips (``data.flip``): part of the data, not of D's augmentation."""
        if not self.flip_reals:
            return real
        return augment.bcr.flip(real, self.gens.flip)

    def run_D(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """D's logits (fp32) on the augmented images (and their labels): the one door through which D sees
        anything. Augmentation changes the image, never its label."""
        x = self.daug(images)
        return (self.nets.D(x) if c is None else self.nets.D(x, c)).float()

    def bcr_loss(self, fake: torch.Tensor, fake_logits: torch.Tensor, real: torch.Tensor,
                 real_logits: torch.Tensor, fake_c: torch.Tensor | None = None,
                 real_c: torch.Tensor | None = None) -> torch.Tensor:
        """bCR: D on bCR-augmented copies of the (detached) images should give the logits of the originals.

        Order with ADA/DiffAugment: bCR's augmentation acts on the clean image and D's augmentation
        is applied on top (``run_D``), so both sides of the consistency term are augmented by ADA just
        as every other D input is and D never sees an image outside the augmented distribution."""
        aug_fake = self.run_D(augment.bcr.bcr_augment(fake.detach(), self.gens.aug), fake_c)
        aug_real = self.run_D(augment.bcr.bcr_augment(real.detach(), self.gens.aug), real_c)
        return (self.t.bcr_fake * losses.consistency(aug_fake, fake_logits)
                + self.t.bcr_real * losses.consistency(aug_real, real_logits))

    def r1_weighted(self, penalty: torch.Tensor) -> torch.Tensor:
        """R1 as it enters the D loss: gamma/2, times the lazy interval (StyleGAN2's lazy regularisation)."""
        return self.t.r1 / 2 * penalty * self.t.r1_every

    def train_D_only(self) -> None:
        set_requires_grad(self.nets.G, False)
        set_requires_grad(self.nets.D, True, frozen=self.d_frozen)

    def clip_and_step_D(self) -> None:
        distributed.average_gradients(self.nets.D, self.dist)
        if self.t.d_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.nets.D.parameters(), self.t.d_clip)
        self.nets.d_opt.step()


class AlternatingUpdate(UpdateRule):
    """D step -> lazy R1 step -> G step -> lazy path-length step (the official StyleSwin/StyleNAT order)."""

    def step(self, data: Iterator[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        stats, reals = self.d_step(data)
        if self.t.r1 > 0 and step % self.t.r1_every == 0:
            stats["R1"] = self.r1_step(reals)
        stats["G"] = self.g_step()
        if self.t.pl_weight > 0 and step % self.t.g_reg_every == 0:
            stats["PL"] = self.pl_step()
        return stats

    def d_step(self, data: Iterator[Any]) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, Any]]]:
        self.train_D_only()
        self.nets.D.zero_grad(set_to_none=True)
        reals, total, cr_total = [], 0.0, 0.0
        for _ in range(self.plan.accumulation):
            real, real_c = self.next_real(data)
            reals.append((real, real_c))
            with self.autocast():
                with torch.no_grad():
                    fake_c = self.fake_labels(real.shape[0])
                    fake = self.generate(real.shape[0], c=fake_c)
                fake_logits, real_logits = self.run_D(fake, fake_c), self.run_D(real, real_c)
                self.daug.observe(real_logits)
                loss = losses.d_logistic(real_logits, fake_logits)
                if self.t.bcr:
                    cr = self.bcr_loss(fake, fake_logits, real, real_logits, fake_c, real_c)
                    loss = loss + cr
                    cr_total = cr_total + cr.detach()
            (loss / self.plan.accumulation).backward()
            total = total + loss.detach()
        self.clip_and_step_D()
        stats = {"D": total / self.plan.accumulation}
        if self.t.bcr:
            stats["bCR"] = cr_total / self.plan.accumulation
        return stats, reals

    def r1_step(self, reals: list[tuple[torch.Tensor, Any]]) -> torch.Tensor:
        """R1 on the reals of this step; with augmentation the gradient is taken w.r.t. the *un*augmented
        image through the (differentiable) augmentation, as stylegan2-ada-pytorch does."""
        D = self.nets.D
        D.zero_grad(set_to_none=True)
        total = 0.0
        for real, real_c in reals:
            real = real.detach().requires_grad_(True)
            logits = self.run_D(real, real_c)
            self.daug.observe(logits)   # the lazy R1 pass's real logits count in r_t too (official loss.py)
            penalty = losses.r1_penalty(logits, real)
            loss = self.r1_weighted(penalty) + 0 * logits[0].sum()
            (loss / len(reals)).backward()
            total = total + penalty.detach()
        distributed.average_gradients(D, self.dist)
        self.nets.d_opt.step()
        return total / len(reals)

    def g_step(self) -> torch.Tensor:
        G = self.nets.G
        set_requires_grad(G, True)
        set_requires_grad(self.nets.D, False)
        G.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(self.plan.accumulation):
            with self.autocast():
                c = self.fake_labels(self.plan.micro)
                loss = losses.g_nonsaturating(self.run_D(self.generate(self.plan.micro, c=c), c))
            (loss / self.plan.accumulation).backward()
            total = total + loss.detach()
        distributed.average_gradients(G, self.dist)
        self.nets.g_opt.step()
        return total / self.plan.accumulation

    def pl_step(self) -> torch.Tensor:
        G = self.nets.G
        G.zero_grad(set_to_none=True)
        n = max(1, self.plan.micro // 2)
        images, w = self.generate(n, return_w=True, c=self.fake_labels(n))
        penalty, self.pl_mean, _ = losses.path_length_penalty(images, w, self.pl_mean)
        loss = self.t.pl_weight * self.t.g_reg_every * penalty + 0 * images[0, 0, 0, 0]
        loss.backward()
        distributed.average_gradients(G, self.dist)
        self.nets.g_opt.step()
        return penalty.detach()


class SimultaneousUpdate(UpdateRule):
    """HiT's update (``train.update = "simultaneous"``): one forward of G and D per micro-batch. D learns
    from its logistic loss (+ bCR, + R1 when due, inside the same step), G from the non-saturating loss
    on the *same* fake logits, so both see the pre-update D; each network gets gradients of its own
    loss only, and both optimizers step once."""

    def step(self, data: Iterator[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        G, D = self.nets.G, self.nets.D
        set_requires_grad(G, True)
        set_requires_grad(D, True, frozen=self.d_frozen)
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        g_params = [p for p in G.parameters() if p.requires_grad]
        d_params = [p for p in D.parameters() if p.requires_grad]
        r1_now = self.t.r1 > 0 and step % self.t.r1_every == 0
        acc = self.plan.accumulation
        totals = {"D": 0.0, "G": 0.0, "bCR": 0.0, "R1": 0.0}
        for _ in range(acc):
            real, real_c = self.next_real(data)
            if r1_now:
                real = real.detach().requires_grad_(True)
            with self.autocast():
                fake_c = self.fake_labels(real.shape[0])
                fake = self.generate(real.shape[0], c=fake_c)
                fake_logits, real_logits = self.run_D(fake, fake_c), self.run_D(real, real_c)
                self.daug.observe(real_logits)
                d_loss = losses.d_logistic(real_logits, fake_logits)
                g_loss = losses.g_nonsaturating(fake_logits)
                if self.t.bcr:
                    cr = self.bcr_loss(fake, fake_logits, real, real_logits, fake_c, real_c)
                    d_loss = d_loss + cr
                    totals["bCR"] = totals["bCR"] + cr.detach()
            if r1_now:
                penalty = losses.r1_penalty(real_logits, real)
                d_loss = d_loss + self.r1_weighted(penalty)
                totals["R1"] = totals["R1"] + penalty.detach()
            d_grads = torch.autograd.grad(d_loss / acc, d_params, retain_graph=True, allow_unused=True)
            g_grads = torch.autograd.grad(g_loss / acc, g_params, allow_unused=True)
            for params, grads in ((d_params, d_grads), (g_params, g_grads)):
                for p, g in zip(params, grads):
                    g = torch.zeros_like(p) if g is None else g  # same tensors on every rank for all-reduce
                    p.grad = g if p.grad is None else p.grad + g
            totals["D"] = totals["D"] + d_loss.detach()
            totals["G"] = totals["G"] + g_loss.detach()
        distributed.average_gradients(G, self.dist)
        self.clip_and_step_D()
        self.nets.g_opt.step()
        keep = ["D", "G"] + (["bCR"] if self.t.bcr else []) + (["R1"] if r1_now else [])
        return {k: totals[k] / acc for k in keep}


RULES: dict[str, type[UpdateRule]] = {"alternating": AlternatingUpdate, "simultaneous": SimultaneousUpdate}


def make_update(name: str, nets: Networks, **kwargs: Any) -> UpdateRule:
    """The update rule named by ``train.update`` (the recipe validates the name)."""
    return RULES[name](nets, **kwargs)
