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


# --------------------------------------------------------------------------------- class conditioning

# sha256 (first 24 hex digits) over the (key, bytes) of every state-dict entry of each family's reduced
# model built after torch.manual_seed(0), recorded at 376f18c, before conditioning existed: num_classes = 0
# must keep the parameters, their names and the RNG draw order of the initialisation exactly as they were.
UNCONDITIONAL_INIT_DIGESTS = {
    "ganformer": ("97976c1fbaef5025c54f2a53", "ef1d73f28586ccedee0db106"),
    "hit": ("d64d68727e63759ebe8df3b0", "540c00727b502540588dfb57"),
    "stylegan2": ("bfaa4425d398d5038715fb2c", "93e56933abd9847952848714"),
    "stylenat": ("5ab9acfd347d0efa1a8fcd94", "61f8d6b9158404df16f2186b"),
    "styleswin": ("60aaf7270a3da54583a77b01", "68b17a875958e7b166a66554"),
}


def _digest(state_dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in state_dict.items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@pytest.mark.parametrize("fam", sorted(UNCONDITIONAL_INIT_DIGESTS))
def test_unconditional_models_are_bitwise_what_they_were(fam):
    assert set(UNCONDITIONAL_INIT_DIGESTS) == set(REDUCED)
    torch.manual_seed(0)
    pair = create(fam, **REDUCED[fam])
    assert pair.config.num_classes == 0
    G, D = pair.generator.eval(), pair.discriminator.eval()
    assert (_digest(G.state_dict()), _digest(D.state_dict())) == UNCONDITIONAL_INIT_DIGESTS[fam]
    assert G.num_classes == 0 and D.num_classes == 0
    if hasattr(G, "noise_mode"):
        G.noise_mode = "const"
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        image = G(z)
        assert torch.equal(G(z, None), image) and torch.equal(D(image, None), D(image))
        # an unconditional network refuses labels rather than ignoring them
        with pytest.raises(ValueError, match="unconditional"):
            G(z, torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="unconditional"):
            D(image, torch.tensor([0, 1]))


@pytest.fixture(scope="module", params=NAMES)
def conditional_model(request):
    from reduced_models import reduced

    torch.manual_seed(0)
    pair = create(request.param, **reduced(request.param, num_classes=3))
    G = pair.generator.eval()
    if hasattr(G, "noise_mode"):
        G.noise_mode = "const"
    return request.param, pair.config, G, pair.discriminator.eval()


def test_conditional_contract(conditional_model):
    name, cfg, G, D = conditional_model
    assert G.num_classes == D.num_classes == cfg.num_classes == 3
    z = torch.randn(3, G.z_dim)
    c = torch.tensor([0, 1, 2])
    with torch.no_grad():
        w = G.mapping(z, c)
        image = G.synthesis(w)
        assert image.shape == (3, 3, G.resolution, G.resolution) and torch.isfinite(image).all()
        torch.testing.assert_close(G(z, c), image)
        # class indices and the official one-hot vectors are the same labels
        torch.testing.assert_close(G(z, torch.eye(3)), image)
        torch.testing.assert_close(D(image, c), D(image, torch.eye(3)))
        assert D(image, c).shape == (3, 1)
        # the label changes the image and the logit
        other = torch.tensor([1, 2, 0])
        assert not torch.allclose(G(z, other), image)
        assert not torch.allclose(D(image, other), D(image, c))
        # psi = 0 lands on the caller's centre (here a per-class centre)
        w_avg = G.mapping(torch.randn(16, G.z_dim), torch.ones(16, dtype=torch.long)).mean(0)
        torch.testing.assert_close(G(z, c, psi=0.0, w_avg=w_avg), G.synthesis(w_avg.expand_as(w)))
        for bad in (None, torch.tensor([0, 1, 3]), torch.tensor([-1, 0, 0]), torch.zeros(3, 4)):
            with pytest.raises(ValueError):
                G(z, bad)
            with pytest.raises(ValueError):
                D(image, bad)


def test_discriminator_projection_head_is_stylegan2_ada_s(conditional_model):
    """stylegan2-ada-pytorch DiscriminatorEpilogue: out = (x * cmap).sum(1, keepdim) / sqrt(cmap_dim), with
    cmap = MappingNetwork(z_dim=0)(c) = 8 lrelu FCs (lr 0.01) of normalize_2nd_moment(embed(one_hot(c)));
    GANformer's official epilogue instead picks the label's output, (x * c).sum(1, keepdim)."""
    import math

    name, cfg, G, D = conditional_model
    c = torch.tensor([2, 0, 1, 1])
    image = torch.randn(4, 3, G.resolution, G.resolution)
    features = {}
    inside_head = {id(m) for m in D.projection.modules()}
    head = [m for m in D.modules() if (isinstance(m, torch.nn.Linear) or type(m).__name__ == "EqualLinear")
            and id(m) not in inside_head][-1]                # the layer that used to emit the logit
    handle = head.register_forward_hook(lambda m, i, o: features.update(x=o))
    with torch.no_grad():
        logits = D(image, c)
    handle.remove()
    x = features["x"]
    onehot = torch.nn.functional.one_hot(c, 3).float()
    if family(name) == "ganformer":
        assert x.shape == (4, 3)
        torch.testing.assert_close(logits, (x * onehot).sum(1, keepdim=True))
        return
    mapping = D.projection.mapping
    emb = mapping.embed.embed
    y = onehot @ (emb.weight * emb.scale).t() + emb.bias
    y = y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    assert len(mapping.layers) == 8
    for fc in mapping.layers:
        assert fc.lr_mul == 0.01
        y = torch.nn.functional.leaky_relu(y @ (fc.weight * fc.scale).t() + fc.bias * fc.lr_mul, 0.2) * math.sqrt(2)
    assert x.shape == y.shape == (4, D.projection.cmap_dim)
    torch.testing.assert_close(logits, (x * y).sum(1, keepdim=True) / math.sqrt(y.shape[1]))


@pytest.mark.parametrize("name", ["stylegan2", "stylenat"])
def test_mapping_input_is_stylegan2_ada_s(name):
    """MappingNetwork.forward: x = cat([normalize_2nd_moment(z), normalize_2nd_moment(embed(c))]) enters fc0."""
    from reduced_models import reduced

    torch.manual_seed(0)
    G = create(name, **reduced(name, num_classes=4)).generator
    seen = {}
    handle = G.style[1].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    z, c = torch.randn(3, G.z_dim), torch.tensor([3, 0, 2])
    with torch.no_grad():
        G.mapping(z, c)
    handle.remove()
    emb = G.label_embed.embed
    y = torch.nn.functional.one_hot(c, 4).float() @ (emb.weight * emb.scale).t() + emb.bias

    def norm(v):
        return v * (v.square().mean(1, keepdim=True) + 1e-8).rsqrt()

    torch.testing.assert_close(seen["x"], torch.cat([norm(z), norm(y)], 1))
    assert emb.weight.shape == (G.w_dim, 4) and emb.lr_mul == 1.0
