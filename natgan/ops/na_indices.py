"""Index tables that define 2-D (dilated) neighborhood attention: windows, RPB offsets, query tiles.

The semantics are those of the old NATTEN kernels (<= 0.17) that StyleNAT was trained with. Per axis of
length ``L``, odd kernel ``K`` and dilation ``d``, query ``i`` lives in dilation group ``g = i % d`` at
in-group position ``i // d``; its window starts at ``clamp(i // d - K // 2, 0, L_g - K)`` (shifted
inward at the borders, never truncated) and holds the ``K`` group members from there. The 2-D window
is the product of the row and column windows, and the relative-position bias of a key is
``rpb[head, (key_row - query_row) / d + K - 1, (key_col - query_col) / d + K - 1]``.

Everything is computed per axis on the CPU with integer arithmetic, then combined; results are cached
per geometry and device because a model calls the op with the same few shapes at every step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

Pair = tuple[int, int]


def as_pair(value: int | tuple[int, int] | list[int], name: str) -> Pair:
    """Accept an int (square) or a (rows, cols) pair of ints."""
    if isinstance(value, bool):
        raise TypeError(f"neighborhood attention: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"neighborhood attention: {name} must be an int or a pair of ints, got {value!r}")


def check_geometry(height: int, width: int, kernel: Pair, dilation: Pair) -> None:
    """Raise ``ValueError`` unless the kernel is odd and >= 3 and every window fits the map.

    Old NATTEN refused ``kernel * dilation > size`` too (there is no shrunken window to fall back on),
    so a model that needs it is misconfigured rather than something to paper over here.
    """
    for axis, size, k, d in (("height", height, kernel[0], dilation[0]), ("width", width, kernel[1], dilation[1])):
        if k < 3 or k % 2 == 0:
            raise ValueError(
                f"neighborhood attention: kernel size must be odd and >= 3, got {k} (feature map {axis})"
            )
        if d < 1:
            raise ValueError(f"neighborhood attention: dilation must be >= 1, got {d} (feature map {axis})")
        if k * d > size:
            raise ValueError(
                f"neighborhood attention: kernel {k} x dilation {d} = {k * d} exceeds the feature map "
                f"{axis} {size}"
            )


def _group_length(length: int, dilation: int, group: int) -> int:
    return len(range(group, length, dilation))


def _window_start(position: int, group_length: int, kernel: int) -> int:
    """First window member (in-group coordinates) of the query at in-group ``position``."""
    return min(max(position - kernel // 2, 0), group_length - kernel)


def axis_window_starts(length: int, kernel: int, dilation: int) -> torch.Tensor:
    """``[length]`` int64: absolute index of each query's first window member along one axis."""
    starts = []
    for i in range(length):
        group, position = i % dilation, i // dilation
        start = _window_start(position, _group_length(length, dilation, group), kernel)
        starts.append(group + dilation * start)
    return torch.tensor(starts, dtype=torch.long)


@dataclass(frozen=True)
class AxisTiles:
    """Queries of one axis cut into tiles of ``tile`` same-group neighbours, each with a key halo.

    A tile of consecutive in-group queries needs at most ``tile + K - 1`` consecutive group members
    as keys (window starts grow by 0 or 1 per query), so attention of a tile against its halo is a
    small dense matrix product. Short tiles (group length not a multiple of ``tile``) repeat their last
    query and are flagged in ``valid``; halos shorter than ``halo`` repeat a member that no window uses.
    """

    queries: torch.Tensor  # [n_tiles, tile] absolute query index
    valid: torch.Tensor  # [n_tiles, tile] bool, False for repeated padding queries
    keys: torch.Tensor  # [n_tiles, halo] absolute key index
    band: torch.Tensor  # [n_tiles, tile, K] position in the halo of each window member
    bias: torch.Tensor  # [n_tiles, tile, K] RPB offset of each window member

    @property
    def tile(self) -> int:
        return self.queries.shape[1]

    @property
    def halo(self) -> int:
        return self.keys.shape[1]


