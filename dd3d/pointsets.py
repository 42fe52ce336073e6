"""MNIST digits as sparse 3D point sets, and synthetic point sets back to images.

A point is (depth, row, col) in pixel units; digits lie on the depth-0 plane. Voxels have size 1, so a
point belongs to voxel floor(point).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

IMAGE_SIZE = 28


def binarize(images: torch.Tensor, threshold: int) -> torch.Tensor:
    """uint8 digits [M, 28, 28] -> bool occupancy (pixel value above ``threshold``)."""
    return images > threshold


ARGSORT_ROWS = 4096


def capped_pixel_indices(occupancy: torch.Tensor, num_points: int) -> torch.Tensor:
    """Flat indices (row * 28 + col) of the first ``num_points`` occupied pixels in raster order.

    Returns int64 [M, num_points]. As in the seed, a digit with more pixels loses its last ones. A digit
    with fewer is padded by repeating its first pixel: a duplicate lands in the same voxel with the same
    coordinates, so the voxel (and its mean feature) is unchanged. An empty image maps to pixel 0.
    """
    flat = occupancy.reshape(occupancy.shape[0], -1)
    # In slices of rows: the int64 sort keys, argsort and counts of all 60 000 training digits at once took
    # ~1.1 GB for a moment, more than the distillation itself needs.
    return torch.cat([_capped_rows(part, num_points) for part in flat.split(ARGSORT_ROWS)])


def _capped_rows(flat: torch.Tensor, num_points: int) -> torch.Tensor:
    m, p = flat.shape
    order = torch.arange(p, device=flat.device).expand(m, p)
    # Occupied pixels sort first, each group in raster order.
    idx = torch.where(flat, order, order + p).argsort(dim=1)
    if num_points > p:
        idx = torch.cat([idx, idx[:, :1].expand(m, num_points - p)], dim=1)
    idx = idx[:, :num_points]
    count = flat.sum(dim=1, keepdim=True).clamp(min=1)
    slot = torch.arange(num_points, device=flat.device).expand(m, num_points)
    return torch.where(slot < count, idx, idx[:, :1])


def pixel_indices_to_points(idx: torch.Tensor) -> torch.Tensor:
    """Flat pixel indices [..., N] -> float points [..., N, 3] as (0, row, col)."""
    rows = torch.div(idx, IMAGE_SIZE, rounding_mode="floor")
    return torch.stack([torch.zeros_like(idx), rows, idx - rows * IMAGE_SIZE], dim=-1).float()


def init_uniform(num_clouds: int, num_points: int, generator: torch.Generator) -> torch.Tensor:
    """Synthetic clouds uniform in [0, 28)^3, [num_clouds, num_points, 3]."""
    return torch.rand(num_clouds, num_points, 3, generator=generator) * IMAGE_SIZE


def spread_padding(points: torch.Tensor, spread: float, generator: torch.Generator) -> torch.Tensor:
    """Digit clouds [B, N, 3] whose padding (the copies of the first point that fill a digit with fewer than N
    pixels, ``capped_pixel_indices``) is dealt out over the digit's own points in turn, each copy moved by a
    uniform offset in [-spread, spread] px along row and col.

    Why: stacked copies get the same gradient at every step, so the optimiser moves them as one point and a
    cloud of N points has only as many free points as its digit has pixels. Spread apart, every point moves
    on its own. A real pixel's centre point still fills its own cell, so the image gains gray only next to the
    digit's pixels, at most ``spread`` of a pixel per copy. ``spread`` 0: the points as they are (copies stacked).
    """
    if spread == 0:
        return points
    b, n, _ = points.shape
    copy = (points == points[:, :1]).all(-1)
    copy[:, 0] = False
    count = n - copy.sum(1, keepdim=True)  # the digit's own points lead, in raster order
    slot = torch.arange(n, device=points.device).expand(b, n)
    source = torch.where(slot < count, slot, (slot - count) % count)
    offset = (torch.rand(b, n, 2, generator=generator) * 2 - 1).to(points) * spread
    moved = points.gather(1, source[..., None].expand(b, n, 3)).clone()
    moved[..., 1:] += offset * (slot >= count)[..., None]
    return moved


def constrain_(points: torch.Tensor, low: float = 0, high: float = IMAGE_SIZE - 1) -> None:
    """In place, without autograd: clamp to the grid [low, high] (default [0, 27]) and onto the depth-0 plane."""
    with torch.no_grad():
        points.clamp_(low, high)
        points[..., 0] = 0


def points_to_images(points: torch.Tensor) -> torch.Tensor:
    """Binary projection: float [M, 1, 28, 28], 1 where at least one point's voxel lands."""
    m = points.shape[0]
    cells = points.detach()[..., 1:].floor().long().clamp(0, IMAGE_SIZE - 1)
    flat = cells[..., 0] * IMAGE_SIZE + cells[..., 1]
    images = torch.zeros(m, IMAGE_SIZE * IMAGE_SIZE, device=points.device)
    images.scatter_(1, flat, 1.0)
    return images.view(m, 1, IMAGE_SIZE, IMAGE_SIZE)


