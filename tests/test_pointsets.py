import math

import torch

from dd3d.pointsets import (
    RealClouds,
    binarize,
    capped_pixel_indices,
    constrain_,
    pixel_indices_to_points,
    points_to_images,
    project_points,
    spread_padding,
)
from models.MEConv import create_dense_batch


def test_capping_keeps_the_first_pixels_in_raster_order_and_pads_by_repetition():
    occ = torch.zeros(2, 28, 28, dtype=torch.bool)
    occ[0, 3, 5] = occ[0, 1, 2] = occ[0, 10, 0] = True  # raster order: (1,2), (3,5), (10,0)
    idx = capped_pixel_indices(occ, 2)
    assert idx[0].tolist() == [1 * 28 + 2, 3 * 28 + 5]
    idx = capped_pixel_indices(occ, 5)
    assert idx[0].tolist() == [30, 89, 280, 30, 30]  # padded with the first pixel
    assert idx[1].tolist() == [0] * 5  # empty image -> pixel 0
    pts = pixel_indices_to_points(idx[:1])
    assert pts[0, :3].tolist() == [[0, 1, 2], [0, 3, 5], [0, 10, 0]]


def test_real_digit_round_trips_through_points(mnist):
    occ = binarize(mnist.train_images[:64], 75)
    pts = pixel_indices_to_points(capped_pixel_indices(occ, 784))
    assert torch.equal(points_to_images(pts)[:, 0].bool(), occ)


def _capped(occ: torch.Tensor, n: int) -> torch.Tensor:
    flat = occ.flatten(1)
    return (flat & (flat.cumsum(1) <= n)).view_as(occ)


def test_cap_drops_the_last_pixels_of_big_digits(mnist):
    occ = binarize(mnist.train_images, 75)
    big = occ.flatten(1).sum(1).topk(4).indices
    img = points_to_images(pixel_indices_to_points(capped_pixel_indices(occ[big], 50)))[:, 0].bool()
    assert img.flatten(1).sum(1).tolist() == [50] * 4
    assert torch.equal(img, _capped(occ[big], 50))


def test_constrain_clamps_and_flattens_depth():
    p = torch.tensor([[[3.0, -2.0, 30.0], [1.5, 5.5, 27.9]]], requires_grad=True)
    constrain_(p)
    assert p.tolist() == [[[0.0, 0.0, 27.0], [0.0, 5.5, 27.0]]]


def test_dense_batch_holds_the_mean_coordinates_of_each_voxel():
    p = torch.tensor([[[0.0, 2.2, 3.1], [0.0, 2.8, 3.5], [0.0, 7.0, 1.0], [2.0, 1.0, 1.0]]], requires_grad=True)
    grid = create_dense_batch(p)
    assert grid.shape == (1, 3, 28, 28)
    assert torch.allclose(grid[0, :, 2, 3], torch.tensor([0.0, 2.5, 3.3]))
    assert torch.allclose(grid[0, :, 7, 1], torch.tensor([0.0, 7.0, 1.0]))
    assert int((grid.abs().sum(1) > 0).sum()) == 2  # the depth-2 point is off the plane
    grid[0, 1, 2, 3].backward()
    assert p.grad[0, :, 1].tolist() == [0.5, 0.5, 0.0, 0.0]  # each point gets its share of the mean


def test_real_batches_are_drawn_per_class_and_reproducibly(mnist):
    real = RealClouds(mnist.train_images, mnist.train_labels, 75, 250)
    a = real.sample(3, 8, torch.Generator().manual_seed(1))
    b = real.sample(3, 8, torch.Generator().manual_seed(1))
    assert a.shape == (8, 250, 3) and torch.equal(a, b)
    image = points_to_images(a[:1])[0, 0].bool()
    class3 = _capped(binarize(mnist.train_images[real.class_indices[3]], 75), 250)
    assert (class3 == image).flatten(1).all(1).any(), "the sampled cloud is a class-3 training digit"


