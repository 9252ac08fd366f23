"""Neighborhood attention with ``torch.nn.attention.flex_attention``: block-sparse mask + RPB score_mod.

On CUDA the call is compiled (Triton), which turns the mask into a block-sparse kernel and gives a
backward, including the RPB gradient (PyTorch >= 2.6 supports gradients of tensors captured by a
``score_mod``). On CPU it runs eagerly, forward only, and materialises the full N x N scores, so it is
only for small maps (tests).

Tokens are reordered before the call: by dilation group first (which folds dilation into contiguous
runs, like the fold identity), then into 8 x 16 tiles of in-group positions, so that one 128-token
query block needs few key blocks (row-major order would touch ~37x more keys than needed at 256^2).
The sequence is padded to a multiple of 128: pytorch#153799 reports NaN gradients with block_mask +
score_mod for other lengths. Padding queries attend to slot 0 only (never a fully masked row) and are
dropped from the output. Index arithmetic in ``score_mod`` is clamped, because it is also evaluated
for masked-out entries inside computed blocks.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from natgan.ops.na_indices import Pair, axis_window_starts

_BLOCK = 128
_TILE = (8, 16)  # in-group rows x cols per 128-token block
_MIN_RECOMPILE_LIMIT = 64  # one compiled kernel per (shape, kernel, dilation): a model has ~10-20


def flex_available() -> bool:
    """True when this torch ships ``torch.nn.attention.flex_attention``."""
    try:
        return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    except ModuleNotFoundError:
        return False


def flex_compilable(device: torch.device) -> bool:
    """True when flex can be compiled for ``device`` (CUDA with Triton): the only fast flex path."""
    if device.type != "cuda" or not flex_available():
        return False
    from torch.utils._triton import has_triton

    return has_triton()


def check_flex_supports(q: torch.Tensor, needs_grad: bool) -> None:
    if not flex_available():
        raise RuntimeError("neighborhood attention backend 'flex' requested but this torch has no flex_attention")
    if needs_grad and q.device.type != "cuda":
        raise RuntimeError(
            f"neighborhood attention backend 'flex' has no backward on {q.device.type}; run it under "
            "torch.no_grad() or use backend='torch'"
        )


class _SlotLayout:
    """Token order for flex: ``token_of_slot[s]`` is the token in slot ``s`` (padding slots repeat token 0)."""

    def __init__(self, height: int, width: int, dilation: Pair, device: torch.device):
        rows, cols = torch.arange(height), torch.arange(width)
        dh, dw = dilation
        ty, tx = _TILE
        y = rows[:, None].expand(height, width).reshape(-1)
        x = cols[None, :].expand(height, width).reshape(-1)
        py, px = y // dh, x // dw
        tiles_y, tiles_x = -(-height // (dh * ty)) + 1, -(-width // (dw * tx)) + 1
        # sort key, most significant first: group row, group col, tile row, tile col, in-tile row, col
        key = (y % dh) * dw + x % dw
        key = (key * tiles_y + py // ty) * tiles_x + px // tx
        key = (key * ty + py % ty) * tx + px % tx
        order = torch.argsort(key)
        n_tokens = height * width
        n_slots = -(-n_tokens // _BLOCK) * _BLOCK
        token_of_slot = torch.zeros(n_slots, dtype=torch.long)
        token_of_slot[:n_tokens] = order
        slot_of_token = torch.empty(n_tokens, dtype=torch.long)
        slot_of_token[order] = torch.arange(n_tokens)
        self.n_tokens, self.n_slots = n_tokens, n_slots
        self.token_of_slot = token_of_slot.to(device)
        self.slot_of_token = slot_of_token.to(device)
        self.row = (token_of_slot // width).to(device)  # coordinates of the token in each slot
        self.col = (token_of_slot % width).to(device)
        self.real = (torch.arange(n_slots) < n_tokens).to(device)


@functools.lru_cache(maxsize=64)
def _layout_and_block_mask(height: int, width: int, kernel: Pair, dilation: Pair, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    layout = _SlotLayout(height, width, dilation, device)
    row_start = axis_window_starts(height, kernel[0], dilation[0]).to(device)
    col_start = axis_window_starts(width, kernel[1], dilation[1]).to(device)
    (kh, kw), (dh, dw) = kernel, dilation
    row, col, real = layout.row, layout.col, layout.real

    def mask_mod(b, h, q_idx, kv_idx):
        dy = row[kv_idx] - row_start[row[q_idx]]
        dx = col[kv_idx] - col_start[col[q_idx]]
        in_window = (dy >= 0) & (dy < kh * dh) & (dy % dh == 0) & (dx >= 0) & (dx < kw * dw) & (dx % dw == 0)
        return (real[q_idx] & real[kv_idx] & in_window) | (~real[q_idx] & (kv_idx == 0))

    block_mask = create_block_mask(
        mask_mod, None, None, layout.n_slots, layout.n_slots, device=device, _compile=device.type == "cuda"
    )
    return layout, block_mask


def _rpb_score_mod(rpb: torch.Tensor, layout: _SlotLayout, kernel: Pair, dilation: Pair):
    (kh, kw), (dh, dw) = kernel, dilation
    row, col = layout.row, layout.col

    def score_mod(score, b, h, q_idx, kv_idx):
        # in the window the offsets are exact multiples of d; clamping only guards masked-out entries
        dy = torch.clamp(torch.div(row[kv_idx] - row[q_idx], dh, rounding_mode="floor") + kh - 1, 0, 2 * kh - 2)
        dx = torch.clamp(torch.div(col[kv_idx] - col[q_idx], dw, rounding_mode="floor") + kw - 1, 0, 2 * kw - 2)
        return score + rpb[h, dy, dx]

    return score_mod


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    import torch._dynamo.config as dynamo_config
    from torch.nn.attention.flex_attention import flex_attention

    # every (shape, kernel, dilation) is a recompile; the default limit (8) would silently drop the
    # larger ones to the eager path, which materialises N x N scores
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, _MIN_RECOMPILE_LIMIT)
    return torch.compile(flex_attention, dynamic=False)


def na2d_flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel: Pair,
    dilation: Pair,
    rpb: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Flex neighborhood attention on ``[B, H, W, heads, D]`` tensors; arguments already validated."""
    from torch.nn.attention.flex_attention import flex_attention

    batch, height, width, heads, _ = q.shape
    layout, block_mask = _layout_and_block_mask(height, width, kernel, dilation, q.device)

    def to_slots(x: torch.Tensor) -> torch.Tensor:  # [B, H, W, h, D] -> [B, h, slots, D]
        return x.reshape(batch, height * width, heads, x.shape[-1]).transpose(1, 2).index_select(
            2, layout.token_of_slot
        )

    score_mod = None if rpb is None else _rpb_score_mod(rpb, layout, kernel, dilation)
    attend = _compiled_flex_attention() if q.device.type == "cuda" else flex_attention
    out = attend(to_slots(q), to_slots(k), to_slots(v), score_mod=score_mod, block_mask=block_mask, scale=scale)
    out = out.index_select(2, layout.slot_of_token)  # [B, h, N, Dv], padding dropped
    return out.transpose(1, 2).reshape(batch, height, width, heads, v.shape[-1])
