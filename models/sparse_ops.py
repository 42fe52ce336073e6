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


def sparse_conv(features: torch.Tensor, kernel: torch.Tensor, cmap: ConvMap) -> torch.Tensor:
    """out[i] = sum_k features[in(i, k)] @ kernel[k]: one gather and one matmul."""
    # index_select rather than advanced indexing: its backward is index_add, much faster on the CPU than
    # the accumulating index_put that advanced indexing falls back to.
    padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
    gathered = padded.index_select(0, cmap.table.reshape(-1)).view(*cmap.table.shape, -1)  # [n_out, K, Cin]
    weight = kernel.index_select(0, cmap.offsets)  # [K_used, Cin, Cout]
    return gathered.flatten(1) @ weight.flatten(0, 1)


def sparse_max_pool(features: torch.Tensor, pmap: PoolMap) -> torch.Tensor:
    padded = torch.cat([features, features.new_full((1, features.shape[1]), float("-inf"))])
    gathered = padded.index_select(0, pmap.table.reshape(-1)).view(*pmap.table.shape, -1)
    return gathered.max(dim=1).values


def instance_norm(features: torch.Tensor, batch: torch.Tensor, num_batches: int, weight: torch.Tensor,
                  bias: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample, per-channel normalisation over each sample's voxels (ME's eps and affine layout)."""
    counts = torch.bincount(batch, minlength=num_batches).clamp(min=1).to(features.dtype).unsqueeze(1)
    zeros = features.new_zeros(num_batches, features.shape[1])
    mean = zeros.index_add(0, batch, features) / counts
    centered = features - mean.index_select(0, batch)
    var = zeros.index_add(0, batch, centered * centered) / counts
    return centered * (var + eps).rsqrt().index_select(0, batch) * weight + bias
