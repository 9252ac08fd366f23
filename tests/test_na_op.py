"""natgan.ops.neighborhood_attention against a literal per-query oracle of the old NATTEN semantics.

The oracle below is written from the semantics alone (window shifted inside its dilation group,
RPB indexed by key - query in dilated steps + K - 1) and shares no code with natgan.ops.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import natgan.ops
from natgan.ops import available_backends, neighborhood_attention
from natgan.ops import dispatch, na_torch


pytestmark = pytest.mark.usefixtures("one_thread")


def _window(i: int, length: int, kernel: int, dilation: int) -> list[int]:
    group = i % dilation
    group_size = -(-(length - group) // dilation)
    start = min(max(i // dilation - kernel // 2, 0), group_size - kernel)
    return [(start + t) * dilation + group for t in range(kernel)]


def oracle(q, k, v, kernel, dilation, rpb=None, scale=None):
    """Per-query loop in the input dtype (use float64); differentiable through autograd."""
    (kh, kw), (dh, dw) = _pair(kernel), _pair(dilation)
    batch, height, width, heads, dim = q.shape
    scale = dim**-0.5 if scale is None else scale
    rows_out = []
    for i in range(height):
        rows = _window(i, height, kh, dh)
        row_out = []
        for j in range(width):
            cols = _window(j, width, kw, dw)
            r_idx = torch.tensor(rows)[:, None].expand(kh, kw).reshape(-1)
            c_idx = torch.tensor(cols)[None, :].expand(kh, kw).reshape(-1)
            keys, values = k[:, r_idx, c_idx], v[:, r_idx, c_idx]  # [B, KK, h, D]
            logits = torch.einsum("bhd,bnhd->bhn", q[:, i, j] * scale, keys)
            if rpb is not None:
                logits = logits + rpb[:, (r_idx - i) // dh + kh - 1, (c_idx - j) // dw + kw - 1]
            row_out.append(torch.einsum("bhn,bnhd->bhd", logits.softmax(-1), values))
        rows_out.append(torch.stack(row_out, dim=1))
    return torch.stack(rows_out, dim=1)


def _pair(x):
    return (x, x) if isinstance(x, int) else tuple(x)


def _inputs(height, width, kernel, *, batch=2, heads=2, dim=8, dtype=torch.float64, grad=False, v_dim=None):
    kh, kw = _pair(kernel)
    make = lambda *shape: torch.randn(*shape, dtype=dtype, requires_grad=grad)  # noqa: E731
    q, k = make(batch, height, width, heads, dim), make(batch, height, width, heads, dim)
    v = make(batch, height, width, heads, v_dim or dim)
    rpb = make(heads, 2 * kh - 1, 2 * kw - 1)
    return q, k, v, rpb


# (H, W, kernel, dilation): non-square, odd, sizes not divisible by d, kernels 3..13
CASES = [
    (8, 8, 3, 1),
    (9, 7, 7, 1),
    (16, 13, 5, 2),
    (23, 19, 3, 5),
    (12, 12, 5, 2),
    (13, 11, 3, 3),
    (16, 16, 7, 2),
    (10, 12, 9, 1),
    (12, 22, 11, (1, 2)),
    (13, 14, 13, 1),
    (12, 10, (3, 5), (2, 1)),
]
# every dilation up to size // kernel
CASES += [(13, 15, 3, d) for d in range(1, 5)] + [(15, 16, 5, d) for d in range(1, 4)]


@pytest.mark.parametrize("height,width,kernel,dilation", CASES)
def test_torch_backend_matches_oracle_forward_and_gradients(height, width, kernel, dilation):
    q, k, v, rpb = _inputs(height, width, kernel, grad=True)
    out = neighborhood_attention(q, k, v, kernel, dilation, rpb=rpb, backend="torch")
    expected = oracle(q, k, v, kernel, dilation, rpb)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, rpb), grad_out)
    want = torch.autograd.grad(expected, (q, k, v, rpb), grad_out)
    for name, a, b in zip("q k v rpb".split(), got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=lambda m: f"d{name}: {m}")  # noqa: B023


def test_torch_backend_without_rpb_custom_scale_and_wider_values():
    q, k, v, _ = _inputs(11, 10, 5, v_dim=6, grad=True)
    out = neighborhood_attention(q, k, v, 5, 2, scale=0.7, backend="torch")
    expected = oracle(q, k, v, 5, 2, None, scale=0.7)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    got = torch.autograd.grad(out.square().sum(), (q, k, v))
    want = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_torch_backend_chunking_does_not_change_the_result(monkeypatch):
    q, k, v, rpb = _inputs(19, 17, 3, grad=True)
    one_chunk = neighborhood_attention(q, k, v, 3, 2, rpb=rpb, backend="torch")
    grads = torch.autograd.grad(one_chunk.sum(), (q, k, v, rpb))
    monkeypatch.setattr(na_torch, "_chunk_budget", lambda device: 1)  # one tile per chunk
    many_chunks = neighborhood_attention(q, k, v, 3, 2, rpb=rpb, backend="torch")
    torch.testing.assert_close(many_chunks, one_chunk, rtol=0, atol=1e-14)
    for a, b in zip(torch.autograd.grad(many_chunks.sum(), (q, k, v, rpb)), grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("height,width,kernel,dilation", [(6, 5, 3, 1), (7, 9, 3, 2), (5, 10, (3, 5), (1, 2))])
def test_torch_backend_passes_gradcheck(height, width, kernel, dilation):
    q, k, v, rpb = _inputs(height, width, kernel, batch=1, heads=2, dim=3, grad=True)
    fn = lambda *t: neighborhood_attention(*t[:3], kernel, dilation, rpb=t[3], backend="torch")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, rpb), eps=1e-6, atol=1e-8, fast_mode=True)


def test_torch_backend_bfloat16_is_close_and_accepts_a_float32_rpb():
    q, k, v, rpb = _inputs(12, 12, 5, dim=16, dtype=torch.float32)
    expected = oracle(q.double(), k.double(), v.double(), 5, 2, rpb.double())
    out = neighborhood_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 5, 2, rpb=rpb, backend="torch")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=5e-2)


@pytest.mark.parametrize("height,width,kernel,dilation", [(8, 8, 3, 1), (16, 13, 5, 2), (23, 19, 3, 5), (14, 10, 7, 1)])
def test_flex_backend_forward_matches_oracle(height, width, kernel, dilation):
    q, k, v, rpb = _inputs(height, width, kernel, dim=16, dtype=torch.float32)
    expected = oracle(q.double(), k.double(), v.double(), kernel, dilation, rpb.double())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it materialises the scores
        out = neighborhood_attention(q, k, v, kernel, dilation, rpb=rpb, backend="flex")
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("height,width,kernel,dilation", [(8, 8, 3, 1), (16, 13, 5, 2), (23, 19, 3, 5), (12, 12, 7, 1)])
def test_natten_backend_and_natten_na2d_match_oracle_without_rpb(height, width, kernel, dilation):
    natten = pytest.importorskip("natten")
    q, k, v, _ = _inputs(height, width, kernel, dim=16, dtype=torch.float32)
    expected = oracle(q.double(), k.double(), v.double(), kernel, dilation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = neighborhood_attention(q, k, v, kernel, dilation, backend="natten")
        direct = natten.na2d(q, k, v, kernel_size=kernel, dilation=dilation)
        torch_backend = neighborhood_attention(q, k, v, kernel, dilation, backend="torch")
    for out in (ours, direct, torch_backend):
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(torch_backend, direct, rtol=0, atol=2e-5)


def test_kernel_times_dilation_larger_than_the_map_is_refused():
    q, k, v, _ = _inputs(12, 20, 7)
    message = "neighborhood attention: kernel 7 x dilation 2 = 14 exceeds the feature map height 12"
    with pytest.raises(ValueError, match=message):
        neighborhood_attention(q, k, v, 7, 2)
    with pytest.raises(ValueError, match="kernel 5 x dilation 5 = 25 exceeds the feature map width 20"):
        neighborhood_attention(q, k, v, 5, (2, 5))


@pytest.mark.parametrize("kernel", [4, 1, (3, 2)])
def test_even_or_tiny_kernels_are_refused(kernel):
    q, k, v, _ = _inputs(12, 12, 3)
    with pytest.raises(ValueError, match="kernel size must be odd and >= 3"):
        neighborhood_attention(q, k, v, kernel)


def test_bad_rpb_shape_and_layout_are_refused():
    q, k, v, rpb = _inputs(8, 8, 3)
    with pytest.raises(ValueError, match=r"rpb must have shape \[heads, 2k-1, 2k-1\] = \[2, 9, 9\]"):
        neighborhood_attention(q, k, v, 5, rpb=rpb)
    with pytest.raises(ValueError, match=r"must be \[batch, H, W, heads, head_dim\]"):
        neighborhood_attention(q[0], k[0], v[0], 3)


def test_natten_and_flex_refuse_what_they_cannot_do_on_cpu(monkeypatch):
    from natgan.ops import na_natten

    monkeypatch.setattr(na_natten, "natten_available", lambda: True)  # refused before natten is imported
    q, k, v, rpb = _inputs(8, 8, 3, dim=16, dtype=torch.float32)
    with pytest.raises(ValueError, match="'natten' has no relative positional bias"):
        neighborhood_attention(q, k, v, 3, rpb=rpb, backend="natten")
    q.requires_grad_(True)
    with pytest.raises(RuntimeError, match="'natten' has no backward on CPU"):
        neighborhood_attention(q, k, v, 3, backend="natten")
    with pytest.raises(RuntimeError, match="'flex' has no backward on cpu"):
        neighborhood_attention(q, k, v, 3, rpb=rpb, backend="flex")


@pytest.fixture
def spies(monkeypatch):
    """Replace each backend by a recorder so that selection is observable without running it."""
    calls = []
    for name in ("torch", "natten", "flex"):
        def record(*args, _name=name, **kwargs):
            calls.append(_name)
            return args[0]
        monkeypatch.setattr(dispatch, f"na2d_{name}", record)
    monkeypatch.setattr(dispatch, "check_natten_supports", lambda *a: None)
    monkeypatch.setattr(dispatch, "check_flex_supports", lambda *a: None)
    return calls


def test_backend_selection_argument_then_environment_then_auto(monkeypatch, spies):
    q, k, v, _ = _inputs(8, 8, 3)
    monkeypatch.delenv("NATGAN_NA_BACKEND", raising=False)
    neighborhood_attention(q, k, v, 3)  # CPU auto -> torch
    monkeypatch.setenv("NATGAN_NA_BACKEND", "flex")
    neighborhood_attention(q, k, v, 3)
    monkeypatch.setenv("NATGAN_NA_BACKEND", "NATTEN")
    neighborhood_attention(q, k, v, 3)
    neighborhood_attention(q, k, v, 3, backend="torch")  # the argument beats the environment
    monkeypatch.setenv("NATGAN_NA_BACKEND", "auto")
    neighborhood_attention(q, k, v, 3)
    assert spies == ["torch", "flex", "natten", "torch", "torch"]


def test_unknown_backend_names_are_refused(monkeypatch):
    q, k, v, _ = _inputs(8, 8, 3)
    monkeypatch.setenv("NATGAN_NA_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match=r"unknown backend 'cuda-magic' \(\$NATGAN_NA_BACKEND\)"):
        neighborhood_attention(q, k, v, 3)
    with pytest.raises(ValueError, match=r"unknown backend 'fast' \(backend argument\)"):
        neighborhood_attention(q, k, v, 3, backend="fast")


def test_available_backends_lists_what_imports_here():
    found = available_backends()
    assert found[0] == "torch" and set(found) <= {"torch", "natten", "flex"}
    assert natgan.ops.__all__ == ["available_backends", "neighborhood_attention"]


def test_views_of_a_packed_qkv_buffer_are_accepted():
    qkv = torch.randn(2, 9, 11, 3, 2, 4, dtype=torch.float64, requires_grad=True)  # [B, H, W, 3, heads, D]
    q, k, v = qkv.unbind(3)
    out = neighborhood_attention(q, k, v, 3, 3, backend="torch")
    torch.testing.assert_close(out, oracle(q, k, v, 3, 3), rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), qkv)
    (expected,) = torch.autograd.grad(oracle(q, k, v, 3, 3).sum(), qkv)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("wanted", ["q", "k", "v", "rpb", "qk"])
def test_torch_backend_gradients_of_input_subsets(wanted):
    q, k, v, rpb = _inputs(10, 9, 3)
    tensors = dict(q=q, k=k, v=v, rpb=rpb)
    leaves = [tensors[name].requires_grad_(True) for name in ("q", "k", "v", "rpb") if name in wanted]
    out = neighborhood_attention(q, k, v, 3, 2, rpb=rpb, backend="torch")
    expected = oracle(q, k, v, 3, 2, rpb)
    grad_out = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, leaves, grad_out), torch.autograd.grad(expected, leaves, grad_out)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- torch.compile friendliness


@pytest.mark.parametrize("with_rpb", [True, False])
def test_custom_ops_pass_opcheck(with_rpb):
    """Schema, fake (meta) shapes, autograd registration and AOT dispatch of the registered ops."""
    from natgan.ops.na_torch import na2d_backward_op, na2d_forward_op

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 9, 10, 2, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True) if with_rpb else None
    torch.library.opcheck(na2d_forward_op, (q, k, v, rpb, 3, 3, 2, 3, 0.3, True))
    frozen = (q.detach(), k.detach(), v.detach(), None if rpb is None else rpb.detach())
    torch.library.opcheck(na2d_forward_op, (*frozen, 3, 3, 1, 1, 0.3, False))
    out, attn = na2d_forward_op(q, k, v, rpb, 3, 3, 2, 3, 0.3, True)
    grads = (torch.randn_like(out), q, k, v, rpb, attn.detach(), 3, 3, 2, 3, 0.3, True, True, True, with_rpb)
    torch.library.opcheck(na2d_backward_op, tuple(t.detach() if torch.is_tensor(t) else t for t in grads))


def test_stylenat_generator_compiles_without_graph_breaks():
    """The op is opaque to dynamo: one graph for the whole generator (41 breaks before it was a custom op)."""
    import torch._dynamo as dynamo

    from natgan.models import create

    torch.manual_seed(0)
    G = create("stylenat", resolution=32, style_dim=64, n_mlp=4, channels=[64, 64, 64, 32], min_heads=2,
               kernel_size=5).generator.eval()
    z = torch.randn(2, 64)
    dynamo.reset()
    try:
        explained = dynamo.explain(G)(z)
    finally:
        dynamo.reset()
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
