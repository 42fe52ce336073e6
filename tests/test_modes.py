"""Modes beyond the seed: splatting, DC's fresh network per iteration, real initialisation, baselines;
and the fast loop against a literal per-class reference."""

import copy
import io
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from configs.settings import REPO_ROOT, load_settings
from dd3d.distill import Distiller, build_network
from dd3d.pointsets import RealClouds, bilinear_corners, points_to_images, splat_images
from distillation_loss import embedding_distance, gaussian_mmd, match_loss
from models.MEConv import MEPytorch, create_dense_splat
from models.MNIST import ConvNet
from tests.conftest import TINY, only_run_dir, run_cli
from tests.test_models import check_coordinate_derivatives


def test_bilinear_weights_sum_to_one_and_peak_at_the_projected_cell():
    pts = torch.rand(3, 50, 3, dtype=torch.float64) * 26 + 1
    cells, weights = bilinear_corners(pts)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 50, dtype=torch.float64))
    best = cells.gather(2, weights.argmax(-1)[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)
    assert torch.equal(best, pts[..., 1:].floor().long())


def test_a_point_at_a_cell_centre_is_one_pixel_of_the_binary_projection():
    pts = torch.tensor([[[0.0, 3.5, 7.5], [0.0, 20.5, 1.5]]])
    assert torch.allclose(create_dense_splat(pts), points_to_images(pts), atol=1e-3)


@pytest.mark.parametrize("metric", ["modmse", "ours"])
def test_splat_matching_gradient_matches_finite_differences(metric):
    torch.manual_seed(0)
    net = MEPytorch(in_channel=1, depth=2, width=16).double()
    check_coordinate_derivatives(net, create_dense_splat, metric, [(0, 0, 1), (0, 0, 2), (1, 4, 1), (1, 9, 2)])


@pytest.mark.skipif(os.environ.get("DD3D_SKIP_MINKOWSKI") == "1", reason="MinkowskiEngine not installed")
def test_sparse_splat_matching_gradient_matches_finite_differences():
    from models.MEConv import MEConvExp, create_splat_input_batch

    torch.manual_seed(0)
    net = MEConvExp(in_channel=1, depth=2, width=16).double()
    check_coordinate_derivatives(net, create_splat_input_batch, "modmse", [(0, 0, 1), (0, 3, 2), (1, 6, 1)])


def small_distiller(mnist, *flags: str) -> Distiller:
    """The seed's method (configs/seed.ini) on the PyTorch path, small; flags change it."""
    settings = load_settings(["--config", str(REPO_ROOT / "configs" / "seed.ini"), "--pytorch", "--device", "cpu",
                              "--set", "MODEL.batch_size=8",
                              "--set", "DISTILLATION.num_points=60", *flags])
    torch.manual_seed(settings.seed)
    net, to_input = build_network(settings, torch.device("cpu"))
    real = RealClouds(mnist.train_images[:3000], mnist.train_labels[:3000], 75, 60)
    return Distiller(net, to_input, real, settings, torch.device("cpu"), torch.Generator().manual_seed(0))


def test_fast_loop_equals_a_literal_per_class_reference(mnist):
    """The 2-D form and per-class backward give the seed's Conv3d per-class loop's points (fp noise only)."""
    fast = small_distiller(mnist)
    slow = small_distiller(mnist)
    conv3d = nn.Sequential(*[m for conv in slow.net.convs for m in (conv, nn.ReLU(), nn.MaxPool3d(2))])

    def literal_logits(points):
        return slow.net.classifier(conv3d(slow.to_input(points).unsqueeze(2)).flatten(1))

    for _ in range(3):
        fast.step()
        total = 0
        slow.optimizer.zero_grad()
        for c in range(10):
            real = slow.real.sample(c, 8, slow.generator)
            target = torch.full((8,), c)
            gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(literal_logits(real), target),
                                                                slow.params)]
            gw_syn = torch.autograd.grad(F.cross_entropy(literal_logits(slow.points[c:c + 1]), target[:1]),
                                         slow.params, create_graph=True)
            total = total + match_loss(gw_syn, gw_real, "modmse")
        total.backward()
        slow.optimizer.step()
        with torch.no_grad():
            slow.points.clamp_(0, 27)
            slow.points[..., 0] = 0
    assert torch.allclose(fast.points, slow.points, atol=1e-4)
    assert not torch.equal(fast.points, small_distiller(mnist).points)  # and the points did move