def occupancy_to_images(occupancy: torch.Tensor) -> torch.Tensor:
    """Bool [M, 28, 28] -> float [M, 1, 28, 28] (the evaluation's view of real digits)."""
    return occupancy.float().unsqueeze(1)


class RealClouds:
    """The training digits as capped point sets, precomputed once; batches are drawn per class by index."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, threshold: int, num_points: int,
                 num_classes: int = 10) -> None:
        self.occupancy = binarize(images, threshold)
        self.pixel_idx = capped_pixel_indices(self.occupancy, num_points)
        self.labels = labels
        self.num_points = num_points
        self.class_indices = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]

    def per_class(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """``k`` random digits of every class, class-major: [10 * k, num_points, 3] (init and baseline)."""
        return torch.cat([self.sample(c, k, generator) for c in range(len(self.class_indices))])

    def class_means(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """``k`` thresholded class-mean digits per class, class-major: [10 * k, num_points, 3]."""
        return class_mean_clouds(self.occupancy, self.labels, self.num_points, k, generator,
                                 len(self.class_indices))

    def herding(self, k: int) -> torch.Tensor:
        """``k`` digits per class chosen by herding, class-major: [10 * k, num_points, 3] (a baseline)."""
        return self.selected(lambda pixels: herding_select(pixels, k))

    def kmeans(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """``k`` digits per class, the nearest to the centres of a k-means of the class's binarised pixels,
        class-major: [10 * k, num_points, 3] (a baseline)."""
        return self.selected(lambda pixels: kmeans_select(pixels, k, generator))

    def selected(self, select: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The digits ``select`` picks from each class's binarised pixels [n, 784] (row indices), class-major."""
        picks = [select(self.occupancy[idx].flatten(1).float()) for idx in self.class_indices]
        chosen = torch.cat([idx[p] for idx, p in zip(self.class_indices, picks, strict=True)])
        return pixel_indices_to_points(self.pixel_idx[chosen])

    def digits(self, kind: str, k: int, generator: torch.Generator) -> torch.Tensor:
        """``k`` real-digit clouds per class of one baseline kind (random-real, class-mean, herding or kmeans),
        the same sets whether they are evaluated as a baseline or start a distillation."""
        if kind == "random-real":
            return self.per_class(k, generator)
        if kind == "class-mean":
            return self.class_means(k, generator)
        if kind == "herding":
            return self.herding(k)
        if kind == "kmeans":
            return self.kmeans(k, generator)
        raise ValueError(f"unknown real-digit set {kind!r}")

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random digits of class ``c`` (without replacement) as points [n, num_points, 3]."""
        pool = self.class_indices[c]
        pick = pool[torch.randperm(len(pool), generator=generator)[:n]]
        return pixel_indices_to_points(self.pixel_idx[pick])


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows chosen greedily so that the running mean of the chosen rows stays closest to the
    mean of all rows (herding, Welling 2009; DC's coreset baseline). Deterministic; no row twice.

    Here the features are the binarised pixels themselves: no trained embedding is involved.
    """
    mean = features.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool)
    for step in range(1, k + 1):
        # Distance of the new running mean (total + x) / step to the mean, for every candidate x.
        gap = ((total + features) / step - mean).square().sum(1)
        gap[~available] = float("inf")
        i = int(gap.argmin())
        chosen.append(i)
        available[i] = False
        total += features[i]
    return torch.tensor(chosen, dtype=torch.long)