def test_herding_picks_the_rows_whose_running_mean_tracks_the_mean():
    from dd3d.pointsets import herding_select

    # Mean (1, 1): the row equal to it comes first, then the pair that keeps the running mean there.
    rows = torch.tensor([[3.0, 3.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [-1.0, -1.0], [1.0, 1.0]])
    assert herding_select(rows, 1).tolist() == [1]
    picks = herding_select(rows, 3).tolist()
    assert picks[:2] == [1, 5] and len(set(picks)) == 3
    assert herding_select(rows, 6).sort().values.tolist() == list(range(6))  # every row once


def test_kmeans_picks_one_row_near_each_cluster_centre():
    from dd3d.pointsets import kmeans_select

    # Three tight clusters of unequal size around (0, 0), (10, 0) and (0, 10), each symmetric about its centre, so
    # that k-means' centres are exactly there and each cluster's nearest row is the one placed at its centre
    # (herding would start from rows near the overall mean, between the clusters).
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    clusters = []
    for c, n in zip(centres, (20, 5, 12), strict=True):
        offsets = 0.2 + torch.rand(n, 2, generator=g)  # none nearer the centre than 0.28
        clusters.append(torch.cat([c[None], c + offsets, c - offsets]))
    rows = torch.cat(clusters)
    exact = torch.tensor([0, 41, 52])
    picks = kmeans_select(rows, 3, torch.Generator().manual_seed(1))
    assert sorted(picks.tolist()) == exact.tolist()
    assert torch.equal(picks, kmeans_select(rows, 3, torch.Generator().manual_seed(1)))  # seeded
    # Repeated rows: as many distinct picks as asked for, even where centres coincide.
    same = torch.zeros(6, 2)
    assert sorted(kmeans_select(same, 4, torch.Generator().manual_seed(0)).tolist()) == [0, 1, 2, 3]


def test_kmeans_baseline_is_real_digits_of_each_class(mnist):
    real = RealClouds(mnist.train_images, mnist.train_labels, 75, 250)
    picks = real.kmeans(3, torch.Generator().manual_seed(0))
    assert picks.shape == (30, 250, 3)
    images = points_to_images(picks)[:, 0].bool()
    for c in range(10):
        digits = _capped(binarize(mnist.train_images[real.class_indices[c]], 75), 250)
        for image in images[3 * c:3 * c + 3]:
            assert (digits == image).flatten(1).all(1).any(), f"a class-{c} cloud is a class-{c} training digit"
    assert len({tuple(image.flatten().tolist()) for image in images[:3]}) == 3  # three different digits


def test_match_augmentation_is_one_rigid_or_scaling_draw_applied_alike():
    from dd3d.pointsets import random_planar_transform, transform_points

    g = torch.Generator().manual_seed(3)
    pts = torch.rand(4, 30, 3) * 27
    pts[..., 0] = 0
    kinds = set()
    for _ in range(30):
        a, t = random_planar_transform(g)
        moved = transform_points(pts, a, t)
        assert (moved[..., 0] == 0).all()
        # Pairwise distances: kept by shifts and rotations, scaled per axis by scalings (within 1/1.2-1.2).
        d0, d1 = torch.cdist(pts[0, :, 1:], pts[0, :, 1:]), torch.cdist(moved[0, :, 1:], moved[0, :, 1:])
        ratio = (d1 / d0.clamp(min=1e-6))[d0 > 1]
        assert ratio.min() >= 1 / 1.2 - 1e-4 and ratio.max() <= 1.2 + 1e-4
        if torch.equal(a, torch.eye(2)):
            kinds.add("shift")
            assert t.abs().max() <= 4
        elif a[0, 1] == 0:
            kinds.add("scale")
        else:
            kinds.add("rotate")
            assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-4)
    assert kinds == {"shift", "scale", "rotate"}
    # Differentiable in the points: the same draw moves the synthetic cloud and carries gradient back.
    syn = pts[:1].clone().requires_grad_()
    transform_points(syn, a, t).sum().backward()
    assert syn.grad is not None and syn.grad[..., 1:].abs().sum() > 0


