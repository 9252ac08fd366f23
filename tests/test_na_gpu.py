"""CUDA checks of neighborhood attention: flex (compiled) and torch backends vs the CPU float64 torch backend.

The CPU torch backend is itself checked against a literal oracle in test_na_op.py; here it is the
reference for GPU-sized problems, gradients (including the RPB gradient) included. The geometries are
those of StyleNAT-FFHQ-256 (kernel 7, dilations up to map/8) plus odd sizes that exercise padding
to a multiple of 128 tokens (pytorch#153799: NaN gradients with block_mask + score_mod otherwise).
"""

from __future__ import annotations

import pytest
import torch

from natgan.ops import dispatch, neighborhood_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

GEOMETRIES = [  # (H, W, kernel, dilation)
    (8, 8, 7, 1),
    (16, 16, 7, 2),
    (32, 32, 7, 4),
    (64, 64, 7, 1),
    (64, 64, 7, 8),
    (13, 19, 5, 2),
    (23, 19, 3, 5),
]


def _problem(height, width, kernel, heads=4, dim=32, batch=2):
    gen = torch.Generator().manual_seed(height * 1000 + width * 10 + kernel)
    q, k, v = (torch.randn(batch, height, width, heads, dim, generator=gen, dtype=torch.float64) for _ in range(3))
    rpb = 0.5 * torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(batch, height, width, heads, dim, generator=gen, dtype=torch.float64)
    return (q, k, v, rpb), grad_out


def _run(tensors, grad_out, kernel, dilation, backend, device, dtype):
    leaves = [t.to(device=device, dtype=dtype).requires_grad_(True) for t in tensors]
    out = neighborhood_attention(*leaves[:3], kernel, dilation, rpb=leaves[3], backend=backend)
    grads = torch.autograd.grad(out, leaves, grad_out.to(device=device, dtype=dtype))
    return [t.detach().double().cpu() for t in (out, *grads)]


@pytest.mark.parametrize("backend", ["flex", "torch"])
@pytest.mark.parametrize("height,width,kernel,dilation", GEOMETRIES)
def test_cuda_backends_match_cpu_float64_forward_and_gradients(backend, height, width, kernel, dilation):
    tensors, grad_out = _problem(height, width, kernel)
    expected = _run(tensors, grad_out, kernel, dilation, "torch", "cpu", torch.float64)
    got = _run(tensors, grad_out, kernel, dilation, backend, "cuda", torch.float32)
    for name, a, b in zip(["out", "dq", "dk", "dv", "drpb"], got, expected):
        assert torch.isfinite(a).all(), f"{backend}: non-finite {name}"
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3 * max(1.0, scale), msg=lambda m: f"{backend} {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("height,width,kernel,dilation", [(32, 32, 7, 1), (64, 64, 7, 8)])
def test_flex_bfloat16_is_close_to_float64(height, width, kernel, dilation):
    tensors, grad_out = _problem(height, width, kernel)
    expected = _run(tensors, grad_out, kernel, dilation, "torch", "cpu", torch.float64)
    got = _run(tensors, grad_out, kernel, dilation, "flex", "cuda", torch.bfloat16)
    for a, b in zip(got, expected):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=5e-2 * max(1.0, b.abs().max().item()))


def test_auto_backend_on_cuda_is_flex_when_compilable(monkeypatch):
    monkeypatch.delenv("NATGAN_NA_BACKEND", raising=False)
    q = torch.zeros(1, 8, 8, 2, 32, device="cuda")
    expected = "flex" if dispatch.flex_compilable(q.device) else "torch"
    assert dispatch._auto_backend(q) == expected
    assert dispatch._auto_backend(q[..., :24]) == "torch"  # head_dim not a power of two


def test_flex_reuses_its_compiled_kernel_when_only_values_change():
    import torch._dynamo.config as dynamo_config

    tensors, _ = _problem(32, 32, 7)
    first = [t.float().cuda() for t in tensors]
    neighborhood_attention(*first[:3], 7, 2, rpb=first[3], backend="flex")
    second = [t.float().cuda() + 1 for t in tensors]  # new tensors, same shapes: no recompile allowed
    with dynamo_config.patch(error_on_recompile=True):
        neighborhood_attention(*second[:3], 7, 2, rpb=second[3], backend="flex")


@pytest.mark.parametrize("backend", ["torch", "flex"])
def test_compiled_stylenat_generator_on_cuda_matches_eager_without_graph_breaks(backend, monkeypatch):
    """The whole generator under torch.compile on the GPU: one graph, outputs and gradients as eager."""
    import torch._dynamo as dynamo

    from natgan.models import create

    monkeypatch.setenv("NATGAN_NA_BACKEND", backend)
    torch.manual_seed(0)
    G = create("stylenat", resolution=32, style_dim=64, n_mlp=4, channels=[64, 64, 64, 32], min_heads=2,
               kernel_size=5).generator.cuda()
    z = torch.randn(2, 64, device="cuda")
    dynamo.reset()
    try:
        explained = dynamo.explain(G)(z)
        assert explained.graph_break_count == 0, explained.break_reasons
        eager = G(z)
        eager_grads = torch.autograd.grad(eager.square().mean(), list(G.parameters()), allow_unused=True)
        compiled = torch.compile(G)(z)
        grads = torch.autograd.grad(compiled.square().mean(), list(G.parameters()), allow_unused=True)
    finally:
        dynamo.reset()
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)
    for a, b in zip(grads, eager_grads):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