def kmeans_select(features: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 50) -> torch.Tensor:
    """Indices of ``k`` distinct rows, each the nearest to one centre of a k-means of the rows (k-means++ start,
    Lloyd's iterations; seeded by ``generator``). Where herding picks rows whose *mean* tracks the data's, these
    cover its modes: k typical digits of k different styles.
    """
    # k-means++: each next centre drawn with probability proportional to the squared distance to the nearest one.
    centres = features[torch.randint(len(features), (1,), generator=generator)]
    for _ in range(1, k):
        gap = torch.cdist(features, centres).square().amin(1)
        gap = gap.where(gap.sum() > 0, torch.ones_like(gap))  # every row already a centre: any row
        centres = torch.cat([centres, features[torch.multinomial(gap, 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(features, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, features)
        # A centre that lost every row keeps its place (it cannot with k-means++ unless rows repeat).
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.equal(updated, centres):
            break
        centres = updated
    distance = torch.cdist(centres, features)
    chosen: list[int] = []
    for row in distance:  # k centres: the nearest row not taken by an earlier centre (rows may repeat)
        row[chosen] = float("inf")
        chosen.append(int(row.argmin()))
    return torch.tensor(chosen, dtype=torch.long)


def class_mean_clouds(occupancy: torch.Tensor, labels: torch.Tensor, num_points: int, per_class: int,
                      generator: torch.Generator, num_classes: int = 10) -> torch.Tensor:
    """The mean binary digit of a class, thresholded at 1/2, as a capped cloud (baseline and init).

    With ``per_class`` > 1 each cloud is the mean of one of ``per_class`` random disjoint parts of the class.
    Returns points [num_classes * per_class, num_points, 3], class-major like the synthetic set.
    """
    means = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        means += [occupancy[part].float().mean(0) > 0.5 for part in idx.tensor_split(per_class)]
    return pixel_indices_to_points(capped_pixel_indices(torch.stack(means), num_points))


def bilinear_corners(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Splatting weights of points [B, N, 3] on the depth-0 plane.

    Cell (h, w) covers [h, h+1) x [w, w+1) with its centre at (h + 0.5, w + 0.5); a point spreads its unit
    occupancy over the four cells whose centres surround it, with bilinear weights in its continuous
    position. A point at a cell centre lands wholly in that cell (and the cell is floor(point), as in the
    binary projection), so the weights, unlike voxel membership, have a gradient w.r.t. the coordinates.
    Returns cells long [B, N, 4, 2] (row, col) and weights [B, N, 4].
    """
    u = points[..., 1:] - 0.5
    base = u.detach().floor()
    frac = u - base
    corners = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], device=points.device)
    cells = base.long().unsqueeze(2) + corners  # [B, N, 4, 2]
    pick = corners.to(points.dtype)
    weights = (pick * frac.unsqueeze(2) + (1 - pick) * (1 - frac.unsqueeze(2))).prod(-1)
    return cells, weights


SPLAT_LOW, SPLAT_HIGH = 0.5, IMAGE_SIZE - 0.5
# Added to a real digit's pixel indices: the pixel's cell centre, which the splat draws wholly in its own cell.
CELL_CENTRE = (0.0, 0.5, 0.5)


def in_grid(cells: torch.Tensor) -> torch.Tensor:
    """Which (row, col) cells [..., 2] lie on the 28 x 28 grid."""
    return ((cells >= 0) & (cells < IMAGE_SIZE)).all(-1)


def splat_cells(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened in-grid (cloud, row, col) cells and weights of the bilinear splat (see ``bilinear_corners``).

    All four corners are kept, even with weight 0 (a point exactly at a cell centre): their weights still
    have a gradient, which is what lets a point move into a neighbouring cell.
    """
    b = points.shape[0]
    cells, weights = bilinear_corners(points)
    batch = torch.arange(b, device=points.device).view(b, 1, 1).expand(weights.shape)
    keep = in_grid(cells)
    return batch[keep], cells[keep], weights[keep]


SPLAT_EPS = 1e-3


def soft_union(index: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """Occupancy of each cell: 1 - prod_i (1 - (1 - eps) w_i), a differentiable union of the points' shares.

    It is ~1 for a real pixel however many duplicate points it holds, saturates smoothly when synthetic
    points pile up, and, unlike a clamp at 1, keeps a gradient for every point.
    """
    log_empty = torch.log1p(-(1 - SPLAT_EPS) * weights)
    return -torch.expm1(weights.new_zeros(size).index_add(0, index, log_empty))


def splat_images(points: torch.Tensor) -> torch.Tensor:
    """Splat projection: occupancy [B, 1, 28, 28] of the points' bilinear shares (``soft_union``); what the
    splatting networks see, and the gray image the ``splat`` evaluation projection trains on."""
    b = points.shape[0]
    cells, weights = bilinear_corners(points)
    size = b * IMAGE_SIZE * IMAGE_SIZE
    batch = torch.arange(b, device=points.device).view(b, 1, 1)
    flat = (batch * IMAGE_SIZE + cells[..., 0]) * IMAGE_SIZE + cells[..., 1]
    # Corners off the grid go to one spare cell, cut off after the sum, rather than being masked out: the same image
    # and gradients (tested), with tensors of one shape per batch shape instead of data-dependent ones. A run with
    # DISTILLATION.pixel_match, which splats every real batch, grew with masking; with the spare cell it grows less
    # (10 iterations at fifty per class, outer 2 x inner 3: peak RSS 2.06 -> 1.62 GB; 1.27 GB without the term).
    flat = torch.where(in_grid(cells), flat, size)
    return soft_union(flat.flatten(), weights.flatten(), size + 1)[:size].view(b, 1, IMAGE_SIZE, IMAGE_SIZE)


def project_points(points: torch.Tensor, projection: str) -> torch.Tensor:
    """Synthetic clouds as the evaluation's images: ``binary`` (``points_to_images``) or ``splat``
    (``splat_images``, detached)."""
    return splat_images(points.detach()) if projection == "splat" else points_to_images(points)


@dataclass(frozen=True)
class MatchRanges:
    """How far the match's shift (px per axis), scale (per-axis factor in [scale_min, scale_max]) and rotation
    (degrees either way) may go."""

    shift_px: float
    scale_min: float
    scale_max: float
    rotate_deg: float


# DISTILLATION.augment_ranges: dsa = DSA's MNIST ranges (every run before the key); dc = the evaluation's default
# augmentation (DC's crop_scale_rotate: crop 4 px, scale 1 +- 0.2, rotate +- 45 degrees), so the set is matched
# over the transforms its evaluation models will train under.
MATCH_RANGES = {"dsa": MatchRanges(4.0, 1 / 1.2, 1.2, 15.0), "dc": MatchRanges(4.0, 0.8, 1.2, 45.0)}
DSA_RANGES = MATCH_RANGES["dsa"]


MATCH_KINDS = ("shift", "scale", "rotate", "cutout")
# DSA's cutout: a square of half the image's side, centred anywhere in the image (it may hang over the border).
CUTOUT_PX = IMAGE_SIZE / 2
# Where a cut-out point goes: far enough off the grid that none of its splat corners lands in it.
OFF_GRID = -4.0 * IMAGE_SIZE


def planar_affine(kind: str, u: torch.Tensor,
                  ranges: MatchRanges = DSA_RANGES) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [2, 2], t [2]) of a shift / scale / rotate from two uniform draws ``u`` [2] in [0, 1), within ``ranges``
    (by default DSA's MNIST ranges: shift up to 4 px per axis, scale in [1/1.2, 1.2] per axis, rotation up to 15
    degrees)."""
    a, t = torch.eye(2), torch.zeros(2)
    if kind == "shift":
        t = (u * 2 - 1) * ranges.shift_px
    elif kind == "scale":
        a = torch.diag(u * (ranges.scale_max - ranges.scale_min) + ranges.scale_min)
    else:
        angle = (u[0] * 2 - 1) * math.radians(ranges.rotate_deg)
        cos, sin = math.cos(angle), math.sin(angle)
        a = torch.tensor([[cos, -sin], [sin, cos]])
    return a, t


def random_planar_transform(generator: torch.Generator,
                            ranges: MatchRanges = DSA_RANGES) -> tuple[torch.Tensor, torch.Tensor]:
    """One of shift / scale / rotate drawn at random (DSA's single-transform mode, without colour, which binary
    points do not have, and without flips, which digits must not get).

    Returns (A [2, 2], t [2]) acting on (row, col) about the image centre: p' = A (p - c) + c + t (``planar_affine``).
    """
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    return planar_affine(MATCH_KINDS[kind], torch.rand(2, generator=generator), ranges)


def random_match_augment(generator: torch.Generator,
                         kinds: Sequence[str] = MATCH_KINDS[:3],
                         ranges: MatchRanges = DSA_RANGES) -> Callable[[torch.Tensor], torch.Tensor]:
    """One of ``kinds`` (MATCH_KINDS) drawn at random, as the function that applies that one draw to any clouds
    [..., N, 3]: the match applies it to the real batch and to the synthetic clouds alike (DSA's Siamese
    augmentation). With the default kinds it draws what ``random_planar_transform`` draws, from the same stream."""
    kind = kinds[int(torch.randint(0, len(kinds), (1,), generator=generator))]
    u = torch.rand(2, generator=generator)
    if kind == "cutout":
        return partial(cut_out, centre=u * IMAGE_SIZE)
    a, t = planar_affine(kind, u, ranges)
    return partial(transform_points, a=a, t=t)


def cut_out(points: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Points [..., N, 3] whose (row, col) lie in the CUTOUT_PX square about ``centre`` [2] moved off the grid, so
    they fall out of the input as the pixels under DSA's cutout go black; the others unchanged. A cut point's
    coordinates get no gradient, as a cut pixel's value gets none."""
    planar = points[..., 1:]
    offset = planar - centre.to(planar)
    inside = ((offset >= -CUTOUT_PX / 2) & (offset < CUTOUT_PX / 2)).all(-1, keepdim=True)
    return torch.cat([points[..., :1], torch.where(inside, planar.new_tensor(OFF_GRID), planar)], dim=-1)


def random_planar_transforms(n: int, generator: torch.Generator,
                             ranges: MatchRanges = DSA_RANGES) -> tuple[torch.Tensor, torch.Tensor]:
    """``random_planar_transform`` drawn independently for each of n clouds: (A [n, 2, 2], t [n, 2]).

    The same draws from the same stream; the single draw keeps its own float64 cos / sin, which every committed
    run used, rather than this float32 arithmetic (equal to ~1e-7)."""
    kind = torch.randint(0, 3, (n,), generator=generator)
    u = torch.rand(n, 2, generator=generator)
    a, t = torch.eye(2).repeat(n, 1, 1), torch.zeros(n, 2)
    shift, scale, rotate = kind == 0, kind == 1, kind == 2
    t[shift] = (u[shift] * 2 - 1) * ranges.shift_px
    a[scale] = torch.diag_embed(u[scale] * (ranges.scale_max - ranges.scale_min) + ranges.scale_min)
    angle = (u[rotate, 0] * 2 - 1) * math.radians(ranges.rotate_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    a[rotate] = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return a, t


def transform_points(points: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points [..., N, 3] with (row, col) mapped by ``random_planar_transform``'s (A, t); depth kept. With
    ``random_planar_transforms``' A [B, 2, 2] and t [B, 2], cloud b of points [B, N, 3] gets its own.

    Differentiable in the points, so the same draw applied to a real batch and to the synthetic clouds keeps
    the gradient match exact (DSA's Siamese augmentation); points moved off the grid fall out of the input.
    """
    centre = IMAGE_SIZE / 2
    planar = (points[..., 1:] - centre) @ a.to(points).transpose(-1, -2) + centre + t.to(points).unsqueeze(-2)
    return torch.cat([points[..., :1], planar], dim=-1)