CHUNKED_MODES = {
    "pytorch": ("--pytorch",),
    "minkowski": ("--no-pytorch",),
    "me-convnet-dm": ("--no-pytorch", "--set", "MODEL.network=me-convnet", "--set", "DISTILLATION.splat=true",
                      "--set", "DISTILLATION.objective=distribution"),
}


@pytest.mark.parametrize("mode", CHUNKED_MODES)
def test_real_batch_in_chunks_gives_the_one_pass_distance_and_coordinate_gradient(mnist, mode):
    if mode != "pytorch" and os.environ.get("DD3D_SKIP_MINKOWSKI") == "1":
        pytest.skip("MinkowskiEngine not installed")
    one, chunked = small_distiller(mnist, *CHUNKED_MODES[mode]), small_distiller(mnist, *CHUNKED_MODES[mode])
    one.chunk, chunked.chunk = 8, 3  # the batch of 8 in one pass, and as 3 + 3 + 2 digits
    # In float64: in float32 the chunks' other summation order once left one gradient element 6.7e-6 off (of 21).
    real = (one.real.sample(4, 8, torch.Generator().manual_seed(2)) + one.real_offset).double()
    distances = []
    for d in (one, chunked):
        d.net.double()
        d.points = d.points.detach().double().requires_grad_()
        distance = d.class_distance(real, d.points[4:5], 4)
        distance.backward()
        distances.append(float(distance.detach()))
    assert distances[1] == pytest.approx(distances[0], rel=1e-5)
    assert one.points.grad.abs().max() > 0
    torch.testing.assert_close(chunked.points.grad, one.points.grad, rtol=1e-4, atol=1e-6)
    if mode != "me-convnet-dm":  # the chunks' weights matter: the first chunk alone is another target
        whole, first = one.real_gradients(real, 4), one.real_gradients(real[:3], 4)
        torch.testing.assert_close(chunked.real_gradients(real, 4), whole, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(first[-1], whole[-1], rtol=1e-2)


@pytest.mark.parametrize("data", ["synthetic", "real"])
def test_inner_loop_step_in_chunks_equals_the_one_pass_step(mnist, data):
    one, chunked = (small_distiller(mnist, "--clouds-per-class", "2", "--set", f"DISTILLATION.inner_data={data}")
                    for _ in range(2))
    one.chunk, chunked.chunk = 20, 3  # 20 clouds at once, and as 3 + ... + 2
    before = copy.deepcopy(one.net)
    one.train_network(2)
    chunked.train_network(2)
    for a, b in zip(one.net.parameters(), chunked.net.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert not torch.equal(one.net.classifier.weight, before.classifier.weight)


def test_fresh_network_each_iteration_is_reproducible(mnist):
    a = small_distiller(mnist, "--set", "DISTILLATION.reinit_net=true", "--distance", "ours")
    b = small_distiller(mnist, "--set", "DISTILLATION.reinit_net=true", "--distance", "ours")
    w0 = a.net.classifier.weight.detach().clone()
    a.step()
    assert not torch.equal(a.net.classifier.weight, w0)  # a new network was drawn
    b.step()
    assert torch.equal(a.points, b.points)


def test_cosine_schedule_anneals_the_coordinate_step_to_zero(mnist):
    flags = ("--set", "MODEL.dist_optimizer=adam", "--set", "MODEL.dist_lr=0.1", "--iterations", "4",
             "--set", "DISTILLATION.outer_loop=2")
    cosine = small_distiller(mnist, *flags, "--set", "MODEL.dist_lr_schedule=cosine")
    constant = small_distiller(mnist, *flags)
    assert [cosine.coordinate_lr(u) for u in (0, 4, 8)] == pytest.approx([0.1, 0.05, 0.0])
    assert constant.coordinate_lr(7) == 0.1
    moved = []
    for d in (cosine, constant):
        before = d.points.detach().clone()
        d.step(3)  # the run's last iteration: updates 6 and 7
        moved.append(float((d.points.detach() - before).abs().max()))
    # Adam moves a coordinate by about its learning rate per step: 0.015 + 0.004 here against 0.1 + 0.1.
    last_two = cosine.coordinate_lr(6) + cosine.coordinate_lr(7)
    assert last_two == pytest.approx(0.1 * (1 + (math.cos(0.75 * math.pi) + math.cos(0.875 * math.pi)) / 2))
    assert moved[0] <= 1.1 * last_two < 0.1 <= moved[1]


def test_inner_loop_trains_the_network_between_matches(mnist):
    d = small_distiller(mnist, "--set", "DISTILLATION.outer_loop=2", "--set", "DISTILLATION.inner_loop=3")
    w0 = d.net.classifier.weight.detach().clone()
    d.step()
    assert not torch.equal(d.net.classifier.weight, w0)


def step_inner_loop_once(d: Distiller) -> nn.Module:
    """One inner-loop step of ``d``; returns the network as it was before it, and rewinds ``d``'s sampler so that
    the draws the step made can be made again."""
    reference = copy.deepcopy(d.net)
    stream = d.generator.get_state()
    d.train_network(1)
    d.generator = torch.Generator().set_state(stream)
    return reference


def assert_sgd_step_on(mnist, d: Distiller, reference: nn.Module, inputs, labels: torch.Tensor) -> None:
    """``d``'s network is ``reference`` after one plain SGD step on (inputs, labels), which a step on the unaugmented
    synthetic set is not."""
    F.cross_entropy(reference(inputs), labels).backward()
    for before, after in zip(reference.parameters(), d.net.parameters(), strict=True):
        assert torch.allclose(after, before - d.settings.net_lr * before.grad, atol=1e-6)
    plain = small_distiller(mnist, "--clouds-per-class", "2")
    plain.train_network(1)
    assert not torch.equal(plain.net.classifier.weight, d.net.classifier.weight)


def test_real_inner_loop_takes_sgd_steps_on_random_real_digits_of_every_class(mnist):
    d = small_distiller(mnist, "--set", "DISTILLATION.inner_data=real", "--clouds-per-class", "2")
    reference = step_inner_loop_once(d)
    points, labels = d.real_batch(2)  # the batch the step drew
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert_sgd_step_on(mnist, d, reference, d.to_input(points), labels)


def test_augmented_inner_loop_steps_on_each_step_s_own_draw_of_the_synthetic_clouds(mnist):
    d = small_distiller(mnist, "--set", "DISTILLATION.inner_augment=true", "--clouds-per-class", "2")
    reference = step_inner_loop_once(d)
    augmented = d.augmented(d.points.detach())  # the draws the step made
    assert not torch.allclose(augmented, d.points)
    assert_sgd_step_on(mnist, d, reference, d.to_input(augmented), d.labels)


def test_cutout_in_the_match_drops_one_square_from_both_sides_of_each_class(mnist):
    from dd3d.pointsets import cut_out, random_match_augment

    d = small_distiller(mnist, "--set", "DISTILLATION.augment_match=true", "--set", "DISTILLATION.splat=true",
                        "--set", "DISTILLATION.augment_kinds=cutout", "--clouds-per-class", "2")
    g = torch.Generator().set_state(d.generator.get_state())  # replays the match's real batches and draws
    points = d.points.detach().clone().requires_grad_()
    expected, cut_any = torch.zeros_like(points), False
    for c in range(10):
        real = d.real.sample(c, d.settings.batch_size, g) + d.real_offset
        augment = random_match_augment(g, ["cutout"])
        assert augment.func is cut_out
        syn = points[2 * c:2 * c + 2]
        cut_any |= bool((augment(syn)[..., 1:] < 0).any())
        expected += torch.autograd.grad(d.class_distance(augment(real), augment(syn), c), points)[0]
    d.match_and_update()
    assert cut_any and expected.abs().sum() > 0
    assert torch.allclose(d.points.grad, expected, rtol=1e-4, atol=1e-7)


def test_the_match_draws_its_rotations_within_augment_ranges(mnist):
    from dd3d.pointsets import MATCH_RANGES, random_match_augment

    d = small_distiller(mnist, "--set", "DISTILLATION.augment_match=true", "--set", "DISTILLATION.splat=true",
                        "--set", "DISTILLATION.augment_kinds=rotate", "--set", "DISTILLATION.augment_ranges=dc")
    points = d.points.detach().clone().requires_grad_()

    def replayed_gradient(ranges):
        g = torch.Generator().set_state(d.generator.get_state())  # the match's real batches and draws
        total = torch.zeros_like(points)
        for c in range(10):
            real = d.real.sample(c, d.settings.batch_size, g) + d.real_offset
            augment = random_match_augment(g, ["rotate"], ranges)
            syn = points[c:c + 1]
            total += torch.autograd.grad(d.class_distance(augment(real), augment(syn), c), points)[0]
        return total

    dc, dsa = replayed_gradient(MATCH_RANGES["dc"]), replayed_gradient(MATCH_RANGES["dsa"])
    d.match_and_update()
    assert torch.allclose(d.points.grad, dc, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(d.points.grad, dsa, rtol=1e-2, atol=1e-5)


def test_head_only_matching_is_full_matching_with_constant_convolution_gradients(mnist):
    """The seed's ME path: convolution gradients without a graph, so only the classifier's term moves points."""
    d = small_distiller(mnist, "--set", "DISTILLATION.matched_layers=head")
    head = list(d.net.classifier.parameters())
    assert [g.shape for g in d.class_gradients(d.points[:1], 0, False)] == [p.shape for p in head]
    real = d.real.sample(0, 8, torch.Generator().manual_seed(1))

    def point_gradient(gw_syn, gw_real):
        return torch.autograd.grad(match_loss(gw_syn, gw_real, "modmse"), d.points, retain_graph=True)[0]

    target = torch.zeros(8, dtype=torch.long)
    gw_real = torch.autograd.grad(F.cross_entropy(d.net(d.to_input(real)), target), d.params)
    gw_syn = torch.autograd.grad(F.cross_entropy(d.net(d.to_input(d.points[:1])), target[:1]), d.params,
                                 create_graph=True)
    seed_like = [g if any(p is h for h in head) else g.detach() for g, p in zip(gw_syn, d.params, strict=True)]
    expected = point_gradient(seed_like, gw_real)
    got = point_gradient(d.class_gradients(d.points[:1], 0, True), d.class_gradients(real, 0, False))
    assert got.abs().sum() > 0 and torch.allclose(got, expected, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(got, point_gradient(gw_syn, gw_real), rtol=1e-3)  # full matching differs


def test_convnet_matches_in_the_evaluation_architecture_on_the_splat(mnist):
    d = small_distiller(mnist, "--set", "MODEL.network=convnet", "--set", "DISTILLATION.splat=true",
                        "--set", "DISTILLATION.reinit_net=true", "--set", "DISTILLATION.init=mean",
                        "--distance", "ours")
    assert isinstance(d.net, ConvNet) and d.settings.net_depth == 3 and d.settings.mode == "convnet"
    before = d.points.detach().clone()
    stats = d.step()
    assert stats.grad_abs_mean > 0 and stats.displacement > 0
    assert not torch.equal(d.points, before)


@pytest.mark.parametrize("network, pool", [("convnet", ""), ("me-convnet", ""), ("convnet", "mlp")])
def test_distribution_matching_moves_the_points_towards_the_real_mean_embedding(mnist, network, pool):
    if network == "me-convnet" and os.environ.get("DD3D_SKIP_MINKOWSKI") == "1":
        pytest.skip("MinkowskiEngine not installed")
    d = small_distiller(mnist, "--no-pytorch" if network == "me-convnet" else "--pytorch",
                        "--set", f"MODEL.network={network}", "--set", "DISTILLATION.splat=true",
                        "--set", "DISTILLATION.init=mean", "--set", "DISTILLATION.objective=distribution",
                        "--set", "MODEL.dist_optimizer=adam", "--set", "MODEL.dist_lr=0.1",
                        "--set", "DISTILLATION.reinit_net=true", "--set", f"DISTILLATION.network_pool={pool}")
    if pool:  # the pool's member embeds: an MLP's hidden features of the splat image
        d.reinit_network()
        assert type(d.net).__name__ == "MLP"
    real = d.real.sample(3, 8, torch.Generator().manual_seed(1)) + d.real_offset
    with torch.no_grad():
        target = d.net.embed(d.to_input(real))
        syn = d.points[3:4].detach().clone()
        before = float(embedding_distance(d.net.embed(d.to_input(syn)), target))
    assert before > 0 and float(d.class_distance(real, syn, 3).detach()) == pytest.approx(before, rel=1e-5)
    # The class's loss is DM's: with the network and the real batch fixed, Adam steps shrink it.
    opt = torch.optim.Adam([d.points], lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        loss = d.class_distance(real, d.points[3:4], 3)
        loss.backward()
        opt.step()
    assert float(d.class_distance(real, d.points[3:4], 3).detach()) < 0.9 * before
    stats = d.step()
    assert stats.grad_abs_mean > 0 and stats.displacement > 0 and len(stats.per_class) == 10


def distribution_pair(mnist, network: str, *variant: str) -> tuple[Distiller, Distiller]:
    """Two DM distillers (2 clouds per class) in ``network``: plain, and with ``variant``'s flags and its weights."""
    if network == "me-convnet" and os.environ.get("DD3D_SKIP_MINKOWSKI") == "1":
        pytest.skip("MinkowskiEngine not installed")
    flags = ["--no-pytorch" if network == "me-convnet" else "--pytorch", "--set", f"MODEL.network={network}",
             "--set", "DISTILLATION.splat=true", "--set", "DISTILLATION.init=mean", "--clouds-per-class", "2",
             "--set", "DISTILLATION.objective=distribution"]
    plain, other = small_distiller(mnist, *flags), small_distiller(mnist, *flags, *variant)
    other.net.load_state_dict(plain.net.state_dict())
    return plain, other


@pytest.mark.parametrize("network", ["convnet", "me-convnet"])
def test_class_term_adds_the_synthetic_cross_entropy_weighted_by_the_real_accuracy(mnist, network):
    plain, weighted = distribution_pair(mnist, network, "--set", "DISTILLATION.class_ce=0.5")
    for d in (plain, weighted):  # real digits are mostly called 3: accuracy > 0 on class 3, 0 on class 5
        with torch.no_grad():
            d.net.classifier.bias[3] += 5
    for c in (3, 5):
        real = plain.real.sample(c, 8, torch.Generator().manual_seed(c)) + plain.real_offset
        syn = plain.points[2 * c:2 * c + 2].detach()
        # the full forward passes: the class term's classifier(embed) must be the network's own logits
        with torch.no_grad():
            accuracy = float((plain.net(plain.to_input(real)).argmax(1) == c).float().mean())
            ce = float(F.cross_entropy(plain.net(plain.to_input(syn)), torch.full((2,), c)))
        assert (accuracy > 0) == (c == 3) and ce > 1e-3
        expected = float(plain.class_distance(real, syn, c).detach()) + 0.5 * accuracy * ce
        assert float(weighted.class_distance(real, syn, c).detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("network", ["convnet", "me-convnet"])
def test_layerwise_distribution_matching_adds_every_block_scaled_to_the_last(mnist, network):
    last, layered = distribution_pair(mnist, network, "--set", "DISTILLATION.dm_layers=all")
    layered.chunk = 3  # the real side's blocks, each concatenated over chunks of 3 + 3 + 2 digits
    real = last.real.sample(3, 8, torch.Generator().manual_seed(3)) + last.real_offset
    syn = last.points[6:8].detach().clone().requires_grad_()
    with torch.no_grad():
        blocks_real = last.net.embed_layers(last.to_input(real))
        blocks_syn = last.net.embed_layers(last.to_input(syn))
    terms = [float(((r.mean(0) - s.mean(0)) ** 2).sum()) for r, s in zip(blocks_real, blocks_syn, strict=True)]
    sizes = [e.shape[1] for e in blocks_syn]
    assert len(terms) == 3 and sizes[0] == 4 * sizes[1] == 16 * sizes[2] and min(terms) > 0
    expected = sum(t * sizes[-1] / size for t, size in zip(terms, sizes, strict=True))
    distance = layered.class_distance(real, syn, 3)
    assert float(distance.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(last.class_distance(real, syn, 3).detach()) == pytest.approx(terms[-1], rel=1e-5)
    # The early blocks reach the coordinates too: the layered gradient is not the last block's.
    [g_layered] = torch.autograd.grad(distance, syn)
    [g_last] = torch.autograd.grad(last.class_distance(real, syn, 3), syn)
    assert not torch.allclose(g_layered, g_last, rtol=1e-2)


@pytest.mark.parametrize("network", ["convnet", "me-convnet"])
def test_gaussian_kernel_matches_the_embeddings_mmd_and_moves_the_clouds(mnist, network):
    linear, gaussian = distribution_pair(mnist, network, "--set", "DISTILLATION.dm_kernel=gaussian")
    gaussian.chunk = 3  # the real embeddings concatenated over chunks, as for the linear kernel
    real = linear.real.sample(3, 8, torch.Generator().manual_seed(3)) + linear.real_offset
    syn = linear.points[6:8].detach().clone().requires_grad_()
    with torch.no_grad():
        emb_real, emb_syn = (linear.net.embed(linear.to_input(x)) for x in (real, syn))
    distance = gaussian.class_distance(real, syn, 3)
    assert float(distance.detach()) == pytest.approx(float(gaussian_mmd(emb_syn, emb_real)), rel=1e-5)
    assert float(linear.class_distance(real, syn, 3).detach()) == pytest.approx(
        float(embedding_distance(emb_syn, emb_real)), rel=1e-5)
    [grad] = torch.autograd.grad(distance, syn)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    stats = gaussian.step()
    assert stats.displacement > 0 and all(math.isfinite(v) for v in stats.per_class)


@pytest.mark.parametrize("network", ["convnet", "me-convnet"])
def test_pixel_match_adds_the_distance_of_the_class_mean_images(mnist, network):
    plain, anchored = distribution_pair(mnist, network, "--set", "DISTILLATION.pixel_match=0.5")
    real = plain.real.sample(3, 8, torch.Generator().manual_seed(3)) + plain.real_offset
    syn = plain.points[6:8].detach().clone().requires_grad_()
    with torch.no_grad():
        real_mean = splat_images(real).mean(0).squeeze(0)
        syn_mean = splat_images(syn).mean(0).squeeze(0)
    pixels = float(((real_mean - syn_mean) ** 2).sum())
    assert pixels > 1e-3
    distance = anchored.class_distance(real, syn, 3)
    expected = float(plain.class_distance(real, syn, 3).detach()) + 0.5 * pixels
    assert float(distance.detach()) == pytest.approx(expected, rel=1e-5)
    [g_anchored] = torch.autograd.grad(distance, syn)
    [g_plain] = torch.autograd.grad(plain.class_distance(real, syn, 3), syn)
    assert not torch.allclose(g_anchored, g_plain, rtol=1e-2)


def test_network_pool_draws_a_member_each_iteration_without_changing_the_real_batches(mnist):
    flags = ["--set", "MODEL.network=convnet", "--set", "DISTILLATION.splat=true", "--set", "DISTILLATION.init=mean",
             "--set", "DISTILLATION.reinit_net=true", "--distance", "ours"]
    pool = small_distiller(mnist, *flags, "--set", "DISTILLATION.network_pool=16x2,8x3-none")
    single = small_distiller(mnist, *flags)
    seen = set()
    for _ in range(6):
        pool.step()
        single.step()
        member = pool.member
        seen.add(str(member))
        convs = [m for m in pool.net.features if isinstance(m, nn.Conv2d)]
        assert len(convs) == member.depth and convs[0].out_channels == member.width
        assert any(isinstance(m, nn.GroupNorm) for m in pool.net.features) == (member.norm == "instance")
        assert pool.matched == pool.params and pool.params[0] is convs[0].weight  # matched in the drawn network
        # The member comes from the weights' seed: the batch sampler's stream is the pool-less run's.
        assert torch.equal(pool.generator.get_state(), single.generator.get_state())
    assert seen == {"16x2", "8x3-none"}
    assert not torch.allclose(pool.points, single.points)
    # Resume is exact: a checkpoint (through torch.save) continued gives the points of the run never stopped.
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    again = small_distiller(mnist, *flags, "--set", "DISTILLATION.network_pool=16x2,8x3-none")
    again.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    for _ in range(2):
        pool.step()
        again.step()
    assert again.member == pool.member and torch.equal(again.points, pool.points)


def test_network_pool_mixes_sparse_convnets_with_dense_architectures_each_fed_its_own_input(mnist):
    from models.MEConv import MEConvNet
    from models.MNIST import MLP, LeNet

    flags = ["--no-pytorch", "--set", "MODEL.network=me-convnet", "--set", "DISTILLATION.splat=true",
             "--set", "DISTILLATION.init=mean", "--set", "DISTILLATION.reinit_net=true", "--distance", "ours"]
    pool = small_distiller(mnist, *flags, "--set", "DISTILLATION.network_pool=8x2,lenet,mlp")
    kinds = {"8x2": MEConvNet, "lenet": LeNet, "mlp": MLP}
    seen = set()
    for _ in range(8):
        before = pool.points.detach().clone()
        pool.step()
        member = str(pool.member)
        seen.add(member)
        assert type(pool.net) is kinds[member] and pool.matched == pool.params
        # The dense members see the splat image; the sparse ConvNet its voxels.
        assert (pool.to_input is create_dense_splat) == (member != "8x2")
        assert pool.points.grad.abs().sum() > 0 and not torch.equal(pool.points, before)
    assert seen == set(kinds)


def test_convnet_splat_matching_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = ConvNet(channel=1, width=8, depth=2).double()
    check_coordinate_derivatives(net, create_dense_splat, "ours", [(0, 0, 1), (0, 5, 2), (1, 7, 1)])


def test_real_initialisation_starts_from_training_digits(mnist):
    d = small_distiller(mnist, "--set", "DISTILLATION.init=real", "--set", "DISTILLATION.splat=true")
    assert torch.allclose(d.points[..., 1:] - d.points[..., 1:].floor(), torch.full_like(d.points[..., 1:], 0.5))
    images = points_to_images(d.points)
    assert (images.flatten(1).sum(1) > 20).all()


def test_herding_initialisation_starts_from_the_herding_baseline(mnist):
    d = small_distiller(mnist, "--set", "DISTILLATION.init=herding", "--set", "DISTILLATION.splat=true")
    assert torch.equal(points_to_images(d.points), points_to_images(d.real.herding(1)))
    assert not torch.equal(points_to_images(d.points), points_to_images(d.real.class_means(1, torch.Generator())))


def test_kmeans_initialisation_starts_from_the_kmeans_baseline(mnist):
    d = small_distiller(mnist, "--set", "DISTILLATION.init=kmeans", "--set", "DISTILLATION.splat=true")
    start = d.real.kmeans(1, torch.Generator().manual_seed(0))  # the distiller's generator, first draw
    assert torch.equal(points_to_images(d.points), points_to_images(start))


@pytest.mark.parametrize("baseline", ["random-real", "class-mean"])
def test_baselines_are_evaluated_by_the_same_protocol(tmp_path, baseline):
    runs = tmp_path / "runs"
    proc = run_cli([*TINY, "--baseline", baseline, "--no-log", "--eval-epochs", "60"], runs)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(runs)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "evaluated" and results["baseline"] == baseline
    assert results["evaluations"][0]["mean"] > 0.3  # real digits teach something within 60 epochs
    saved = torch.load(run / "synthetic.pt", weights_only=False)
    assert saved["points"].shape == (10, 100, 3)
