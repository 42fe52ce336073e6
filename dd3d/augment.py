"""Image augmentation of the evaluation models' training digits (EVALUATION.augment_strategy), batched.

``dc``: DC's ``crop_scale_rotate`` strategy for MNIST, one of crop 4 px / scale +-20 % / rotate +-45 degrees drawn
per image, the background filled with the batch mean. ``dsa``: DSA's evaluation strategy (``color_crop_cutout_
flip_scale_rotate`` with ParamDiffAug's values) without the flip (digits are not mirror-symmetric), one of its
five families drawn per image (DSA draws one per batch; per image gives every batch all five): colour
(brightness +-0.5 then contrast x0.5-1.5 about the image mean), crop (translation <= 4 px), cutout (a 14 x 14
square centred anywhere set to 0), scale (1/1.2-1.2 per axis), rotate (+-15 degrees); outside the image is 0.

Each strategy draws its random numbers per call (``draw``, in a fixed order) and applies them to a stack of
models' batches [N, M, C, H, W] at once (``apply``), so model k's augmentation is the same whether its batch is
augmented alone or in the stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

Draws = tuple[torch.Tensor, ...]


class ImageAugment(Protocol):
    def draw(self, m: int, g: torch.Generator) -> Draws: ...

    def apply(self, images: torch.Tensor, draws: Draws) -> torch.Tensor: ...


def warp_images(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Images [M, C, H, W] resampled through affine maps [M, 2, 3] (output -> input, grid_sample's [-1, 1] space)."""
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)  # images' device and dtype
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine(m: int, shift: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor, crop: torch.Tensor,
            scaled: torch.Tensor, rotated: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Affine maps [M, 2, 3]: identity, but a shift in pixels where ``crop``, a per-axis scale where ``scaled``
    (output -> input, so 1 / the image's magnification), a rotation where ``rotated``."""
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[crop, 0, 2] = -2 * shift[crop, 0] / w
    theta[crop, 1, 2] = -2 * shift[crop, 1] / h
    theta[scaled, 0, 0] = scale[scaled, 0]
    theta[scaled, 1, 1] = scale[scaled, 1]
    cos, sin = torch.cos(angle[rotated]), torch.sin(angle[rotated])
    theta[rotated, 0, 0], theta[rotated, 0, 1], theta[rotated, 1, 0], theta[rotated, 1, 1] = cos, -sin, sin, cos
    return theta


class DCAugment:
    CROP_PX, SCALE, ROTATE_DEG = 4, 0.2, 45.0

    def draw(self, m: int, g: torch.Generator) -> Draws:
        choice = torch.randint(0, 3, (m,), generator=g)
        shift = torch.randint(-self.CROP_PX, self.CROP_PX + 1, (m, 2), generator=g).float()
        scale = 1 + (torch.rand(m, 2, generator=g) * 2 - 1) * self.SCALE
        angle = (torch.rand(m, generator=g) * 2 - 1) * math.radians(self.ROTATE_DEG)
        return choice, shift, scale, angle

    def apply(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        choice, shift, scale, angle = draws
        n, m, c, h, w = images.shape
        theta = _affine(n * m, shift, 1 / scale, angle, choice == 0, choice == 1, choice == 2, h, w)
        fill = images.mean(dim=(1, 3, 4), keepdim=True)  # each model's own batch mean (DC fills with it)
        return warp_images((images - fill).flatten(0, 1), theta).view(n, m, c, h, w) + fill


class DSAAugment:
    KINDS = ("color", "crop", "cutout", "scale", "rotate")
    CROP_PX, SCALE, ROTATE_DEG, CUTOUT_PX = 4, 1.2, 15.0, 14  # ParamDiffAug at 28 x 28: crop 0.125, cutout 0.5
    BRIGHTNESS, CONTRAST = 1.0, 0.5

    def draw(self, m: int, g: torch.Generator) -> Draws:
        choice = torch.randint(0, len(self.KINDS), (m,), generator=g)
        shift = torch.randint(-self.CROP_PX, self.CROP_PX + 1, (m, 2), generator=g).float()
        scale = torch.rand(m, 2, generator=g) * (self.SCALE - 1 / self.SCALE) + 1 / self.SCALE
        angle = (torch.rand(m, generator=g) * 2 - 1) * math.radians(self.ROTATE_DEG)
        brightness = (torch.rand(m, generator=g) - 0.5) * self.BRIGHTNESS
        contrast = torch.rand(m, generator=g) * 2 * self.CONTRAST + 1 - self.CONTRAST
        centre = torch.randint(0, 29, (m, 2), generator=g)  # DSA: 0 .. size + (1 - cutout % 2)
        return choice, shift, scale, angle, brightness, contrast, centre

    def apply(self, images: torch.Tensor, draws: Draws) -> torch.Tensor:
        choice, shift, scale, angle, brightness, contrast, centre = draws
        n, m, c, h, w = images.shape
        x = images.flatten(0, 1)
        kind = {name: choice == i for i, name in enumerate(self.KINDS)}
        # Only the geometric families are resampled (colour and cutout stay exact). DSA's scale matrix maps
        # output -> input as given, so a factor > 1 shrinks the digit.
        theta = _affine(n * m, shift, scale, angle, kind["crop"], kind["scale"], kind["rotate"], h, w)
        moved = torch.nonzero(kind["crop"] | kind["scale"] | kind["rotate"]).flatten()
        on_device = moved.to(x.device)
        x = x.index_copy(0, on_device, warp_images(x[on_device], theta[moved]))
        bright = x + brightness.to(x).view(-1, 1, 1, 1)
        mean = bright.mean(dim=(1, 2, 3), keepdim=True)
        colored = (bright - mean) * contrast.to(x).view(-1, 1, 1, 1) + mean
        x = torch.where(kind["color"].to(x.device).view(-1, 1, 1, 1), colored, x)
        low = (centre - self.CUTOUT_PX // 2).to(x.device)
        rows = torch.arange(h, device=x.device) - low[:, :1]  # [M, H]: inside the square where 0 <= . < CUTOUT_PX
        cols = torch.arange(w, device=x.device) - low[:, 1:]
        inside = ((rows >= 0) & (rows < self.CUTOUT_PX))[:, :, None] & ((cols >= 0) & (cols < self.CUTOUT_PX))[:, None]
        cut = kind["cutout"].to(x.device)[:, None, None] & inside
        return x.masked_fill(cut[:, None], 0.0).view(n, m, c, h, w)


STRATEGIES: dict[str, ImageAugment] = {"dc": DCAugment(), "dsa": DSAAugment()}


def augment(images: torch.Tensor, generator: torch.Generator, strategy: str = "dc") -> torch.Tensor:
    """One batch [M, C, H, W] augmented by ``strategy`` (one transform drawn per image from ``generator``)."""
    aug = STRATEGIES[strategy]
    return aug.apply(images[None], aug.draw(len(images), generator))[0]


def augment_stacked(images: torch.Tensor, generators: Sequence[torch.Generator], strategy: str = "dc") -> torch.Tensor:
    """``augment`` of each model's batch [N, M, C, H, W] with that model's generator, applied in one call."""
    aug = STRATEGIES[strategy]
    draws = [aug.draw(images.shape[1], g) for g in generators]  # each generator read exactly as augment reads it
    return aug.apply(images, tuple(torch.cat(parts) for parts in zip(*draws, strict=True)))
