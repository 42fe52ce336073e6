"""The distillation networks: equal to the seed's formulation, and exact to second order."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillation_loss import match_loss
from models.MEConv import MEPytorch, create_dense_batch
from models.MNIST import AvgPool2x2, ConvNet


def on_plane(b: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """Random points at voxel centres +-0.3 on the depth-0 plane: small moves keep their voxels."""
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 28, (b, n, 3), generator=g).to(dtype)
    pts = cells + 0.5 + (torch.rand(b, n, 3, generator=g, dtype=dtype) - 0.5) * 0.6
    pts[..., 0] = 0.5 + (pts[..., 0] - pts[..., 0].floor() - 0.5)
    return pts


def matching_loss(net, to_input, syn: torch.Tensor, real: list[torch.Tensor], metric: str) -> torch.Tensor:
    """Sum over classes c of match_loss(grad of CE on syn[c], grad of CE on real[c])."""
    params = list(net.parameters())
    total = 0
    for c, real_c in enumerate(real):
        target = torch.full((len(real_c),), c)
        gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(to_input(real_c)), target), params)]
        out = net(to_input(syn[c:c + 1]))
        gw_syn = torch.autograd.grad(F.cross_entropy(out, target[:1]), params, create_graph=True)
        total = total + match_loss(gw_syn, gw_real, metric)
    return total


def check_coordinate_derivatives(net, to_input, metric: str, coords: list[tuple[int, int, int]]) -> None:
    syn = on_plane(2, 30, seed=1, dtype=torch.float64).requires_grad_()
    real = [on_plane(3, 40, seed=2 + c, dtype=torch.float64) for c in range(2)]
    matching_loss(net, to_input, syn, real, metric).backward()
    eps = 1e-6
    for idx in coords:
        plus, minus = syn.detach().clone(), syn.detach().clone()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (matching_loss(net, to_input, plus, real, metric) - matching_loss(net, to_input, minus, real, metric))
        fd = fd.item() / (2 * eps)
        assert syn.grad[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), (idx, syn.grad[idx].item(), fd)
    assert syn.grad.abs().sum() > 0


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_mepytorch_equals_the_seeds_conv3d_network(depth):
    torch.manual_seed(depth)
    net = MEPytorch(depth=depth)
    literal = nn.Sequential(*[m for conv in net.convs for m in (conv, nn.ReLU(), nn.MaxPool3d(2))])
    x = create_dense_batch(on_plane(5, 200, seed=depth)).requires_grad_()
    fast = net(x)
    slow = net.classifier(literal(x.unsqueeze(2)).flatten(1))
    assert torch.allclose(fast, slow, atol=1e-6)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, *net.parameters()])
    g_slow = torch.autograd.grad(slow.square().sum(), [x, *net.parameters()])
    for a, b in zip(g_fast, g_slow, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("metric", ["modmse", "ours"])
def test_mepytorch_matching_gradient_matches_finite_differences(metric):
    torch.manual_seed(0)
    net = MEPytorch(depth=2, width=16).double()
    check_coordinate_derivatives(net, create_dense_batch, metric, [(0, 0, 1), (0, 3, 2), (1, 7, 1), (1, 5, 0)])


def test_evaluation_convnet_pads_28_to_32():
    net = ConvNet()
    assert net.classifier.in_features == 128 * 4 * 4
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_avgpool2x2_is_bit_identical_to_avgpool2d_to_second_order(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 16, 12, generator=g, dtype=dtype)

    def grads(pool):
        # the upstream gradient 3 y^2 depends on x, so the second grad differentiates the pool's backward
        xi = x.clone().requires_grad_()
        y = pool(xi)
        (gx,) = torch.autograd.grad((y ** 3).sum(), xi, create_graph=True)
        (ggx,) = torch.autograd.grad((gx * torch.cos(xi)).sum(), xi)
        return y.detach(), gx.detach(), ggx

    fast, ref = grads(AvgPool2x2()), grads(nn.AvgPool2d(2, 2))
    assert all(torch.equal(a, b) for a, b in zip(fast, ref, strict=True))
    assert fast[1].abs().sum() > 0 and not torch.equal(fast[2], fast[1])


def test_avgpool2x2_under_vmap_and_on_odd_bf16_or_channels_last_maps_equals_avgpool2d():
    x = torch.randn(3, 2, 4, 8, 8)
    assert torch.equal(torch.vmap(AvgPool2x2())(x), torch.vmap(nn.AvgPool2d(2, 2))(x))
    last = x[0].contiguous(memory_format=torch.channels_last)
    assert torch.equal(AvgPool2x2()(last), F.avg_pool2d(last, 2, 2))
    odd = torch.randn(2, 3, 7, 9)
    assert torch.equal(AvgPool2x2()(odd), F.avg_pool2d(odd, 2, 2))
    half = torch.randn(2, 3, 8, 8).bfloat16()
    assert torch.equal(AvgPool2x2()(half), F.avg_pool2d(half, 2, 2))


# --- MinkowskiEngine path -------------------------------------------------------------------------------

if os.environ.get("DD3D_SKIP_MINKOWSKI") == "1":
    pytest.skip("DD3D_SKIP_MINKOWSKI=1: MinkowskiEngine not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def ME():
    from models.minkowski import import_minkowski

    return import_minkowski()


def test_input_batch_has_unique_voxels_with_mean_features(ME):
    from models.MEConv import create_input_batch

    pts = torch.tensor([[[0.0, 2.2, 3.1], [0.0, 2.8, 3.5], [0.0, 7.0, 1.0]],
                        [[0.0, 2.5, 3.5], [0.0, 2.5, 3.5], [0.0, 2.5, 3.5]]], requires_grad=True)
    x = create_input_batch(pts)
    coords = x.sparse.C.tolist()
    assert len(coords) == len({tuple(c) for c in coords}) == 3
    rows = {tuple(c): f for c, f in zip(coords, x.features.tolist(), strict=True)}
    assert rows[(0, 0, 2, 3)] == pytest.approx([0.0, 2.5, 3.3])
    assert rows[(1, 0, 2, 3)] == pytest.approx([0.0, 2.5, 3.5])
    x.features.sum().backward()
    assert torch.allclose(pts.grad[1], torch.full((3, 3), 1 / 3))


def test_sparse_layers_equal_minkowski_modules(ME):
    from models.MEConv import create_input_batch
    from models.sparse_ops import conv_map, instance_norm, pool_map, sparse_conv, sparse_max_pool

    torch.manual_seed(0)
    x = create_input_batch(on_plane(4, 250, seed=3) * torch.tensor([1.0, 1.0, 1.0]))
    s = ME.SparseTensor(x.features.detach(), coordinate_map_key=x.sparse.coordinate_map_key,
                        coordinate_manager=x.sparse.coordinate_manager)
    manager, key, n = s.coordinate_manager, s.coordinate_map_key, len(s.C)
    batch = s.C[:, 0].long()
    conv = ME.MinkowskiConvolution(3, 8, kernel_size=3, dimension=3)
    norm = ME.MinkowskiInstanceNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    ours = sparse_conv(s.F, conv.kernel, conv_map(manager, key, n, torch.device("cpu")))
    theirs = conv(s)
    assert torch.allclose(ours, theirs.F, atol=1e-5)
    ours = instance_norm(theirs.F, batch, 4, norm.weight, norm.bias)
    assert torch.allclose(ours, norm(theirs).F, atol=1e-5)
    pooled = ME.MinkowskiMaxPooling(kernel_size=2, stride=2, dimension=3)(theirs)
    out_key = manager.stride(key, 2)
    assert pooled.coordinate_map_key == out_key
    ours = sparse_max_pool(theirs.F, pool_map(manager, key, out_key, n, len(pooled.C), torch.device("cpu")))
    assert torch.allclose(ours, pooled.F, atol=1e-6)
    # Second level: the stride-2 convolution uses ME's dilated offsets.
    conv2 = ME.MinkowskiConvolution(8, 8, kernel_size=3, dimension=3)
    ours = sparse_conv(pooled.F, conv2.kernel, conv_map(manager, out_key, len(pooled.C), torch.device("cpu")))
    assert torch.allclose(ours, conv2(pooled).F, atol=1e-5)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_meconvexp_equals_minkowski_forward(ME, depth):
    from models.MEConv import MEConvExp, create_input_batch

    torch.manual_seed(depth)
    net = MEConvExp(depth=depth)
    x = create_input_batch(on_plane(4, 250, seed=depth))
    ref = ME.SparseTensor(x.features, coordinate_map_key=x.sparse.coordinate_map_key,
                          coordinate_manager=x.sparse.coordinate_manager)
    for conv, norm in zip(net.convs, net.norms, strict=True):
        ref = ME.MinkowskiMaxPooling(kernel_size=2, stride=2, dimension=3)(ME.MinkowskiReLU()(norm(conv(ref))))
    dense = ref.dense(shape=torch.Size([4, 128, 1, 28, 28]), min_coordinate=torch.zeros(3, dtype=torch.int))[0]
    assert torch.allclose(net(x), net.classifier(dense.flatten(1)), atol=1e-5)


def test_minkowski_autograd_is_first_order_only(ME):
    """The bug this design avoids: through ME's own conv the kernel gradient has no graph to the input."""
    torch.manual_seed(0)
    conv = ME.MinkowskiConvolution(3, 4, kernel_size=3, dimension=3)
    from models.MEConv import create_input_batch

    pts = on_plane(1, 50, seed=0).requires_grad_()
    x = create_input_batch(pts)
    s = ME.SparseTensor(x.features, coordinate_map_key=x.sparse.coordinate_map_key,
                        coordinate_manager=x.sparse.coordinate_manager)
    (g,) = torch.autograd.grad(conv(s).F.square().sum(), conv.kernel, create_graph=True)
    assert not g.requires_grad