def test_per_cloud_draws_are_the_single_draws_kinds_each_applied_to_its_own_cloud():
    from dd3d.pointsets import random_planar_transform, random_planar_transforms, transform_points

    a, t = random_planar_transforms(60, torch.Generator().manual_seed(5))
    shift = (a == torch.eye(2)).all(-1).all(-1)
    scale = ~shift & (a[:, 0, 1] == 0)
    rotate = ~shift & ~scale
    assert shift.any() and scale.any() and rotate.any()
    assert (t[shift].abs() <= 4).all() and (t[~shift] == 0).all()
    diagonal = a[scale].diagonal(dim1=-2, dim2=-1)
    assert (diagonal >= 1 / 1.2 - 1e-6).all() and (diagonal <= 1.2 + 1e-6).all()
    r = a[rotate]
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(2).expand_as(r), atol=1e-6)
    assert (torch.linalg.det(r) > 0).all() and (r[:, 1, 0].abs() <= math.sin(math.radians(15)) + 1e-6).all()
    # One draw of the batch is random_planar_transform's draw from the same stream.
    a1, t1 = random_planar_transforms(1, torch.Generator().manual_seed(9))
    a0, t0 = random_planar_transform(torch.Generator().manual_seed(9))
    assert torch.allclose(a1[0], a0, atol=1e-6) and torch.allclose(t1[0], t0)
    # Cloud b of a batch moves by draw b alone.
    pts = torch.rand(60, 20, 3) * 27
    moved = transform_points(pts, a, t)
    for b in (0, 17, 59):
        assert torch.allclose(moved[b], transform_points(pts[b], a[b], t[b]), atol=1e-5)


def test_splat_projection_is_gray_between_cells_and_binary_at_cell_centres(mnist):
    occ = binarize(mnist.train_images[:8], 75)
    centres = pixel_indices_to_points(capped_pixel_indices(occ, 784)) + torch.tensor([0.0, 0.5, 0.5])
    splat = project_points(centres, "splat")
    assert torch.allclose(splat, project_points(centres, "binary"), atol=1e-3)  # real digits: the same image
    point = torch.tensor([[[0.0, 10.5, 4.0]]], requires_grad=True)  # on the border between columns 3 and 4
    image = project_points(point, "splat")[0, 0]
    assert not image.requires_grad
    assert abs(image[10, 3] - 0.5) < 1e-3 and abs(image[10, 4] - 0.5) < 1e-3 and image.sum() < 1.0
    assert project_points(point, "binary")[0, 0, 10, 4] == 1.0  # binary: the whole pixel, floor(4.0)


def test_dense_splat_is_the_union_of_the_in_grid_splat_cells_values_and_gradients():
    from dd3d.pointsets import IMAGE_SIZE, soft_union, splat_cells, splat_images

    torch.manual_seed(0)
    points = torch.rand(3, 60, 3, dtype=torch.float64) * 36 - 4  # a margin of points with corners off the grid
    points[0, :10, 1:] = -112.0  # cut out: every corner off the grid
    points[1, :5, 1:] = torch.tensor([0.5, 14.5], dtype=torch.float64)  # cell centres: three corners of weight 0
    dense_in, sparse_in = points.clone().requires_grad_(), points.clone().requires_grad_()
    dense = splat_images(dense_in)
    # The sparse networks' input: the in-grid cells alone (splat_cells), each cloud's union of their shares.
    batch, cells, weights = splat_cells(sparse_in)
    flat = (batch * IMAGE_SIZE + cells[:, 0]) * IMAGE_SIZE + cells[:, 1]
    sparse = soft_union(flat, weights, dense.numel()).view_as(dense)
    assert torch.equal(dense, sparse) and dense[0].sum() > 0
    upstream = torch.randn_like(dense)
    (dense * upstream).sum().backward()
    (sparse * upstream).sum().backward()
    assert torch.equal(dense_in.grad, sparse_in.grad)
    assert (dense_in.grad[0, :10] == 0).all() and dense_in.grad[2].abs().sum() > 0


