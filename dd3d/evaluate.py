"""Evaluation: train fresh DC ConvNets on a (projected) synthetic set and test them on MNIST.

Augmentation follows DC's ``crop_scale_rotate`` strategy (one of crop 4 px / scale +-20 % / rotate +-45
degrees drawn per image, background filled with the batch mean), done for the whole batch at once with
one affine grid on the tensor's device instead of per-image scipy calls.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from configs.settings import Settings
from models.MNIST import ConvNet

CROP_PX, SCALE, ROTATE_DEG = 4, 0.2, 45.0


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DC crop/scale/rotate augmentation, one randomly chosen transform per image. [M, C, H, W]."""
    m, _, h, w = images.shape
    g = generator
    choice = torch.randint(0, 3, (m,), generator=g)
    # Affine maps output -> input coordinates in grid_sample's normalised [-1, 1] space.
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    shift = torch.randint(-CROP_PX, CROP_PX + 1, (m, 2), generator=g).float()
    crop = choice == 0
    theta[crop, 0, 2] = -2 * shift[crop, 0] / w
    theta[crop, 1, 2] = -2 * shift[crop, 1] / h
    scale = 1 + (torch.rand(m, 2, generator=g) * 2 - 1) * SCALE
    sc = choice == 1
    theta[sc, 0, 0] = 1 / scale[sc, 0]
    theta[sc, 1, 1] = 1 / scale[sc, 1]
    angle = (torch.rand(m, generator=g) * 2 - 1) * math.radians(ROTATE_DEG)
    rot = choice == 2
    cos, sin = torch.cos(angle[rot]), torch.sin(angle[rot])
    theta[rot, 0, 0], theta[rot, 0, 1], theta[rot, 1, 0], theta[rot, 1, 1] = cos, -sin, sin, cos
    theta = theta.to(images.device)
    fill = images.mean(dim=(0, 2, 3), keepdim=True)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


@dataclass(frozen=True)
class EvalResult:
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


def train_model(images: torch.Tensor, labels: torch.Tensor, settings: Settings,
                generator: torch.Generator) -> ConvNet:
    """DC's schedule: SGD with momentum and weight decay, learning rate x0.1 at half the epochs."""
    net = ConvNet().to(images.device)
    lr = settings.classifier_lr
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=settings.eval_momentum,
                          weight_decay=settings.eval_weight_decay)
    net.train()
    for epoch in range(settings.eval_epochs):
        if epoch == settings.eval_epochs // 2 and epoch > 0:
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=settings.eval_momentum,
                                  weight_decay=settings.eval_weight_decay)
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for batch in order.split(settings.eval_batch_size):
            x = images[batch]
            if settings.augment:
                x = augment(x, generator)
            loss = F.cross_entropy(net(x), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def test_accuracy(net: ConvNet, images: torch.Tensor, labels: torch.Tensor, augment_test: bool,
                  generator: torch.Generator, batch_size: int = 2000) -> float:
    # channels_last: the large test batches run their convolutions and pooling ~15 % faster on the CPU.
    net.eval().to(memory_format=torch.channels_last)
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        if augment_test:
            x = augment(x, generator)
        logits = net(x.contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return correct / len(images)


def evaluate_set(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                 test_labels: torch.Tensor, settings: Settings, seed: int) -> EvalResult:
    """Train ``settings.eval_models`` fresh ConvNets on (images, labels); test accuracy of each.

    Runs on its own random streams (seeded from ``seed``), so evaluating never changes the distillation.
    """
    accuracies = []
    devices = [images.device] if images.device.type == "cuda" else []
    for k in range(settings.eval_models):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed * 1000 + k)
            generator = torch.Generator().manual_seed(seed * 1000 + k)
            net = train_model(images, labels, settings, generator)
            accuracies.append(test_accuracy(net, test_images, test_labels, settings.augment_test, generator))
    return EvalResult(accuracies)
