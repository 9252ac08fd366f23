"""ADA's controller (Karras et al. 2020, Section 3): the overfitting heuristic r_t and the update of ``p``.

Kept apart from the pipe (:mod:`natgan.augment.ada_pipe`): the pipe applies augmentations at a given
``p``; this decides ``p`` from D's logits on reals, and is what the checkpoint stores to resume a run.
"""

from __future__ import annotations

import torch


class AdaController:
    """The overfitting heuristic r_t = E[sign(D(real))] and the paper's p update.

    Signs of D's real logits are summed on the device (no host sync per step); every ``interval``
    steps r_t is formed over those steps (all ranks together) and p moves by
    ``sign(r_t - target) * batch * interval / (kimg * 1000)``, so p can cross [0, 1] in ``kimg``
    thousand images. As in stylegan2-ada-pytorch's training loop, p is clamped at 0 only: while D keeps
    overfitting it may climb past 1 (the pipe's probability saturates at 1, :class:`~natgan.augment.ada_pipe.Draw`),
    and it then takes as many adjustments to come back; clamping at 1 would make the run react sooner than
    the official one (in a saturating run 260 of 300 adjustments differed). With ``adaptive = False`` p stays
    fixed but r_t is still measured. The update rules observe every D pass on reals that computes logits,
    the lazy R1 pass included, as the official loss reports the signs of every such phase.
    """

    def __init__(self, *, p: float, target: float, interval: int, kimg: float, adaptive: bool):
        self.p, self.target, self.interval, self.kimg, self.adaptive = float(p), target, interval, kimg, adaptive
        self.sign_sum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.steps = 0
        self.rt = float("nan")

    def observe(self, real_logits: torch.Tensor) -> None:
        signs = torch.sign(real_logits.detach().float()).sum()
        n = torch.tensor(float(real_logits.numel()), device=signs.device)
        self.sign_sum = signs if self.sign_sum is None else self.sign_sum.to(signs.device) + signs
        self.count = n if self.count is None else self.count.to(n.device) + n

    def after_step(self, batch: int, reduce=lambda t: t) -> None:
        self.steps += 1
        if self.steps % self.interval or self.sign_sum is None:
            return
        totals = reduce(torch.stack([self.sign_sum, self.count]))
        self.rt = float(totals[0]) / float(totals[1])   # in float64, as the official statistics: r_t == target exactly
        self.sign_sum = self.count = None
        if self.adaptive:
            self.p = self.adjusted(self.p, self.rt, batch)

    def adjusted(self, p: float, rt: float, batch: int) -> float:
        step = (batch * self.interval) / (self.kimg * 1000)
        direction = (rt > self.target) - (rt < self.target)
        return max(p + direction * step, 0.0)

    def state_dict(self) -> dict:
        zero = torch.zeros(())
        return {"p": self.p, "rt": self.rt, "steps": self.steps,
                "sign_sum": zero if self.sign_sum is None else self.sign_sum.detach().cpu(),
                "count": zero if self.count is None else self.count.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.rt, self.steps = float(state["p"]), float(state["rt"]), int(state["steps"])
        has = float(state["count"]) > 0
        self.sign_sum = state["sign_sum"].clone() if has else None  # moves to D's device at the next observe
        self.count = state["count"].clone() if has else None