def test_baselines_are_the_same_images_under_either_projection(mnist):
    from configs.settings import load_settings
    from mnist_distill import baseline_set

    real = RealClouds(mnist.train_images, mnist.train_labels, 75, 250)
    images = {}
    for projection in ("binary", "splat"):
        settings = load_settings(["--set", f"EVALUATION.projection={projection}"])
        images[projection] = project_points(baseline_set("herding", real, settings), projection)
    assert torch.allclose(images["splat"], images["binary"], atol=1e-3)
    assert images["binary"].sum() > 500  # ten real digits, not an empty image


def test_capping_in_row_slices_equals_one_slice(mnist, monkeypatch):
    import dd3d.pointsets as pointsets

    occ = binarize(mnist.train_images[:100], 75)
    whole = capped_pixel_indices(occ, 120)  # 100 rows: one slice of ARGSORT_ROWS
    monkeypatch.setattr(pointsets, "ARGSORT_ROWS", 7)  # 15 slices, the last one short
    assert torch.equal(capped_pixel_indices(occ, 120), whole)
    assert torch.equal(capped_pixel_indices(occ, 800), pointsets._capped_rows(occ.flatten(1), 800))


def test_dc_ranges_reach_the_evaluations_rotations_and_scales_and_dsa_is_the_default():
    from configs.settings import MATCH_RANGES as SETTINGS_RANGES
    from dd3d.pointsets import MATCH_RANGES, random_match_augment, random_planar_transforms

    assert tuple(MATCH_RANGES) == SETTINGS_RANGES
    dsa, dc = (random_planar_transforms(400, torch.Generator().manual_seed(2), MATCH_RANGES[k]) for k in ("dsa", "dc"))
    # Same stream, same kinds and uniforms: the default is the dsa entry, and dc only stretches the ranges.
    default = random_planar_transforms(400, torch.Generator().manual_seed(2))
    assert torch.equal(default[0], dsa[0]) and torch.equal(default[1], dsa[1])
    rotate = dsa[0][:, 0, 1] != 0
    sin_dsa, sin_dc = dsa[0][rotate, 1, 0].abs(), dc[0][rotate, 1, 0].abs()
    assert sin_dsa.max() <= math.sin(math.radians(15)) + 1e-6 < sin_dc.max() <= math.sin(math.radians(45)) + 1e-6
    scale = ~rotate & (dc[0] != torch.eye(2)).any(-1).any(-1)
    diagonal = dc[0][scale].diagonal(dim1=-2, dim2=-1)
    assert diagonal.min() >= 0.8 - 1e-6 and diagonal.max() <= 1.2 + 1e-6 and diagonal.min() < 1 / 1.2
    assert torch.equal(dsa[1], dc[1])  # both shift up to 4 px
    # The match's single draw takes the ranges too: a 40-degree turn is only reachable under dc.
    pts = torch.tensor([[[0.0, 14.0, 24.0]]])
    turns = [random_match_augment(torch.Generator().manual_seed(i), ("rotate",), MATCH_RANGES["dc"])(pts)
             for i in range(60)]
    angles = [math.degrees(math.atan2(-(p[0, 0, 1] - 14).item(), (p[0, 0, 2] - 14).item())) for p in turns]
    assert max(abs(a) for a in angles) > 30


