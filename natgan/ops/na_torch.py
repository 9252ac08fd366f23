"""Pure-PyTorch 2-D neighborhood attention with RPB and a hand-written backward (any device).

Algorithm (halo GEMM): queries are cut into small 2-D tiles of same-dilation-group neighbours
(:mod:`natgan.ops.na_indices`). All windows of a tile lie inside one small key *halo*, so a tile's
logits against its halo are one dense matrix product; the K*K logits each query really uses are then
gathered out (``band``), the RPB is added, softmax runs over exactly K*K entries, and the
probabilities are scattered back into the dense tile for the second matrix product with the values.

Why this and not a loop over the K*K window offsets: per-offset gathers are memory-bound elementwise
passes (49 of them for K=7, forward and backward), while the halo products run as batched GEMMs; on
CPU the forward measured ~7x faster (64x64, 16 heads x 32, K=7) even though about 4x the useful FLOPs
are computed (K=7, tile 8: halo 14x14 = 196 keys for 49 used). Memory stays lean: tiles are processed
in chunks whose dense buffers fit a fixed budget, k and v are copied about 3x per chunk (never K*K-fold),
and only q, k, v, rpb and the compact ``[.., K*K]`` attention are saved for backward (the halos are re-gathered).
Dilation needs no special case: tiles are built inside dilation groups, so gathers do the folding.
Forward and backward are torch custom ops, so ``torch.compile`` sees one opaque call per attention.
"""

from __future__ import annotations

import torch

from natgan.ops.na_indices import NeighborhoodTiles, Pair, axis_tile_layout, neighborhood_tiles

# Elements of the dense [tile_queries x halo_keys] buffer of one chunk (all batch x heads together).
_GPU_CHUNK_ELEMENTS = 1 << 25  # large chunks keep the GPU busy; 128 MB in float32
_CPU_CHUNK_ELEMENTS_ONE_THREAD = 1 << 18  # 1 MB: stays in cache
_CPU_CHUNK_ELEMENTS_THREADED = 1 << 22  # each op is a parallel region whose sync must be amortised


def _chunk_budget(device: torch.device) -> int:
    """Measured on 2 cores (64x64, 16 heads, K=7, fwd+bwd): one thread is fastest with cache-sized
    chunks; two threads are 1.3-2x faster with 16x larger chunks (up to 5x on a busy machine)."""
    if device.type == "cuda":
        return _GPU_CHUNK_ELEMENTS
    return _CPU_CHUNK_ELEMENTS_ONE_THREAD if torch.get_num_threads() == 1 else _CPU_CHUNK_ELEMENTS_THREADED


def _target_tile(kernel: Pair) -> Pair:
    """Tile length per axis: K + 1 gives a ~2K halo, i.e. ~4x dense waste, with GEMMs big enough to pay."""
    return (kernel[0] + 1, kernel[1] + 1)


