"""The evaluation networks: DC's ConvNet (width 128, depth 3, instance norm, ReLU, average pooling) and DC's
cross-architecture set (MLP, LeNet, AlexNet, VGG-11, ResNet-18), all for 1 x 28 x 28 inputs.

The cross-architecture models follow DC's ``networks.py`` (VICO-UoE/DatasetCondensation) at MNIST's size. Every
normalisation is instance norm (GroupNorm with one group per channel), as in DC's defaults ``VGG11`` and
``ResNet18`` (their BatchNorm variants are ``VGG11BN`` / ``ResNet18BN``): with 10 training images a batch
statistic is nearly meaningless, and no running buffers means N models stack and vmap as plain parameters.
``ARCHITECTURES`` maps each name (as in ``EVALUATION.architectures``) to its constructor.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class _LinearFunction(torch.autograd.Function):
    """A linear map with nothing to save: its backward is its transpose, applied to the gradient alone."""

    generate_vmap_rule = True  # lets torch.vmap through

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass


class _AvgPool2x2Function(_LinearFunction):
    """AvgPool2d(2) on even maps as four strided adds; its backward is ``_SpreadFunction``, whose backward is this.

    The same sum in the same order as ATen's CPU kernel ((a + b) + c) + d, then x 0.25, which equals its / 4 exactly
    (a power of two), and the pair transposes each other as ATen's avg_pool2d and its backward do, so values and
    gradients of every order are bit-identical; but ATen's NCHW kernel and its backward (a zero fill, then a
    scatter) are memory-slow on these small maps: 1.6x the time of this pair for a 10 x 128 x 32 x 32 map, fp32,
    one thread (the ConvNet's 10-image training step: 38.9 -> 35.9 ms, best of 300).
    """

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return (x[..., ::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, ::2] + x[..., 1::2, 1::2]) * 0.25

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SpreadFunction.apply(grad)


class _SpreadFunction(_LinearFunction):
    """AvgPool2d(2)'s backward: each output's gradient / 4 to its 2 x 2 window (a broadcast, no scatter)."""

    @staticmethod
    def forward(grad: torch.Tensor) -> torch.Tensor:
        # Columns, then rows: two copies with contiguous inner runs beat one 6-D broadcast copy ~1.6x.
        *lead, h, w = grad.shape
        cols = (grad * 0.25).unsqueeze(-1).expand(*lead, h, w, 2).reshape(*lead, h, 2 * w)
        return cols.unsqueeze(-2).expand(*lead, h, 2, 2 * w).reshape(*lead, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AvgPool2x2Function.apply(grad)


class AvgPool2x2(nn.Module):
    """``nn.AvgPool2d(2, 2)``, bit-identical; faster on the CPU for contiguous float32 / float64 maps of even size.

    Channels-last maps keep ATen's kernel: it vectorises over the channels there and beat the strided adds
    (a 20-image test chunk of the ConvNet: 21.8 against 25.4 ms; NCHW 26.9 against 22.6 ms; one thread).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dtype in (torch.float32, torch.float64) and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
                and x.is_contiguous()):
            return _AvgPool2x2Function.apply(x)
        return F.avg_pool2d(x, 2, 2)


class ConvNet(nn.Module):
    """[conv 3x3 -> instance norm -> ReLU -> avg pool 2] x depth -> linear.

    A 28x28 single-channel input gets padding 3 in the first convolution, so the features are 32x32 as
    in DC; instance norm is GroupNorm with one group per channel. ``norm = "none"`` is DC's ``ConvNetNoNorm``
    (an identity in the norm's place, so the other layers keep their state-dict names).
    """

    def __init__(self, channel: int = 1, num_classes: int = 10, width: int = 128, depth: int = 3,
                 im_size: int = 28, norm: str = "instance") -> None:
        super().__init__()
        if norm not in ("instance", "none"):
            raise ValueError(f"norm must be instance or none, not {norm!r}")
        size = 32 if im_size == 28 else im_size
        layers: list[nn.Module] = []
        in_ch = channel
        for d in range(depth):
            pad = 3 if (channel == 1 and d == 0 and im_size == 28) else 1
            layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=pad),
                       nn.GroupNorm(width, width, affine=True) if norm == "instance" else nn.Identity(),
                       nn.ReLU(inplace=True),
                       AvgPool2x2()]
            in_ch = width
            size //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier reads, [B, width * S * S] (DM's embedding)."""
        return self.features(x).flatten(1)

    def embed_layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, [B, width * S_d * S_d] each, first to last (the last is ``embed``)."""
        layers = []
        for d in range(0, len(self.features), 4):  # conv, norm, ReLU, pool
            x = self.features[d:d + 4](x)
            layers.append(x.flatten(1))
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def instance_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels, channels, affine=True)


class MLP(nn.Module):
    """784 -> 128 -> 128 -> 10 with ReLU (DC's MLP)."""

    def __init__(self, channel: int = 1, num_classes: int = 10, im_size: int = 28) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(channel * im_size * im_size, 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 128 hidden features the last layer reads (DM's embedding)."""
        return F.relu(self.fc_2(F.relu(self.fc_1(x.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_3(self.embed(x))


class LeNet(nn.Module):
    """[conv 5x5 -> ReLU -> max pool 2] x 2 (6, 16 channels) -> 120 -> 84 -> 10; the first conv pads 28x28 by 2."""

    def __init__(self, channel: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channel, 6, kernel_size=5, padding=2 if channel == 1 else 0), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(),
            nn.MaxPool2d(2, 2))
        self.classifier = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                        nn.Linear(84, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 84 features the last linear layer reads (DM's embedding)."""
        return self.classifier[:-1](self.features(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[-1](self.embed(x))


class AlexNet(nn.Module):
    """DC's small AlexNet: conv 5x5 (128, 192), conv 3x3 (256, 192, 192), three max pools, no norm -> 10.

    The first convolution pads a 28x28 input by 4, so the features are 32x32 -> 4x4 as for CIFAR.
    """

    def __init__(self, channel: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channel, 128, kernel_size=5, padding=4 if channel == 1 else 2), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 2))
        self.classifier = nn.Linear(192 * 4 * 4, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier reads (DM's embedding)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with instance norm: [conv 3x3 -> norm -> ReLU] blocks and 5 max pools, 32x32 -> 1x1 -> linear.

    As in DC, the first convolution pads a 28x28 input by 3 so the five poolings end at 1x1.
    """

    def __init__(self, channel: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channel
        for i, v in enumerate(VGG11_CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            pad = 3 if channel == 1 and i == 0 else 1
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=pad), instance_norm(v), nn.ReLU()]
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (1x1 conv + norm when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm1 = instance_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm2 = instance_norm(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                                          instance_norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with instance norm (DC's ``ResNet18``): 3x3 stem, 4 stages of 2 blocks (64-512 channels).

    On 28x28 the stages run at 28, 14, 7 and 4 pixels; a 4x4 average pool leaves 512 features.
    """

    def __init__(self, channel: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channel, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm1 = instance_norm(64)
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.norm1(self.conv1(x))))
        return self.classifier(F.avg_pool2d(out, 4).flatten(1))


# Name (as in EVALUATION.architectures) -> constructor of a fresh model for 1 x 28 x 28 digits, 10 classes.
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "convnet": ConvNet,
    "mlp": MLP,
    "lenet": LeNet,
    "alexnet": AlexNet,
    "vgg11": VGG11,
    "resnet18": ResNet18,
}