def _tile_size(longest_group: int, target: int) -> int:
    """Tile length near ``target`` that splits the longest group into equal parts (least padding)."""
    n_tiles = -(-longest_group // max(1, target))
    return -(-longest_group // n_tiles)


def axis_tile_layout(length: int, dilation: int, target_tile: int) -> tuple[int, int]:
    """``(number of tiles, tile length)`` of one axis, with plain integers (no tensors).

    Shapes only: the custom op's fake (meta) implementation uses it under ``torch.compile``, where
    building the cached index tensors would be traced.
    """
    group_lengths = [_group_length(length, dilation, g) for g in range(dilation)]
    tile = _tile_size(max(group_lengths), target_tile)
    return sum(-(-n // tile) for n in group_lengths), tile


@functools.lru_cache(maxsize=256)
def axis_tiles(length: int, kernel: int, dilation: int, target_tile: int) -> AxisTiles:
    """Tile one axis for the halo-GEMM algorithm (see :class:`AxisTiles`)."""
    group_lengths = [_group_length(length, dilation, g) for g in range(dilation)]
    _, tile = axis_tile_layout(length, dilation, target_tile)
    spans = []
    tiles = []  # (group, group_length, first query, number of queries)
    for group, group_length in enumerate(group_lengths):
        for first in range(0, group_length, tile):
            count = min(tile, group_length - first)
            start = _window_start(first, group_length, kernel)
            stop = _window_start(first + count - 1, group_length, kernel) + kernel
            spans.append(stop - start)
            tiles.append((group, group_length, first, count))
    halo = max(spans)

    queries, valid, keys, band, bias = [], [], [], [], []
    for group, group_length, first, count in tiles:
        halo_start = max(0, min(_window_start(first, group_length, kernel), group_length - halo))
        keys.append([group + dilation * min(halo_start + p, group_length - 1) for p in range(halo)])
        tile_queries, tile_band, tile_bias = [], [], []
        for t in range(tile):
            position = first + min(t, count - 1)
            start = _window_start(position, group_length, kernel)
            tile_queries.append(group + dilation * position)
            tile_band.append([start + a - halo_start for a in range(kernel)])
            tile_bias.append([start + a - position + kernel - 1 for a in range(kernel)])
        queries.append(tile_queries)
        valid.append([t < count for t in range(tile)])
        band.append(tile_band)
        bias.append(tile_bias)
    as_long = functools.partial(torch.tensor, dtype=torch.long)
    return AxisTiles(
        queries=as_long(queries),
        valid=torch.tensor(valid, dtype=torch.bool),
        keys=as_long(keys),
        band=as_long(band),
        bias=as_long(bias),
    )


@dataclass(frozen=True)
class NeighborhoodTiles:
    """2-D tiles (row tile x column tile) with flat indices, ready for gathers on one device.

    Flat token index is ``row * width + col``. ``n_tiles`` tiles of ``tile_queries`` queries each;
    every tile attends to its own ``halo_keys`` keys, of which each query uses ``window`` (= Kh*Kw).
    """

    query_index: torch.Tensor  # [n_tiles * tile_queries] flat token of each query slot
    key_index: torch.Tensor  # [n_tiles * halo_keys] flat token of each halo slot
    band: torch.Tensor  # [n_tiles, tile_queries, window] halo slot of each window member
    bias_index: torch.Tensor  # [n_tiles, tile_queries, window] index into rpb.flatten(1)
    slot_of_token: torch.Tensor  # [height * width] query slot that holds each token
    valid: torch.Tensor | None  # [n_tiles, tile_queries, 1] bool, False for padding slots; None if none
    n_tiles: int
    tile_queries: int
    halo_keys: int
    window: int


def _combine(rows: AxisTiles, cols: AxisTiles, width: int, kernel: Pair) -> dict:
    """Outer product of row and column tiles (CPU tensors)."""
    nr, nc = rows.queries.shape[0], cols.queries.shape[0]
    tr, tc, pr, pc = rows.tile, cols.tile, rows.halo, cols.halo
    kh, kw = kernel

    def grid(r: torch.Tensor, c: torch.Tensor, rt: int, ct: int) -> torch.Tensor:
        # r: [nr, rt], c: [nc, ct] -> [nr, nc, rt, ct] -> [nr * nc, rt * ct]
        return (r[:, None, :, None] * width + c[None, :, None, :]).reshape(nr * nc, rt * ct)

    query_index = grid(rows.queries, cols.queries, tr, tc)
    key_index = grid(rows.keys, cols.keys, pr, pc)
    band = rows.band[:, None, :, None, :, None] * pc + cols.band[None, :, None, :, None, :]
    bias = rows.bias[:, None, :, None, :, None] * (2 * kw - 1) + cols.bias[None, :, None, :, None, :]
    valid = rows.valid[:, None, :, None] & cols.valid[None, :, None, :]
    shape = (nr * nc, tr * tc, kh * kw)
    return dict(
        query_index=query_index.reshape(-1),
        key_index=key_index.reshape(-1),
        band=band.reshape(shape),
        bias_index=bias.reshape(shape),
        valid=valid.reshape(nr * nc, tr * tc),
        n_tiles=nr * nc,
        tile_queries=tr * tc,
        halo_keys=pr * pc,
        window=kh * kw,
    )


@functools.lru_cache(maxsize=64)
def neighborhood_tiles(
    height: int, width: int, kernel: Pair, dilation: Pair, target_tile: Pair, device: torch.device
) -> NeighborhoodTiles:
    """Cached 2-D tiles for one geometry on one device (see :class:`NeighborhoodTiles`)."""
    rows = axis_tiles(height, kernel[0], dilation[0], target_tile[0])
    cols = axis_tiles(width, kernel[1], dilation[1], target_tile[1])
    parts = _combine(rows, cols, width, kernel)
    valid = parts.pop("valid")
    query_index = parts["query_index"]
    slot_of_token = torch.empty(height * width, dtype=torch.long)
    real = valid.reshape(-1)
    slot_of_token[query_index[real]] = torch.arange(query_index.numel())[real]
    valid_mask = None if bool(valid.all()) else valid.unsqueeze(-1)
    to_device = lambda t: t.to(device)  # noqa: E731 - local shorthand
    return NeighborhoodTiles(
        query_index=to_device(parts["query_index"]),
        key_index=to_device(parts["key_index"]),
        band=to_device(parts["band"]),
        bias_index=to_device(parts["bias_index"]),
        slot_of_token=to_device(slot_of_token),
        valid=None if valid_mask is None else valid_mask.to(device),
        n_tiles=parts["n_tiles"],
        tile_queries=parts["tile_queries"],
        halo_keys=parts["halo_keys"],
        window=parts["window"],
    )
