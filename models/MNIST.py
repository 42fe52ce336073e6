"""The evaluation network: DC's ConvNet (width 128, depth 3, instance norm, ReLU, average pooling)."""

import torch
from torch import nn


class ConvNet(nn.Module):
    """[conv 3x3 -> instance norm -> ReLU -> avg pool 2] x depth -> linear.

    A 28x28 single-channel input gets padding 3 in the first convolution, so the features are 32x32 as
    in DC; instance norm is GroupNorm with one group per channel.
    """

    def __init__(self, channel: int = 1, num_classes: int = 10, width: int = 128, depth: int = 3,
                 im_size: int = 28) -> None:
        super().__init__()
        size = 32 if im_size == 28 else im_size
        layers: list[nn.Module] = []
        in_ch = channel
        for d in range(depth):
            pad = 3 if (channel == 1 and d == 0 and im_size == 28) else 1
            layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=pad),
                       nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True),
                       nn.AvgPool2d(kernel_size=2, stride=2)]
            in_ch = width
            size //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
