import math

import pytest
import torch

from distillation_loss import GAUSSIAN_SCALES, embedding_distance, gaussian_mmd, match_loss

# Two "layers": a 2x2 weight and a bias (1-D, ignored by the layer-wise distances).
W_SYN = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
W_REAL = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
B_SYN, B_REAL = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 3.0])
SYN, REAL = [W_SYN, B_SYN], [W_REAL, B_REAL]


def test_ours_is_rowwise_one_minus_cosine():
    # row 0: (1,0)·(0,1) = 0 -> 1 - 0 = 1; row 1: (0,2)·(0,1) = 2 / (2*1) = 1 -> 0. Bias ignored.
    assert match_loss(SYN, REAL, "ours").item() == pytest.approx(1.0, abs=1e-5)


def test_modmse_is_layerwise_squared_difference_without_biases():
    # (1-0)^2 + (0-1)^2 + 0 + (2-1)^2 = 3
    assert match_loss(SYN, REAL, "modmse").item() == pytest.approx(3.0)


def test_mse_is_flat_squared_difference_including_biases():
    # 3 from the weight + (1-0)^2 + (1-3)^2 = 8
    assert match_loss(SYN, REAL, "mse").item() == pytest.approx(8.0)


def test_cos_is_one_minus_flat_cosine():
    s, r = torch.tensor([1.0, 0, 0, 2, 1, 1]), torch.tensor([0.0, 1, 0, 1, 0, 3])
    expected = 1 - (s @ r).item() / (s.norm() * r.norm()).item()
    assert match_loss(SYN, REAL, "cos").item() == pytest.approx(expected, abs=1e-6)


def test_conv_shapes_are_matched_per_output_channel():
    # 5-D Conv3d gradient [out=2, in=1, 1, 1, 2]: rows are output channels.
    gs = torch.tensor([1.0, 0, 0, 1]).view(2, 1, 1, 1, 2)
    gr = torch.tensor([1.0, 0, 1, 0]).view(2, 1, 1, 1, 2)
    assert match_loss([gs], [gr], "ours").item() == pytest.approx(1.0, abs=1e-5)
    assert match_loss([gs.view(2, 1, 1, 2)], [gr.view(2, 1, 1, 2)], "ours").item() == pytest.approx(1.0, abs=1e-5)


def test_identical_gradients_have_zero_distance():
    g = [torch.randn(4, 3, 1, 3, 3), torch.randn(4), torch.randn(10, 7)]
    for metric in ("ours", "modmse", "mse", "cos"):
        assert abs(match_loss(g, [t.clone() for t in g], metric).item()) < 1e-5


def test_distance_is_differentiable_in_the_synthetic_gradient():
    gs = torch.tensor([[3.0, 4.0]], requires_grad=True)
    gr = torch.tensor([[0.0, 1.0]])
    match_loss([gs], [gr], "ours").backward()
    # d/dgs (1 - gs·gr / |gs||gr|) = -(gr/|gs| - (gs·gr) gs / |gs|^3)
    expected = -(gr / 5 - 4 * gs.detach() / 125)
    assert torch.allclose(gs.grad, expected, atol=1e-6)
    assert not math.isnan(gs.grad.sum().item())


def test_embedding_distance_is_the_squared_distance_of_the_batch_means():
    syn, real = torch.tensor([[1.0, 2.0], [3.0, 2.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    assert float(embedding_distance(syn, real)) == pytest.approx(2.0 ** 2 + 0.0 ** 2)
    assert float(embedding_distance(real.flip(0), real)) == 0.0  # means only: order and batch size do not count


def test_gaussian_mmd_is_the_biased_mmd_estimate_under_median_scaled_kernels():
    real = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])  # off-diagonal squared distances 1, 1, 4 (twice)
    syn = torch.tensor([[1.0, 0.0], [0.0, 3.0]])

    def mean_kernel(a: torch.Tensor, b: torch.Tensor, width: float) -> float:
        return sum(math.exp(-float(((x - y) ** 2).sum()) / width) for x in a for y in b) / (len(a) * len(b))

    expected = sum(mean_kernel(syn, syn, 2 * s) + mean_kernel(real, real, 2 * s) - 2 * mean_kernel(syn, real, 2 * s)
                   for s in GAUSSIAN_SCALES)  # the median squared distance is 1
    assert float(gaussian_mmd(syn, real)) == pytest.approx(expected, rel=1e-6)
    assert float(gaussian_mmd(real.flip(0), real)) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_mmd_sees_the_spread_that_the_mean_distance_does_not():
    real = torch.tensor([[-1.0], [1.0], [-1.0], [1.0]])
    collapsed = torch.zeros(2, 1, requires_grad=True)  # the real mean twice: DM's distance is 0 and flat
    assert float(embedding_distance(collapsed.detach(), real)) == 0.0
    distance = gaussian_mmd(collapsed, real)
    assert float(distance.detach()) > 0.05
    [grad] = torch.autograd.grad(distance, collapsed)
    assert torch.isfinite(grad).all()  # the two clouds coincide: a zero distance, still a finite gradient
    spread = torch.tensor([[-1.0], [1.0]])
    assert float(gaussian_mmd(spread, real)) == pytest.approx(0.0, abs=1e-6)


def test_unknown_distance_raises():
    with pytest.raises(ValueError, match="unknown distance"):
        match_loss(SYN, REAL, "l1")
