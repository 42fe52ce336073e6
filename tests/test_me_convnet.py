"""The MinkowskiEngine ConvNet (network = me-convnet): equal to DC's dense ConvNet on the full domain, exact
to second order on a sparse cloud with its halo."""

import os

import pytest
import torch
import torch.nn.functional as F

from models.MNIST import ConvNet
from tests.test_models import check_coordinate_derivatives, on_plane

if os.environ.get("DD3D_SKIP_MINKOWSKI") == "1":
    pytest.skip("DD3D_SKIP_MINKOWSKI=1: MinkowskiEngine not installed", allow_module_level=True)


@pytest.mark.parametrize("absent, norm", [("skip", "instance"), ("background", "instance"), ("skip", "none"),
                                          ("background", "none")])
def test_full_halo_equals_the_dense_convnet_values_and_point_gradients(absent, norm):
    from models.MEConv import FULL_HALO, MEConvNet, create_dense_splat, create_splat_halo_batch

    torch.manual_seed(0)
    dense = ConvNet(width=16, norm=norm)
    sparse = MEConvNet(width=16, absent=absent, norm=norm)
    sparse.load_state_dict(dense.state_dict())
    pts = on_plane(3, 60, seed=4, dtype=torch.float32).requires_grad_()
    target = torch.tensor([1, 4, 7])
    out_dense = dense(create_dense_splat(pts))
    out_sparse = sparse(create_splat_halo_batch(pts, FULL_HALO))
    assert torch.allclose(out_sparse, out_dense, atol=1e-5)
    # Gradient of the parameter gradient's norm: the second-order path the matching uses.
    def second_order(net, x):
        grads = torch.autograd.grad(F.cross_entropy(net(x), target), list(net.parameters()), create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in grads), pts)[0]
    g_dense = second_order(dense, create_dense_splat(pts))
    g_sparse = second_order(sparse, create_splat_halo_batch(pts, FULL_HALO))
    assert g_dense.abs().max() > 0
    assert torch.allclose(g_sparse, g_dense, atol=1e-5, rtol=1e-3)
    # The embedding distribution matching reads: the same dense features, and the same point gradients.
    emb_dense, emb_sparse = dense.embed(create_dense_splat(pts)), sparse.embed(create_splat_halo_batch(pts, FULL_HALO))
    assert emb_sparse.shape == emb_dense.shape == (3, 16 * 4 * 4)
    assert torch.allclose(emb_sparse, emb_dense, atol=1e-4, rtol=1e-4)
    [e_dense], [e_sparse] = (torch.autograd.grad(e.mean(0).square().sum(), pts) for e in (emb_dense, emb_sparse))
    assert e_dense.abs().max() > 0 and torch.allclose(e_sparse, e_dense, atol=1e-5, rtol=1e-3)
    # Every block's output (CAFE's layer-wise alignment): the same dense features, the last one the embedding.
    layers_dense = dense.embed_layers(create_dense_splat(pts))
    layers_sparse = sparse.embed_layers(create_splat_halo_batch(pts, FULL_HALO))
    assert [e.shape[1] for e in layers_sparse] == [e.shape[1] for e in layers_dense] == [16 * 16 * 16, 16 * 8 * 8,
                                                                                          16 * 4 * 4]
    assert torch.equal(layers_dense[-1], emb_dense) and torch.allclose(layers_sparse[-1], emb_sparse, atol=1e-6)
    for e_sparse, e_dense in zip(layers_sparse, layers_dense, strict=True):
        assert torch.allclose(e_sparse, e_dense, atol=1e-4, rtol=1e-4)


def test_halo_adds_empty_voxels_around_the_splat_inside_the_domain():
    from models.MEConv import CONVNET_DOMAIN, CONVNET_PAD, create_splat_halo_batch

    pts = torch.tensor([[[0.0, 0.5, 0.5]], [[0.0, 10.5, 20.5]]])  # one point at a cell centre per cloud
    for halo in (0, 1, 3):
        x = create_splat_halo_batch(pts, halo)
        coords, occ = x.sparse.C, x.features[:, 0]
        for b, (h, w) in enumerate([(0, 0), (10, 20)]):
            mine = coords[:, 0] == b
            # The splat keeps the point's 4 bilinear corners (3 of weight 0); the halo grows that 2 x 2 block.
            rows = torch.arange(h - halo, h + 2 + halo) + CONVNET_PAD
            cols = torch.arange(w - halo, w + 2 + halo) + CONVNET_PAD
            expected = {(int(r), int(c)) for r in rows for c in cols
                        if 0 <= r < CONVNET_DOMAIN and 0 <= c < CONVNET_DOMAIN}
            assert {(int(r), int(c)) for r, c in coords[mine][:, 2:].tolist()} == expected
            centre = mine & (coords[:, 2] == h + CONVNET_PAD) & (coords[:, 3] == w + CONVNET_PAD)
            assert occ[centre].item() == pytest.approx(1.0, abs=2e-3)
            assert occ[mine & ~centre].abs().max() == 0


def test_background_is_exact_at_the_first_layer_and_closer_to_dense_than_skipping():
    """With halo >= 1 every absent first-layer voxel is empty space, whose value the background carries."""
    from models.MEConv import MEConvNet, create_dense_splat, create_splat_halo_batch

    torch.manual_seed(0)
    dense = ConvNet(width=8, depth=1)
    pts = torch.stack([torch.tensor([0.0, 10.5, 10.5]) + torch.tensor([0.0, i % 5, i // 5]) for i in range(15)])[None]
    errors = {}
    for absent in ("skip", "background"):
        sparse = MEConvNet(width=8, depth=1, absent=absent)
        sparse.load_state_dict(dense.state_dict())
        errors[absent] = (sparse(create_splat_halo_batch(pts, 1)) - dense(create_dense_splat(pts))).abs().max()
    assert errors["background"] < 1e-5 < errors["skip"]


@pytest.mark.parametrize(("metric", "halo", "absent"), [("ours", 1, "skip"), ("modmse", 0, "skip"),
                                                        ("ours", 1, "background")])
def test_matching_gradient_matches_finite_differences(metric, halo, absent):
    from functools import partial

    from models.MEConv import MEConvNet, create_splat_halo_batch

    torch.manual_seed(0)
    net = MEConvNet(width=8, absent=absent).double()
    check_coordinate_derivatives(net, partial(create_splat_halo_batch, halo=halo), metric,
                                 [(0, 0, 1), (0, 3, 2), (1, 7, 1), (1, 5, 2)])
