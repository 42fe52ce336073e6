"""Sparse convolution, max pooling and instance normalisation as plain torch arithmetic over the index
maps that MinkowskiEngine computes.

Why: ME's autograd Functions are first-order only. The gradient of a loss w.r.t. a convolution kernel that
they return has no graph back to the input features, so matching gradients through ME layers gives the
synthetic points no signal. Here ME only provides coordinates, kernel maps and strides (integers); every
floating-point operation is a differentiable torch op (gather, matmul, index_add, max), so gradients of
gradients are exact, on any device the index tensors are moved to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ConvMap:
    """For each output row, the input row under each used kernel offset (``n_in`` = an all-zero row)."""

    offsets: torch.Tensor  # long [K_used]: kernel indices (rows of ME's [K, Cin, Cout] kernel) that occur
    table: torch.Tensor  # long [n_out, K_used]


@dataclass(frozen=True)
class PoolMap:
    """For each output row, its input rows (``n_in`` = padding, never the maximum)."""

    table: torch.Tensor  # long [n_out, max inputs per output]


def conv_map(manager: Any, key: Any, num_rows: int, device: torch.device, kernel_size: int = 3) -> ConvMap:
    """Stride-1 convolution map of a coordinate map onto itself (ME's ``kernel_map``)."""
    kmap = manager.kernel_map(key, key, stride=1, kernel_size=kernel_size)
    offsets = sorted(kmap)
    pairs = torch.cat([kmap[k].long() for k in offsets], dim=1)
    column = torch.repeat_interleave(torch.arange(len(offsets)), torch.tensor([kmap[k].shape[1] for k in offsets]))
    table = torch.full((num_rows, len(offsets)), num_rows, dtype=torch.long)
    table[pairs[1], column] = pairs[0]
    return ConvMap(torch.tensor(offsets, dtype=torch.long, device=device), table.to(device))


def pool_map(manager: Any, in_key: Any, out_key: Any, num_in: int, num_out: int,
             device: torch.device, kernel_size: int = 2, stride: int = 2) -> PoolMap:
    """Pooling map from ``in_key`` to the strided ``out_key`` (ME merges all offsets into one list)."""
    kmap = manager.kernel_map(in_key, out_key, stride=stride, kernel_size=kernel_size, is_pool=True)
    pairs = torch.cat([m.long() for m in kmap.values()], dim=1)
    in_rows, out_rows = pairs[0], pairs[1]
    order = torch.argsort(out_rows, stable=True)
    in_rows, out_rows = in_rows[order], out_rows[order]
    counts = torch.bincount(out_rows, minlength=num_out)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(out_rows)) - starts[out_rows]
    table = torch.full((num_out, int(counts.max())), num_in, dtype=torch.long)
    table[out_rows, slot] = in_rows
    return PoolMap(table.to(device))


def gather_rows(features: torch.Tensor, table: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """features[table] as [*table.shape, C], where index ``len(features)`` reads a row of ``fill``."""
    # index_select rather than advanced indexing: its backward is index_add, much faster on the CPU than
    # the accumulating index_put that advanced indexing falls back to.
    padded = torch.cat([features, features.new_full((1, features.shape[1]), fill)])
    return padded.index_select(0, table.reshape(-1)).view(*table.shape, -1)


def sparse_conv(features: torch.Tensor, kernel: torch.Tensor, cmap: ConvMap) -> torch.Tensor:
    """out[i] = sum_k features[in(i, k)] @ kernel[k]: one gather and one matmul."""
    gathered = gather_rows(features, cmap.table)  # [n_out, K, Cin]
    weight = kernel.index_select(0, cmap.offsets)  # [K_used, Cin, Cout]
    return gathered.flatten(1) @ weight.flatten(0, 1)


def sparse_max_pool(features: torch.Tensor, pmap: PoolMap) -> torch.Tensor:
    return gather_rows(features, pmap.table, float("-inf")).max(dim=1).values


def instance_norm(features: torch.Tensor, batch: torch.Tensor, num_batches: int, weight: torch.Tensor,
                  bias: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample, per-channel normalisation over each sample's voxels (ME's eps and affine layout)."""
    counts = torch.bincount(batch, minlength=num_batches).clamp(min=1).to(features.dtype).unsqueeze(1)
    zeros = features.new_zeros(num_batches, features.shape[1])
    mean = zeros.index_add(0, batch, features) / counts
    centered = features - mean.index_select(0, batch)
    var = zeros.index_add(0, batch, centered * centered) / counts
    # The affine weight joins the per-sample scale [B, C] before the gather: one [n, C] pass fewer.
    return torch.addcmul(bias, centered, ((var + eps).rsqrt() * weight).index_select(0, batch))


def planar_conv_map(manager: Any, key: Any, coords: torch.Tensor, stride: int, device: torch.device) -> torch.Tensor:
    """Stride-1 3x3 map of a coordinate map on one depth plane onto itself, as a [n, 9] table.

    Column ``3 * (dh + 1) + (dw + 1)`` holds the input row at offset (dh, dw) (in units of the tensor
    stride) of each output row, or ``n`` (an all-zero row) where there is none: the layout of a Conv2d
    weight's [3, 3] window, so the kernel can be a plain ``nn.Conv2d`` weight. ME numbers its kernel
    offsets in its own order; each offset is read back from the coordinates of one of its pairs.
    """
    n = len(coords)
    kmap = manager.kernel_map(key, key, stride=1, kernel_size=3)
    table = torch.full((n, 9), n, dtype=torch.long)
    for pairs in kmap.values():
        pairs = pairs.long()
        delta = (coords[pairs[0, 0]] - coords[pairs[1, 0]]) // stride  # (batch, depth, row, col)
        if delta[1] != 0:  # depth offsets never pair on a single plane; kept general for safety
            continue
        table[pairs[1], 3 * (int(delta[2]) + 1) + int(delta[3]) + 1] = pairs[0]
    return table.to(device)


def sparse_conv2d(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  table: torch.Tensor) -> torch.Tensor:
    """``nn.Conv2d``'s 3x3 weight [Cout, Cin, 3, 3] applied over a ``planar_conv_map`` table."""
    out = gather_rows(features, table).flatten(1) @ _window_matrix(weight)  # [n, 9 * Cin], offset-major
    return out if bias is None else out + bias


def _window_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv2d weight [Cout, Cin, 3, 3] as [9 * Cin, Cout], rows in ``planar_conv_map``'s offset order."""
    return weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])


