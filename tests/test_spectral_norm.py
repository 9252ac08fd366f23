"""A never-trained spectral-norm discriminator in eval mode (natgan.models.spectral_norm).

Pinned behaviour: nat-gan builds the StyleSwin/StyleNAT D as the official code does (``torch.nn.utils.spectral_norm``,
random u, v, no power iteration at construction), so its eval-mode logits before any training step are huge,
exactly as the official D's; ``settle`` runs the power-iteration steps training would run, bit-identically, and
nothing in nat-gan that runs D in eval mode advances the vectors (training stays the official one).

The official formula re-derived here is torch's eval-mode spectral norm, which the official discriminators call
(microsoft/StyleSwin and SHI-Labs/StyleNAT ``models/discriminator.py``: ``nn.utils.spectral_norm`` around every
conv and linear when ``sn=True``): ``W / (u . (W v))`` with the stored u, v.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from natgan.models import create
from natgan.models.spectral_norm import eval_sigma, settle, spectral_norm_layers
from natgan.train.freeze import module_levels
from reduced_models import REDUCED

FAMILIES = ("stylenat", "styleswin")   # the wavelet D with sn=True (their default, and every shipped recipe's)


def _fresh_d(name: str):
    torch.manual_seed(0)
    return create(name, **REDUCED[name]).discriminator


def _images():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _vectors(D) -> list[torch.Tensor]:
    return [getattr(layer, hook.name + suffix).clone() for layer, hook in spectral_norm_layers(D)
            for suffix in ("_u", "_v")]


@pytest.mark.parametrize("name", FAMILIES)
def test_fresh_eval_logits_follow_the_stored_vectors_as_torch_and_the_official_code(name):
    D = _fresh_d(name).eval()
    layers = spectral_norm_layers(D)
    assert len(layers) == 7                                  # every conv and linear of the reduced D
    with torch.no_grad():
        fresh = D(_images())
    gains = []
    for layer, hook in layers:
        w = layer.weight_orig
        # eval mode divides by u . (W v) of the stored vectors: the official (torch) rule
        expected = w / torch.dot(layer.weight_u, torch.mv(w.flatten(1), layer.weight_v))
        torch.testing.assert_close(layer.weight, expected, rtol=0, atol=0)
        gains.append(abs(torch.linalg.matrix_norm(w.flatten(1), ord=2) / eval_sigma(layer, hook)).item())
    assert min(gains) > 1 and math.prod(gains) > 1e6          # every layer underestimates sigma
    assert fresh.abs().min() > 1e4                           # so the logits are garbage before any training


@pytest.mark.parametrize("name", FAMILIES)
def test_settle_equals_training_mode_forwards_bit_for_bit(name):
    D = _fresh_d(name)
    trained, settled = copy.deepcopy(D).train(), copy.deepcopy(D)
    x = _images()
    with torch.no_grad():
        for _ in range(2):
            train_logits = trained(x)
    assert settle(settled, 2) == 7
    assert all(torch.equal(a, b) for a, b in zip(_vectors(trained), _vectors(settled)))
    with torch.no_grad():
        settled_logits = settled.eval()(x)
    assert torch.equal(settled_logits, train_logits)          # eval after settling = the training forward's logits
    assert settled_logits.abs().max() < 10
    assert all(torch.equal(a, b) for a, b in zip(_vectors(D), _vectors(_fresh_d(name))))  # copies only
    assert settle(copy.deepcopy(D), 0) == 7
    with pytest.raises(ValueError, match="iterations"):
        settle(D, -1)


def test_eval_mode_uses_in_natgan_leave_the_vectors_alone():
    """Freeze-D's level probe runs D in eval mode on purpose: a training-mode probe would advance u, v and
    change the run's trajectory."""
    D = _fresh_d("stylenat")
    before = _vectors(D)
    assert module_levels(D, 16)
    assert D.training
    assert all(torch.equal(a, b) for a, b in zip(before, _vectors(D)))