def _tiles_per_chunk(tiles: NeighborhoodTiles, batch_heads: int, device: torch.device) -> int:
    budget = _chunk_budget(device)
    per_tile = batch_heads * tiles.tile_queries * tiles.halo_keys
    return max(1, min(tiles.n_tiles, budget // per_tile))


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the window; half-precision logits are normalised in float32 (49-term sums)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(logits, dim=-1, dtype=torch.float32).to(logits.dtype)
    return torch.softmax(logits, dim=-1)


def _heads_first(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, heads, D]`` -> ``[B, heads, H*W, D]`` view (no copy)."""
    b, h, w, heads, d = x.shape
    return x.reshape(b, h * w, heads, d).transpose(1, 2)


def _untile(tiled: torch.Tensor, tiles: NeighborhoodTiles, shape: tuple[int, ...]) -> torch.Tensor:
    """``[B, heads, n_tiles, tile_queries, D]`` -> ``[B, H, W, heads, D]`` (drops padding slots)."""
    b, heads = tiled.shape[:2]
    flat = tiled.reshape(b, heads, -1, tiled.shape[-1]).transpose(1, 2)
    return flat.index_select(1, tiles.slot_of_token).reshape(*shape[:4], tiled.shape[-1])


def _add_to_tokens(target: torch.Tensor, token_index: torch.Tensor, tiled: torch.Tensor) -> None:
    """``target[b, token_index[m]] += tiled`` for ``target [B, N, heads, D]``, ``tiled [B, heads, n, slots, D]``."""
    b, heads = tiled.shape[:2]
    target.index_add_(1, token_index, tiled.reshape(b, heads, -1, tiled.shape[-1]).transpose(1, 2))


class _Chunk:
    """Gathered query tile and key/value halos of a run of tiles ``[first, stop)``."""

    def __init__(self, tiles: NeighborhoodTiles, first: int, stop: int):
        self.first, self.stop, self.count = first, stop, stop - first
        tq, hk = tiles.tile_queries, tiles.halo_keys
        self.query_index = tiles.query_index[first * tq : stop * tq]
        self.key_index = tiles.key_index[first * hk : stop * hk]
        self.band = tiles.band[first:stop]
        self.bias_index = tiles.bias_index[first:stop]
        self.valid = None if tiles.valid is None else tiles.valid[first:stop]

    def gather_queries(self, x_heads_first: torch.Tensor, tile_queries: int) -> torch.Tensor:
        b, heads, _, d = x_heads_first.shape
        return x_heads_first.index_select(2, self.query_index).view(b, heads, self.count, tile_queries, d)

    def gather_keys(self, x_heads_first: torch.Tensor, halo_keys: int) -> torch.Tensor:
        b, heads, _, d = x_heads_first.shape
        return x_heads_first.index_select(2, self.key_index).view(b, heads, self.count, halo_keys, d)


def _chunks(tiles: NeighborhoodTiles, batch_heads: int, device: torch.device):
    step = _tiles_per_chunk(tiles, batch_heads, device)
    for first in range(0, tiles.n_tiles, step):
        yield _Chunk(tiles, first, min(first + step, tiles.n_tiles))


def _forward(q, k, v, rpb, scale: float, tiles: NeighborhoodTiles, save_attn: bool):
    """Fused QK + RPB + softmax + AV over halo tiles -> ``(out, attn or None)``."""
    b, heads = q.shape[0], q.shape[3]
    tq, hk, window = tiles.tile_queries, tiles.halo_keys, tiles.window
    qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
    rpb_flat = None if rpb is None else rpb.reshape(heads, -1)
    out_tiles = q.new_empty(b, heads, tiles.n_tiles, tq, v.shape[-1])
    attn_all = q.new_empty(b, heads, tiles.n_tiles, tq, window) if save_attn else None
    for chunk in _chunks(tiles, b * heads, q.device):
        query = chunk.gather_queries(qh, tq).mul_(scale)
        key, value = chunk.gather_keys(kh, hk), chunk.gather_keys(vh, hk)
        dense = torch.matmul(query, key.transpose(-1, -2))
        band = chunk.band.expand(b, heads, -1, -1, -1)
        logits = dense.gather(-1, band)
        if rpb_flat is not None:
            logits += rpb_flat[:, chunk.bias_index]
        attn = _softmax(logits)
        dense.zero_().scatter_(-1, band, attn)
        out_tiles[:, :, chunk.first : chunk.stop] = torch.matmul(dense, value)
        if attn_all is not None:
            attn_all[:, :, chunk.first : chunk.stop] = attn
    return _untile(out_tiles, tiles, q.shape), attn_all


def _backward(grad_out, q, k, v, rpb, attn_all, scale: float, tiles: NeighborhoodTiles, needs: tuple):
    """Gradients from the saved compact attention; the halos are re-gathered, the softmax is not redone."""
    b, heads = q.shape[0], q.shape[3]
    tq, hk = tiles.tile_queries, tiles.halo_keys
    qh, kh, vh, gh = (_heads_first(t) for t in (q, k, v, grad_out))
    need_q, need_k, need_v, need_rpb = needs

    # token-major accumulators: the result is a view of them, no final transpose copy
    n_tokens = kh.shape[2]
    dq = q.new_zeros(b, n_tokens, heads, q.shape[-1]) if need_q else None
    dk = q.new_zeros(b, n_tokens, heads, k.shape[-1]) if need_k else None
    dv = q.new_zeros(b, n_tokens, heads, v.shape[-1]) if need_v else None
    drpb = torch.zeros_like(rpb).reshape(heads, -1) if need_rpb else None

    for chunk in _chunks(tiles, b * heads, q.device):
        grad = chunk.gather_queries(gh, tq)
        if chunk.valid is not None:
            grad.masked_fill_(~chunk.valid, 0)  # padding slots repeat a real query: no gradient
        value = chunk.gather_keys(vh, hk)
        band = chunk.band.expand(b, heads, -1, -1, -1)
        attn = attn_all[:, :, chunk.first : chunk.stop]

        dense = torch.matmul(grad, value.transpose(-1, -2))
        grad_attn = dense.gather(-1, band)
        if need_v:
            dense.zero_().scatter_(-1, band, attn)
            _add_to_tokens(dv, chunk.key_index, torch.matmul(dense.transpose(-1, -2), grad))
        grad_logits = attn * (grad_attn - (attn * grad_attn).sum(-1, keepdim=True))
        if need_rpb:
            drpb.index_add_(1, chunk.bias_index.reshape(-1), grad_logits.sum(0).reshape(heads, -1))
        if not (need_q or need_k):
            continue
        if not need_v:  # otherwise only the band slots are non-zero, and scatter_ overwrites them
            dense.zero_()
        dense.scatter_(-1, band, grad_logits)
        if need_q:  # padding query slots carry exact zeros, so adding them is harmless
            _add_to_tokens(dq, chunk.query_index, torch.matmul(dense, chunk.gather_keys(kh, hk)))
        if need_k:
            query = chunk.gather_queries(qh, tq)
            _add_to_tokens(dk, chunk.key_index, torch.matmul(dense.transpose(-1, -2), query))

    dq = dq.view(q.shape).mul_(scale) if need_q else None
    dk = dk.view(k.shape).mul_(scale) if need_k else None
    dv = dv.view(v.shape) if need_v else None
    if need_rpb:
        drpb = drpb.reshape(rpb.shape)
    return dq, dk, dv, drpb


# ------------------------------------------------------------------ torch custom ops
# Registered as opaque custom ops (forward and backward) so that torch.compile keeps a model with
# neighborhood attention in one graph: dynamo would otherwise trace the Python tile bookkeeping and
# break the graph at every call (data-dependent index building). The fake implementations give output
# shapes from integer arithmetic alone.


def _tiles_for(q: torch.Tensor, kernel: Pair, dilation: Pair) -> NeighborhoodTiles:
    return neighborhood_tiles(q.shape[1], q.shape[2], kernel, dilation, _target_tile(kernel), q.device)


@torch.library.custom_op("natgan::na2d_forward", mutates_args=())
def na2d_forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
                    kernel_h: int, kernel_w: int, dilation_h: int, dilation_w: int, scale: float,
                    save_attn: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, attn)``; ``attn`` (the compact softmax, kept for backward) is empty unless ``save_attn``."""
    tiles = _tiles_for(q, (kernel_h, kernel_w), (dilation_h, dilation_w))
    out, attn = _forward(q, k, v, rpb, scale, tiles, save_attn)
    return out, (attn if attn is not None else q.new_empty(0))


@na2d_forward_op.register_fake
def _(q, k, v, rpb, kernel_h, kernel_w, dilation_h, dilation_w, scale, save_attn):
    out = q.new_empty(*q.shape[:4], v.shape[-1])
    if not save_attn:
        return out, q.new_empty(0)
    target = _target_tile((kernel_h, kernel_w))
    row_tiles, row_tile = axis_tile_layout(q.shape[1], dilation_h, target[0])
    col_tiles, col_tile = axis_tile_layout(q.shape[2], dilation_w, target[1])
    attn = q.new_empty(q.shape[0], q.shape[3], row_tiles * col_tiles, row_tile * col_tile, kernel_h * kernel_w)
    return out, attn


@torch.library.custom_op("natgan::na2d_backward", mutates_args=())
def na2d_backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     rpb: torch.Tensor | None, attn: torch.Tensor, kernel_h: int, kernel_w: int, dilation_h: int,
                     dilation_w: int, scale: float, need_q: bool, need_k: bool, need_v: bool,
                     need_rpb: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, drpb)``; a gradient that is not needed comes back as an empty tensor."""
    tiles = _tiles_for(q, (kernel_h, kernel_w), (dilation_h, dilation_w))
    needs = (need_q, need_k, need_v, need_rpb and rpb is not None)
    grads = _backward(grad_out, q, k, v, rpb, attn, scale, tiles, needs)
    return tuple(g if g is not None else q.new_empty(0) for g in grads)


@na2d_backward_op.register_fake
def _(grad_out, q, k, v, rpb, attn, kernel_h, kernel_w, dilation_h, dilation_w, scale, need_q, need_k, need_v,
      need_rpb):
    like = lambda t, needed: torch.empty_like(t) if needed and t is not None else q.new_empty(0)  # noqa: E731
    return like(q, need_q), like(k, need_k), like(v, need_v), like(rpb, need_rpb)


def _setup_context(ctx, inputs, output):
    q, k, v, rpb, kernel_h, kernel_w, dilation_h, dilation_w, scale, save_attn = inputs
    ctx.set_materialize_grads(False)  # attn is never used downstream: no zero-filled gradient for it
    if not save_attn:
        return  # inference call: backward is never reached (autograd only records it with grads enabled)
    ctx.save_for_backward(q, k, v, rpb, output[1])
    ctx.geometry = (kernel_h, kernel_w, dilation_h, dilation_w)
    ctx.scale = scale


def _backward_rule(ctx, grad_out, _grad_attn):
    saved = ctx.saved_tensors  # read once: activation checkpointing allows a single unpack
    if not saved:
        raise RuntimeError("natgan::na2d_forward was called with save_attn=False; it cannot be differentiated")
    q, k, v, rpb, attn = saved
    if grad_out is None:  # grads are not materialised: an undefined output gradient means zero gradients
        return (None,) * 10
    need_q, need_k, need_v, need_rpb = ctx.needs_input_grad[:4]
    dq, dk, dv, drpb = na2d_backward_op(grad_out, q, k, v, rpb, attn, *ctx.geometry, ctx.scale,
                                        need_q, need_k, need_v, bool(need_rpb and rpb is not None))
    keep = lambda g, needed: g if needed else None  # noqa: E731
    return (keep(dq, need_q), keep(dk, need_k), keep(dv, need_v), keep(drpb, need_rpb and rpb is not None),
            None, None, None, None, None, None)


na2d_forward_op.register_autograd(_backward_rule, setup_context=_setup_context)


def _model_flops(q_shape: torch.Size, v_shape: torch.Size, kernel_h: int, kernel_w: int) -> int:
    """QK and AV: one multiply-add per query, neighbour and channel (not the halo GEMMs' ~4x)."""
    b, h, w, heads, d = q_shape
    return 2 * b * h * w * heads * kernel_h * kernel_w * (d + v_shape[-1])


try:  # plain FlopCounterMode then charges the model FLOPs (formulas receive shapes, not tensors)
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.natgan.na2d_forward)
    def _forward_flops(q, k, v, rpb, kernel_h, kernel_w, *args, **kwargs) -> int:
        return _model_flops(q, v, kernel_h, kernel_w)

    @register_flop_formula(torch.ops.natgan.na2d_backward)
    def _backward_flops(grad_out, q, k, v, rpb, attn, kernel_h, kernel_w, *args, **kwargs) -> int:
        return 2 * _model_flops(q, v, kernel_h, kernel_w)  # dq, dk, dv and d(attn): twice the forward
except ImportError:  # pragma: no cover - older torch without the registry
    pass


def na2d_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel: Pair,
    dilation: Pair,
    rpb: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Neighborhood attention on ``[B, H, W, heads, D]`` tensors; arguments already validated."""
    inputs = (q, k, v) if rpb is None else (q, k, v, rpb)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    out, _ = na2d_forward_op(q, k, v, rpb, kernel[0], kernel[1], dilation[0], dilation[1], float(scale), needs_grad)
    return out