def test_match_augment_default_kinds_draw_the_planar_transform_and_cutout_drops_a_square():
    from configs.settings import MATCH_KINDS as SETTINGS_KINDS
    from dd3d.pointsets import (
        CUTOUT_PX,
        MATCH_KINDS,
        cut_out,
        random_match_augment,
        random_planar_transform,
        splat_images,
        transform_points,
    )

    assert MATCH_KINDS == SETTINGS_KINDS
    pts = torch.rand(3, 40, 3) * 27
    pts[..., 0] = 0
    # The default kinds: the same draw, from the same stream, as every committed run's planar transform.
    a, t = random_planar_transform(torch.Generator().manual_seed(4))
    assert torch.equal(random_match_augment(torch.Generator().manual_seed(4))(pts), transform_points(pts, a, t))
    # Cutout alone: the points in the square leave the image, the others stay where they were.
    centre = torch.tensor([10.0, 20.0])
    cut = cut_out(pts, centre)
    inside = ((pts[..., 1:] - centre).abs() <= CUTOUT_PX / 2 - 1e-4).all(-1)
    outside = ((pts[..., 1:] - centre).abs() >= CUTOUT_PX / 2 + 1e-4).any(-1)
    assert inside.any() and outside.any()
    assert torch.equal(cut[outside], pts[outside]) and (cut[inside][:, 1:] < -27).all()
    assert (cut[..., 0] == pts[..., 0]).all()
    # The square [3, 17) x [13, 27) is black in the splat image but for the half cell its border points spread over.
    assert splat_images(cut)[:, 0, 4:16, 14:26].sum() == 0 and splat_images(pts)[:, 0, 4:16, 14:26].sum() > 0
    # Gradients: none for a cut point's (row, col), the identity's for a kept one.
    syn = pts.clone().requires_grad_()
    cut_out(syn, centre).sum().backward()
    assert (syn.grad[inside][:, 1:] == 0).all() and (syn.grad[outside] == 1).all()
    # Drawing from all four kinds reaches the cutout (some draw drops points) and the affine ones.
    g, dropped, moved = torch.Generator().manual_seed(0), 0, 0
    for _ in range(40):
        out = random_match_augment(g, MATCH_KINDS)(pts)
        dropped += int((out[..., 1:] < -27).any())
        moved += int(not torch.equal(out, pts) and not (out[..., 1:] < -27).any())
    assert dropped > 0 and moved > 0


def test_spread_padding_deals_the_copies_out_over_the_digit_and_keeps_its_pixels(mnist):
    real = RealClouds(mnist.train_images[:300], mnist.train_labels[:300], 75, 250)
    digits = real.herding(3) + torch.tensor([0.0, 0.5, 0.5])
    pixels = binarize(mnist.train_images[:300], 75).flatten(1).sum(1)
    assert pixels.min() < 250  # some digits are padded
    spread = spread_padding(digits, 0.25, torch.Generator().manual_seed(0))
    for before, after in zip(digits, spread, strict=True):
        n_own = len(torch.unique(before, dim=0))
        assert torch.equal(after[:n_own], before[:n_own])  # the digit's own points stay where they were
        copies = after[n_own:]
        assert len(torch.unique(after, dim=0)) == len(after)  # no two points stacked any more
        # Copy j sits within 0.25 px (row, col) of the digit's point j mod n_own, at the same depth.
        source = before[torch.arange(len(copies)) % n_own]
        assert (copies[:, 0] == source[:, 0]).all() and ((copies - source).abs() <= 0.25).all()
    # The image: the digit's pixels stay full (but for the soft union's eps); gray appears only next to them,
    # at most 0.25 of a pixel per copy.
    image, spread_image = project_points(digits, "splat"), project_points(spread, "splat")
    assert (spread_image >= image - 2e-3).all()
    next_to_digit = torch.nn.functional.max_pool2d(image, 3, stride=1, padding=1) > 0.5
    gray = (spread_image - image).clamp(min=0)
    assert (gray[~next_to_digit] == 0).all() and gray.sum() > 1
    assert gray.sum() <= 0.25 * (250 * len(digits) - sum(len(torch.unique(d, dim=0)) for d in digits))
    assert torch.equal(spread_padding(digits, 0.0, torch.Generator().manual_seed(0)), digits)
