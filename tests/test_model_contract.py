"""The generator/discriminator contract, checked for every registered model (as timm tests every
entry of ``list_models()``): a model added to the registry is covered without touching this file,
except for giving its family a reduced configuration in ``reduced_models.py``. Test-only models
(names starting with ``_``, registered by other test modules) are left out."""

import pytest
import torch

from natgan.models import create, list_models
from natgan.sampling import compute_w_avg
from reduced_models import REDUCED, family

SPECS = [spec for spec in list_models() if not spec.name.startswith("_")]
NAMES = [spec.name for spec in SPECS]


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    torch.manual_seed(0)
    pair = create(request.param, **REDUCED[family(request.param)])
    G = pair.generator.eval()
    if hasattr(G, "noise_mode"):
        G.noise_mode = "const"  # the same image for the same w, so truncation can be compared exactly
    return request.param, pair.config, G, pair.discriminator.eval()


def test_registry_metadata():
    assert {"stylenat", "styleswin", "hit-b", "ganformer", "stylegan2"} <= set(NAMES)
    for spec in SPECS:
        assert spec.description and spec.name == spec.name.lower()
        assert spec.paper_params_g is None or spec.paper_params_g > 0
        assert spec.make_config().resolution >= 8
    # the papers' figures live beside the parameter counts in the registry (bench shows them)
    assert {n: s.paper_img_per_s for n, s in zip(NAMES, SPECS) if s.paper_img_per_s} == {
        "stylenat": 32.56, "styleswin": 30.20, "stylegan2": 95.79, "hit": 52.09, "hit-b": 52.09, "hit-s": 86.64,
        "hit-l": 20.67}


def test_attributes(model):
    name, cfg, G, _ = model
    assert isinstance(G.z_dim, int) and G.z_dim > 0
    assert G.resolution == cfg.resolution
    assert G.normalization in ("imagenet", "symmetric")
    assert G.n_latent is None or (isinstance(G.n_latent, int) and G.n_latent >= 1)


def test_mapping_synthesis_and_discriminator_shapes(model):
    name, cfg, G, D = model
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        w = G.mapping(z)
        assert w.shape[0] == 2
        if G.n_latent is not None:           # style mixing swaps rows of dim 1
            assert w.ndim == 3 and w.shape[1] == G.n_latent
        image = G.synthesis(w)
        assert image.shape == (2, 3, G.resolution, G.resolution) and torch.isfinite(image).all()
        torch.testing.assert_close(G(z), image)  # G(z) is synthesis(mapping(z))
        assert D(image).shape == (2, 1)


def test_truncation(model):
    name, cfg, G, _ = model
    z = torch.randn(3, G.z_dim)
    w_avg = compute_w_avg(G, num=64)
    with torch.no_grad():
        w = G.mapping(z)
        assert w_avg.shape == w.shape[1:]
        torch.testing.assert_close(G(z, psi=1.0), G.synthesis(w))
        centre = G(z, psi=0.0, w_avg=w_avg)                        # psi = 0: every latent becomes the centre
        torch.testing.assert_close(centre, G.synthesis(w_avg.expand_as(w)))
        torch.testing.assert_close(G(z, psi=0.5, w_avg=w_avg), G.synthesis(torch.lerp(w_avg.expand_as(w), w, 0.5)))
        # the centre belongs to the caller: no model truncates towards a private average or ignores psi
        with pytest.raises(ValueError, match="needs w_avg"):
            G(z, psi=0.7)
