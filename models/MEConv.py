"""The distillation networks and their inputs.

Both take synthetic or real point sets whose coordinates enter as *features* (features = xyz): voxel
coordinates are integers and carry no gradient, so the features are the only path from the matching
loss back to the points.

* ``MEPytorch`` (``--pytorch``): the seed's dense network, [Conv3d (1,3,3) pad 1 -> ReLU -> MaxPool3d 2]
  x depth -> Linear, on a [B, 3, 1, 28, 28] grid.
* ``MEConvExp`` (default): the seed's MinkowskiEngine network, see ``models/sparse_ops.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
            y = F.max_pool2d(F.conv2d(x, conv.weight[:, :, 0], padding=1) + bias, 2)
            x = F.relu(torch.maximum(y, bias))
        return self.classifier(x.flatten(1))
