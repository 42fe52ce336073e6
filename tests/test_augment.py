"""The evaluation's image augmentation: DSA's families do what DSA's do; stacked batches are augmented as alone."""

import pytest
import torch

from dd3d.augment import STRATEGIES, DSAAugment, augment, augment_stacked


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_augment_stacked_equals_augment_per_model(strategy):
    images = torch.rand(3, 9, 1, 28, 28)
    out = augment_stacked(images, [torch.Generator().manual_seed(s) for s in (4, 5, 6)], strategy)
    for k, s in enumerate((4, 5, 6)):
        assert torch.allclose(out[k], augment(images[k], torch.Generator().manual_seed(s), strategy), atol=1e-6)


@pytest.fixture(scope="module")
def dsa():
    """400 random images, DSA's draws for them and the augmented images, with each image's family."""
    aug = DSAAugment()
    images = torch.rand(400, 1, 28, 28)
    draws = aug.draw(400, torch.Generator().manual_seed(0))
    out = aug.apply(images[None], draws)[0]
    kinds = {name: torch.nonzero(draws[0] == i).flatten() for i, name in enumerate(DSAAugment.KINDS)}
    assert all(len(idx) > 40 for idx in kinds.values())  # every family is drawn
    return images, draws, out, kinds


def test_dsa_colour_is_brightness_then_contrast_about_the_image_mean(dsa):
    images, (_, _, _, _, brightness, contrast, _), out, kinds = dsa
    i = kinds["color"]
    x = images[i] + brightness[i].view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out[i], (x - mean) * contrast[i].view(-1, 1, 1, 1) + mean, atol=1e-6)
    assert (brightness.abs() <= 0.5).all() and (contrast >= 0.5).all() and (contrast <= 1.5).all()


def test_dsa_crop_is_an_integer_translation_of_at_most_4_pixels_filled_with_zeros(dsa):
    images, (_, shift, *_), out, kinds = dsa
    for i in kinds["crop"][:20].tolist():
        dx, dy = (int(v) for v in shift[i])
        assert abs(dx) <= 4 and abs(dy) <= 4
        expected = torch.zeros(28, 28)
        expected[max(dy, 0):28 + min(dy, 0), max(dx, 0):28 + min(dx, 0)] = \
            images[i, 0, max(-dy, 0):28 + min(-dy, 0), max(-dx, 0):28 + min(-dx, 0)]
        assert torch.allclose(out[i, 0], expected, atol=1e-5), (dx, dy)


def test_dsa_cutout_zeroes_a_square_of_14_pixels_and_keeps_the_rest(dsa):
    images, (*_, centre), out, kinds = dsa
    for i in kinds["cutout"][:20].tolist():
        cy, cx = (int(v) for v in centre[i])
        mask = torch.ones(28, 28, dtype=torch.bool)
        mask[max(cy - 7, 0):cy + 7, max(cx - 7, 0):cx + 7] = False  # the square, clipped to the image
        assert torch.equal(out[i, 0][mask], images[i, 0][mask])
        assert (out[i, 0][~mask] == 0).all() and (~mask).sum() > 0


def test_dsa_scale_and_rotation_keep_an_off_centre_pixel_on_its_side_and_stay_in_range(dsa):
    _, (choice, _, scale, angle, *_), _, _ = dsa
    aug = DSAAugment()
    # One bright pixel off-centre (row 8, col 20): where it lands tells the map, and a mirror would send it left.
    probe = torch.zeros(len(choice), 1, 28, 28)
    probe[:, :, 8, 20] = 1.0
    out = aug.apply(probe[None], aug.draw(len(choice), torch.Generator().manual_seed(0)))[0]
    centre_of_mass = lambda img: (img.clamp(min=0) * torch.arange(28.0)).sum() / img.clamp(min=0).sum()  # noqa: E731
    for kind in ("scale", "rotate"):
        for i in torch.nonzero(choice == DSAAugment.KINDS.index(kind)).flatten()[:10].tolist():
            col = centre_of_mass(out[i, 0].sum(0))
            assert col > 14, (kind, i, float(col))  # still right of centre: no flip
    assert (angle.abs() <= torch.pi / 12 + 1e-6).all() and (scale >= 1 / 1.2 - 1e-6).all() and (scale <= 1.2).all()