def sparse_avg_pool(features: torch.Tensor, pmap: PoolMap) -> torch.Tensor:
    """Mean over each output's present inputs (MinkowskiAvgPooling); with all inputs present, AvgPool2d(2)."""
    summed = gather_rows(features, pmap.table).sum(1)
    counts = (pmap.table < len(features)).sum(1, keepdim=True).clamp(min=1).to(features.dtype)
    return summed / counts


def sparse_linear(features: torch.Tensor, batch: torch.Tensor, cell: torch.Tensor, batch_size: int,
                  weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``Linear`` over each sample's dense [C, cells] grid (flattened channel-major) holding only these voxels.

    ``weight`` is the Linear's weight viewed [out, C, cells]. The voxels are written into a dense
    [B, cells, C] grid (one index_add: a voxel's (sample, cell) is unique) and met by one matmul: no per-voxel
    copy of the weight columns, which is memory-bound and doubles in the matching's second-order pass.
    """
    out_features, channels, cells = weight.shape
    dense = features.new_zeros(batch_size * cells, channels).index_add(0, batch * cells + cell, features)
    return dense.view(batch_size, cells * channels) @ weight.permute(2, 1, 0).reshape(-1, out_features) + bias


# Background mode: an absent voxel is empty space, and holds what the dense network computes there. Away from the
# cloud that is one value per sample and channel (the "background"), carried beside the voxel features: a
# convolution of background gives background, instance norm counts the absent cells of the whole domain, and
# average pooling divides by the full window. Exact where the present voxels cover every cell whose value differs
# from the background (halo >= 1 does at the first layer); an approximation past the first pooling otherwise.

_WINDOW = torch.tensor([(dh, dw) for dh in (-1, 0, 1) for dw in (-1, 0, 1)])


def window_in_domain(rows_cols: torch.Tensor, stride: int, domain: int) -> torch.Tensor:
    """Bool [n, 9]: which 3x3 neighbours (``planar_conv_map``'s column order) lie inside [0, domain)^2."""
    neighbours = rows_cols.unsqueeze(1) + _WINDOW.to(rows_cols.device) * stride
    return ((neighbours >= 0) & (neighbours < domain)).all(-1)


def background_conv2d(features: torch.Tensor, background: torch.Tensor, batch: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, table: torch.Tensor, in_domain: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``sparse_conv2d`` where absent in-domain neighbours hold their sample's background (the domain's own
    padding stays 0); returns the present voxels' output and the new background (an all-background window)."""
    n, num = len(features), len(background)
    # The background rows sit below the features (then one zero row): an absent neighbour reads its sample's row
    # in the same gather, instead of an [n, 9, C] mask-times-background pass (and its second-order twins).
    source = torch.where(table == n, torch.where(in_domain, n + batch.unsqueeze(1), n + num), table)
    padded = torch.cat([features, background, background.new_zeros(1, background.shape[1])])
    gathered = padded.index_select(0, source.reshape(-1)).view(n, -1)
    return gathered @ _window_matrix(weight) + bias, background @ weight.sum((2, 3)).T + bias


def background_instance_norm(features: torch.Tensor, background: torch.Tensor, batch: torch.Tensor, cells: int,
                             weight: torch.Tensor, bias: torch.Tensor, eps: float
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance norm over all ``cells`` of each sample's domain: the present voxels plus the absent ones, which
    all hold the background."""
    num = len(background)
    absent = (cells - torch.bincount(batch, minlength=num)).to(features.dtype).unsqueeze(1)
    zeros = background.new_zeros(background.shape)
    mean = (zeros.index_add(0, batch, features) + absent * background) / cells
    centered, centered_bg = features - mean.index_select(0, batch), background - mean
    var = (zeros.index_add(0, batch, centered * centered) + absent * centered_bg * centered_bg) / cells
    scale = (var + eps).rsqrt() * weight
    return torch.addcmul(bias, centered, scale.index_select(0, batch)), centered_bg * scale + bias


def background_avg_pool(features: torch.Tensor, background: torch.Tensor, out_batch: torch.Tensor,
                        pmap: PoolMap, window: int = 4) -> torch.Tensor:
    """AvgPool2d(2) over present inputs plus the background for the absent ones of each window."""
    n = len(features)
    assert pmap.table.shape[1] <= window, "a pooling map with more inputs per output than the window"
    # Every one of a window's inputs that is not present (padding, or a column the map never needed) reads the
    # background row of its sample, stored below the features.
    table = F.pad(pmap.table, (0, window - pmap.table.shape[1]), value=n)
    source = torch.where(table == n, n + out_batch.unsqueeze(1), table)
    padded = torch.cat([features, background])
    return padded.index_select(0, source.reshape(-1)).view(*source.shape, -1).sum(1) / window
