"""The distillation networks and their inputs.

Both take synthetic or real point sets whose coordinates enter as *features* (features = xyz): voxel
coordinates are integers and carry no gradient, so the features are the only path from the matching
loss back to the points.

* ``MEPytorch`` (``--pytorch``): the seed's dense network, [Conv3d (1,3,3) pad 1 -> ReLU -> MaxPool3d 2]
  x depth -> Linear, on a [B, 3, 1, 28, 28] grid.
* ``MEConvExp``: the seed's MinkowskiEngine network, see ``models/sparse_ops.py``.
* ``MEConvNet``: DC's ConvNet on sparse voxels of the splatted occupancy (plus a halo of empty voxels).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dd3d.pointsets import soft_union, splat_cells, splat_images
from models.minkowski import import_minkowski
from models.MNIST import ConvNet
from models.sparse_ops import (
    background_avg_pool,
    background_conv2d,
    background_instance_norm,
    conv_map,
    instance_norm,
    planar_conv_map,
    pool_map,
    sparse_avg_pool,
    sparse_conv,
    sparse_conv2d,
    sparse_linear,
    sparse_max_pool,
    window_in_domain,
)

GRID = 28


def create_dense_batch(points: torch.Tensor) -> torch.Tensor:
    """Points [B, N, 3] -> dense features [B, 3, 28, 28] on the depth-0 plane.

    Each occupied voxel holds the mean coordinates of its points (what ME's averaging quantisation of a
    ``TensorField`` gives), so every point receives gradient. Points off the plane or grid are dropped.
    """
    b, n, _ = points.shape
    cells = points.detach().floor().long()
    inside = (cells[..., 0] == 0) & ((cells[..., 1:] >= 0) & (cells[..., 1:] < GRID)).all(-1)
    batch = torch.arange(b, device=points.device).unsqueeze(1)
    voxel = batch * GRID * GRID + cells[..., 1].clamp(0, GRID - 1) * GRID + cells[..., 2].clamp(0, GRID - 1)
    voxel = torch.where(inside, voxel, b * GRID * GRID).reshape(-1)  # last row collects dropped points
    sums = points.new_zeros(b * GRID * GRID + 1, 3).index_add(0, voxel, points.reshape(-1, 3))
    counts = points.new_zeros(b * GRID * GRID + 1).index_add(0, voxel, points.new_ones(b * n))
    means = sums[:-1] / counts[:-1].clamp(min=1).unsqueeze(1)
    return means.view(b, GRID, GRID, 3).permute(0, 3, 1, 2)


class MEPytorch(nn.Module):
    """The seed's dense 3D-convolution network, evaluated in an exactly equivalent 2D form.

    With depth 1 and padding 1, Conv3d((1,3,3)) makes three depth slices: the real one and two padded
    slices holding only the bias b. MaxPool3d(2) then takes the max over the real slice and one bias
    slice, so each block is exactly relu(max(maxpool2d(conv2d(x, W[:, :, 0]) + b), b)): 3x fewer FLOPs,
    same values and gradients (including second order). Parameters keep the Conv3d shapes.
    """

    def __init__(self, in_channel: int = 3, num_classes: int = 10, depth: int = 3, width: int = 128) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv3d(in_channel if d == 0 else width, width, kernel_size=(1, 3, 3), padding=1)
            for d in range(depth))
        size = GRID
        for _ in range(depth):
            size //= 2
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            bias = conv.bias.view(1, -1, 1, 1)
            y = F.max_pool2d(F.conv2d(x, conv.weight[:, :, 0], conv.bias, padding=1), 2)
            # Ties go to the bias slice, which MaxPool3d scans first (empty neighbourhoods tie exactly).
            x = F.relu(torch.where(y > bias, y, bias))
        return self.classifier(x.flatten(1))


@dataclass(frozen=True)
class SparseBatch:
    """Network input: unique voxels of each cloud, their features and ME's coordinate structure.

    ``sparse`` is the ``ME.SparseTensor`` (always on the CPU: a CPU build of ME computes the maps);
    ``features`` are the differentiable voxel features in the same row order, on the compute device.
    """

    sparse: Any
    features: torch.Tensor
    batch_size: int


def create_input_batch(points: torch.Tensor) -> SparseBatch:
    """Float points [B, N, 3] -> one sparse tensor of *unique* voxels (size 1) per cloud.

    Each voxel's features are the mean coordinates of its points, so every point receives gradient.
    Unique integer voxels go into ``ME.SparseTensor(features, coordinates)``; ``TensorField.sparse()``
    over duplicate points is never used: it corrupts the coordinate map (pooling and instance norm then
    return garbage).
    """
    ME = import_minkowski()
    b, n, _ = points.shape
    flat = points.reshape(b * n, 3)
    cells = flat.detach().floor().long()
    # One integer key per (cloud, voxel): a 1-D unique is far cheaper than a row-wise one.
    low = cells.min(0).values
    span = cells.max(0).values - low + 1
    c = cells - low
    batch = torch.arange(b, device=points.device).repeat_interleave(n)
    key = ((batch * span[0] + c[:, 0]) * span[1] + c[:, 1]) * span[2] + c[:, 2]
    keys, inverse = torch.unique(key, return_inverse=True)
    voxels = torch.stack([keys // (span[0] * span[1] * span[2]), (keys // (span[1] * span[2])) % span[0] + low[0],
                          (keys // span[2]) % span[1] + low[1], keys % span[2] + low[2]], dim=1)
    sums = flat.new_zeros(len(voxels), 3).index_add(0, inverse, flat)
    counts = flat.new_zeros(len(voxels)).index_add(0, inverse, flat.new_ones(b * n))
    means = sums / counts.unsqueeze(1)
    return _sparse_batch(ME, voxels, means, b)


def _sparse_batch(ME: Any, voxels: torch.Tensor, features: torch.Tensor, batch_size: int) -> SparseBatch:
    # ME may reorder rows: give it row numbers as features and read its order back from them.
    row_ids = torch.arange(len(voxels), dtype=torch.float64).unsqueeze(1)
    sparse = ME.SparseTensor(features=row_ids, coordinates=voxels.int().cpu())
    order = sparse.F[:, 0].long().to(features.device)
    return SparseBatch(sparse, features.index_select(0, order), batch_size)


class MEConvExp(nn.Module):
    """The seed's MinkowskiEngine network: [sparse conv k3 -> instance norm -> ReLU -> max pool 2] x depth,
    then the features on a dense 1 x 28 x 28 grid -> Linear -> 10 logits.

    The layers are ME modules (their parameters, shapes and initialisation), but ``forward`` computes with
    torch ops over ME's kernel maps (``models/sparse_ops.py``) so that the network is differentiable to
    second order.
    """

    def __init__(self, in_channel: int = 3, num_classes: int = 10, depth: int = 2, width: int = 128) -> None:
        super().__init__()
        ME = import_minkowski()
        self.convs = nn.ModuleList(
            ME.MinkowskiConvolution(in_channel if d == 0 else width, width, kernel_size=3, dimension=3)
            for d in range(depth))
        self.norms = nn.ModuleList(ME.MinkowskiInstanceNorm(width) for _ in range(depth))
        self.classifier = nn.Linear(width * GRID * GRID, num_classes)
        for conv in self.convs:
            ME.utils.kaiming_normal_(conv.kernel, mode="fan_out", nonlinearity="relu")

    def forward(self, x: SparseBatch) -> torch.Tensor:
        device = x.features.device
        manager, key = x.sparse.coordinate_manager, x.sparse.coordinate_map_key
        coords = x.sparse.C.long()
        feats = x.features
        stride = 1
        for conv, norm in zip(self.convs, self.norms, strict=True):
            batch = coords[:, 0].to(device)
            feats = sparse_conv(feats, conv.kernel, conv_map(manager, key, len(coords), device))
            feats = F.relu(instance_norm(feats, batch, x.batch_size, norm.weight, norm.bias))
            out_key = manager.stride(key, 2)
            out_coords = manager.get_coordinates(out_key).long()
            feats = sparse_max_pool(feats, pool_map(manager, key, out_key, len(coords), len(out_coords), device))
            key, coords, stride = out_key, out_coords, stride * 2
        return self._dense_linear(feats, coords.to(device), stride, x.batch_size)

    def _dense_linear(self, feats: torch.Tensor, coords: torch.Tensor, stride: int, batch_size: int) -> torch.Tensor:
        # Equal to Linear(flatten(dense [B, C, 1, 28, 28])) with the voxel at (h, w) / stride: only the
        # ceil(28 / stride)^2 cells a strided voxel can land in have columns that ever meet a feature.
        side = -(-GRID // stride)
        used = (torch.arange(side, device=feats.device).unsqueeze(1) * GRID
                + torch.arange(side, device=feats.device)).flatten()
        weight = self.classifier.weight.view(self.classifier.out_features, -1, GRID * GRID).index_select(2, used)
        cell = (coords[:, 2] // stride) * side + coords[:, 3] // stride
        return sparse_linear(feats, coords[:, 0], cell, batch_size, weight, self.classifier.bias)


# The dense networks' splatting input is the splat image itself (the evaluation's ``splat`` projection).
create_dense_splat = splat_images


def create_splat_input_batch(points: torch.Tensor) -> SparseBatch:
    """Splatting mode, sparse: every cell a cloud's points share into, as unique voxels with occupancy."""
    ME = import_minkowski()
    b = points.shape[0]
    batch, cells, weights = splat_cells(points)
    keys, inverse = torch.unique((batch * GRID + cells[:, 0]) * GRID + cells[:, 1], return_inverse=True)
    occupancy = soft_union(inverse, weights, len(keys)).unsqueeze(1)
    voxels = torch.stack([keys // (GRID * GRID), torch.zeros_like(keys), (keys // GRID) % GRID, keys % GRID], 1)
    return _sparse_batch(ME, voxels, occupancy, b)


# DC's ConvNet pads a 28 x 28 digit to 32 x 32 (padding 3 in its first convolution): the sparse ConvNet's
# voxels live in that 32 x 32 domain, digit cell (h, w) at voxel (h + 2, w + 2), so that ME's stride-2
# pooling groups exactly the cells that AvgPool2d(2) groups in the dense network.
CONVNET_PAD, CONVNET_DOMAIN = 2, 32
FULL_HALO = CONVNET_DOMAIN


def create_splat_halo_batch(points: torch.Tensor, halo: int) -> SparseBatch:
    """Splatted occupancy as sparse voxels in the ConvNet's 32 x 32 domain, plus a halo of empty voxels.

    Every cell a cloud's points share into carries its occupancy (``soft_union``); every cell within
    ``halo`` cells (Chebyshev distance) of one is added with occupancy 0, clipped to the domain, so the
    stride-1 convolutions can write around the cloud. ``halo >= 32`` (``FULL_HALO``) makes every cloud the
    full domain: the network then equals the dense ConvNet.
    """
    ME = import_minkowski()
    b = points.shape[0]
    batch, cells, weights = splat_cells(points)
    cells = cells + CONVNET_PAD
    if halo > 0:
        keys = torch.unique((batch * CONVNET_DOMAIN + cells[:, 0]) * CONVNET_DOMAIN + cells[:, 1])
        base = torch.stack([keys // (CONVNET_DOMAIN * CONVNET_DOMAIN), (keys // CONVNET_DOMAIN) % CONVNET_DOMAIN,
                            keys % CONVNET_DOMAIN], 1)
        span = torch.arange(-halo, halo + 1, device=points.device)
        offsets = torch.cartesian_prod(span, span)
        around = (base[:, None, 1:] + offsets).reshape(-1, 2)
        around_batch = base[:, :1].expand(-1, len(offsets)).reshape(-1)
        inside = ((around >= 0) & (around < CONVNET_DOMAIN)).all(1)
        batch = torch.cat([batch, around_batch[inside]])
        cells = torch.cat([cells, around[inside]])
        weights = torch.cat([weights, weights.new_zeros(int(inside.sum()))])
    keys, inverse = torch.unique((batch * CONVNET_DOMAIN + cells[:, 0]) * CONVNET_DOMAIN + cells[:, 1],
                                 return_inverse=True)
    occupancy = soft_union(inverse, weights, len(keys)).unsqueeze(1)
    square = CONVNET_DOMAIN * CONVNET_DOMAIN
    voxels = torch.stack([keys // square, torch.zeros_like(keys), (keys // CONVNET_DOMAIN) % CONVNET_DOMAIN,
                          keys % CONVNET_DOMAIN], 1)
    return _sparse_batch(ME, voxels, occupancy, b)


class MEConvNet(ConvNet):
    """DC's ConvNet (``models/MNIST.py``: conv 3x3 -> instance norm -> ReLU -> avg pool 2, x depth -> linear)
    computed on sparse voxels with MinkowskiEngine's coordinate maps.

    Same parameters as ``ConvNet`` (a state dict moves between them); the arithmetic is torch over ME's
    kernel and pooling maps, so it is exact to second order. With the full domain present (``FULL_HALO``) it
    equals ``ConvNet``. On a sparse input, what absent voxels are (``absent``):

    * ``skip`` (ME's own semantics): they do not exist. A convolution reads and writes only present voxels,
      instance norm takes its statistics over them, average pooling divides by the present inputs, and the
      classifier sees absent cells as 0.
    * ``background``: they are empty space and hold what the dense ConvNet computes there, one value per
      sample and channel carried beside the features (``models/sparse_ops.py``); norm statistics cover the
      whole domain. Exact at the first layer when the halo is >= 1; an approximation after it.
    """

    def __init__(self, channel: int = 1, num_classes: int = 10, width: int = 128, depth: int = 3,
                 absent: str = "skip", norm: str = "instance") -> None:
        super().__init__(channel=channel, num_classes=num_classes, width=width, depth=depth, norm=norm)
        import_minkowski()  # fail early, with the install hint, where ME is missing
        if absent not in ("skip", "background"):
            raise ValueError(f"absent must be skip or background, not {absent!r}")
        self.background = absent == "background"
        self.normalised = norm == "instance"
        self.blocks = [tuple(self.features[4 * d:4 * d + 2]) for d in range(depth)]
        self.final_size = CONVNET_DOMAIN >> depth

    def _blocks(self, x: SparseBatch) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Each block's present output voxels in turn: features [V, C], sample [V], cell (row * S + column on
        that block's S x S grid) [V], and the background [B, C] every absent cell holds (None when absent voxels
        are skipped: they hold 0)."""
        device = x.features.device
        manager, key = x.sparse.coordinate_manager, x.sparse.coordinate_map_key
        coords, feats, stride = x.sparse.C.long(), x.features, 1
        background = feats.new_zeros(x.batch_size, feats.shape[1])  # empty space: occupancy 0
        for conv, norm in self.blocks:
            batch = coords[:, 0].to(device)
            table = planar_conv_map(manager, key, coords, stride, device)
            if self.background:
                in_domain = window_in_domain(coords[:, 2:].to(device), stride, CONVNET_DOMAIN)
                feats, background = background_conv2d(feats, background, batch, conv.weight, conv.bias, table,
                                                       in_domain)
                if self.normalised:
                    cells = (CONVNET_DOMAIN // stride) ** 2
                    feats, background = background_instance_norm(feats, background, batch, cells, norm.weight,
                                                                 norm.bias, norm.eps)
                feats, background = F.relu(feats), F.relu(background)
            else:
                feats = sparse_conv2d(feats, conv.weight, conv.bias, table)
                if self.normalised:
                    feats = instance_norm(feats, batch, x.batch_size, norm.weight, norm.bias, eps=norm.eps)
                feats = F.relu(feats)
            out_key = manager.stride(key, 2)
            out_coords = manager.get_coordinates(out_key).long()
            pmap = pool_map(manager, key, out_key, len(coords), len(out_coords), device)
            feats = (background_avg_pool(feats, background, out_coords[:, 0].to(device), pmap) if self.background
                     else sparse_avg_pool(feats, pmap))
            key, coords, stride = out_key, out_coords, stride * 2
            on_grid = coords.to(device)
            cell = (on_grid[:, 2] // stride) * (CONVNET_DOMAIN // stride) + on_grid[:, 3] // stride
            yield feats, on_grid[:, 0], cell, background if self.background else None

    def _final_features(self, x: SparseBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``_blocks``' last block: the voxels the classifier reads."""
        *_, last = self._blocks(x)
        return last

    @staticmethod
    def _dense(feats: torch.Tensor, sample: torch.Tensor, cell: torch.Tensor, background: torch.Tensor | None,
               batch_size: int, cells: int) -> torch.Tensor:
        """The dense [B, C * cells] features (channel-major, as ``flatten`` of [B, C, S, S]), absent cells holding
        the background (or 0)."""
        # [B, cells, C] so that (sample, cell) picks a feature row; out-of-place index_put keeps autograd simple.
        dense = (feats.new_zeros(batch_size, cells, feats.shape[1]) if background is None
                 else background[:, None, :].expand(-1, cells, -1))
        return dense.index_put((sample, cell), feats).transpose(1, 2).flatten(1)

    def embed(self, x: SparseBatch) -> torch.Tensor:  # type: ignore[override]
        """``ConvNet.embed``: the dense [B, C * S * S] features, absent cells holding the background (or 0)."""
        return self._dense(*self._final_features(x), x.batch_size, self.final_size ** 2)

    def embed_layers(self, x: SparseBatch) -> list[torch.Tensor]:  # type: ignore[override]
        """``ConvNet.embed_layers``: every block's dense output, first to last."""
        return [self._dense(*block, x.batch_size, (CONVNET_DOMAIN >> (d + 1)) ** 2)
                for d, block in enumerate(self._blocks(x))]

    def forward(self, x: SparseBatch) -> torch.Tensor:  # type: ignore[override]
        feats, sample, cell, background = self._final_features(x)
        # Linear(flatten(dense [B, C, S, S])): every cell, present or not, holds the background (0 when skipping
        # absent voxels), so the present voxels enter as their difference from it.
        s = self.final_size
        weight = self.classifier.weight.view(self.classifier.out_features, -1, s * s)  # [10, C, S*S]
        if background is not None:
            feats = feats - background.index_select(0, sample)
        logits = sparse_linear(feats, sample, cell, x.batch_size, weight, self.classifier.bias)
        return logits + background @ weight.sum(2).T if background is not None else logits