@pytest.mark.parametrize("metric", ["modmse", "ours"])
def test_meconvexp_matching_gradient_matches_finite_differences(ME, metric):
    from models.MEConv import MEConvExp, create_input_batch

    torch.manual_seed(0)
    net = MEConvExp(depth=2, width=16).double()
    check_coordinate_derivatives(net, create_input_batch, metric, [(0, 0, 1), (0, 3, 2), (1, 7, 1), (1, 5, 0)])


def test_sparse_linear_equals_linear_on_the_dense_grid_to_second_order():
    # The fused classifier against the plain one: scatter the voxels into the dense [B, C, cells] grid, flatten,
    # Linear; values, feature gradients and a gradient of a gradient (what the matching differentiates).
    from models.sparse_ops import sparse_linear

    torch.manual_seed(0)
    batch_size, channels, cells, n = 3, 4, 9, 11
    flat = torch.randperm(batch_size * cells)[:n]
    batch, cell = flat // cells, flat % cells
    features = torch.randn(n, channels, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(10, channels * cells, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(10, dtype=torch.float64)

    def plain(f: torch.Tensor) -> torch.Tensor:
        dense = f.new_zeros(batch_size, cells, channels).index_put((batch, cell), f)
        return F.linear(dense.transpose(1, 2).flatten(1), weight, bias)

    def fused(f: torch.Tensor) -> torch.Tensor:
        return sparse_linear(f, batch, cell, batch_size, weight.view(10, channels, cells), bias)

    def second_order(net) -> torch.Tensor:
        g_w, = torch.autograd.grad(net(features).logsumexp(1).sum(), weight, create_graph=True)
        return torch.autograd.grad(g_w.pow(2).sum(), features)[0]

    assert torch.allclose(fused(features), plain(features), atol=1e-12)
    assert torch.allclose(second_order(fused), second_order(plain), atol=1e-10)
    assert second_order(plain).abs().max() > 0


def test_background_gathers_equal_filling_absent_neighbours_explicitly_to_second_order():
    """The background rows read through the gather equal the mask-times-background form, values and gradients
    (including a pooling map narrower than its window: the missing inputs are absent too)."""
    from models.sparse_ops import PoolMap, background_avg_pool, background_conv2d, gather_rows

    g = torch.Generator().manual_seed(0)
    n, num, c = 7, 2, 3
    feats = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    background = torch.randn(num, c, generator=g, dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    table = torch.randint(0, n + 1, (n, 9), generator=g)  # n = absent
    in_domain = torch.rand(n, 9, generator=g) > 0.3
    weight = torch.randn(4, c, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    pmap = PoolMap(torch.tensor([[0, 1], [2, n], [3, 4], [5, 6]]))  # two columns of a 2 x 2 window
    out_batch = torch.tensor([0, 0, 1, 1])

    def explicit():
        fill = ((table == n) & in_domain).unsqueeze(-1).double()
        gathered = gather_rows(feats, table) + fill * background.index_select(0, batch).unsqueeze(1)
        w = weight.permute(2, 3, 1, 0).reshape(-1, 4)
        conv = gathered.flatten(1) @ w + bias
        present = (pmap.table < n).sum(1, keepdim=True)
        pool = (gather_rows(feats, pmap.table).sum(1) + (4 - present) * background.index_select(0, out_batch)) / 4
        return conv, pool

    def folded():
        return background_conv2d(feats, background, batch, weight, bias, table, in_domain)[0], \
            background_avg_pool(feats, background, out_batch, pmap)

    for a, b, inputs in zip(explicit(), folded(), ([feats, background, weight], [feats, background]), strict=True):
        assert torch.allclose(a, b)
        ga = torch.autograd.grad(a.square().sum(), inputs, create_graph=True)
        gb = torch.autograd.grad(b.square().sum(), inputs, create_graph=True)
        for x, y in zip(ga, gb, strict=True):
            assert torch.allclose(x, y)
        assert torch.allclose(torch.autograd.grad(sum(x.square().sum() for x in ga), feats)[0],
                              torch.autograd.grad(sum(y.square().sum() for y in gb), feats)[0])
