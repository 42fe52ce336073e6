import shutil

import pytest
import torch

from configs.settings import load_settings
from dd3d import evaluate as ev  # its test_* functions are not pytest tests: keep them off this module's names
from dd3d.augment import augment
from dd3d.evaluate import ModelStack, autocast, evaluate_set, make_models, train_model, train_stack
from dd3d.pointsets import binarize, occupancy_to_images


def test_augment_keeps_shape_and_moves_digits():
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    fill = images.mean()
    assert out.min() >= fill - 1e-5 - 1 and out.max() <= 1 + 1e-5
    changed = (out - images).abs().flatten(1).amax(1) > 1e-3
    assert changed.float().mean() > 0.8  # nearly every image is transformed
    same = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)


def test_crop_shift_is_an_exact_integer_translation():
    images = torch.zeros(200, 1, 28, 28)
    images[:, :, 14, 14] = 1
    out = augment(images, torch.Generator().manual_seed(1))
    # Translations keep the single pixel as one full pixel somewhere within 4 px of the centre.
    peak = out.flatten(1).amax(1)
    shifted = torch.isclose(peak, torch.tensor(1.0) - images.mean() + images.mean())
    assert shifted.any()
    idx = out.flatten(1).argmax(1)[shifted]
    rows, cols = idx // 28, idx % 28
    assert ((rows - 14).abs() <= 4).all() and ((cols - 14).abs() <= 4).all()


@pytest.fixture(scope="module")
def small_eval(mnist):
    settings = load_settings(["--eval-models", "2", "--eval-epochs", "30", "--device", "cpu"])
    test = occupancy_to_images(binarize(mnist.test_images[:500], settings.threshold))
    return settings, test, mnist.test_labels[:500]


def test_models_trained_on_real_digits_learn(mnist, small_eval):
    settings, test_images, test_labels = small_eval
    picks = torch.cat([torch.nonzero(mnist.train_labels == c).flatten()[:10] for c in range(10)])
    images = occupancy_to_images(binarize(mnist.train_images[picks], settings.threshold))
    result = evaluate_set(images, mnist.train_labels[picks], test_images, test_labels, settings, seed=0)
    assert len(result.accuracies) == 2
    assert result.mean > 0.5, result.accuracies  # 10 digits per class, 30 epochs


def test_evaluation_is_reproducible_and_leaves_global_rng_alone(mnist, small_eval):
    settings, test_images, test_labels = small_eval
    images = torch.rand(10, 1, 28, 28).round()
    labels = torch.arange(10)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = evaluate_set(images, labels, test_images, test_labels, settings, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = evaluate_set(images, labels, test_images, test_labels, settings, seed=3)
    assert a.accuracies == b.accuracies


def test_pixel_standardiser_centres_and_scales_by_the_training_digits():
    from dd3d.evaluate import pixel_standardiser

    occupancy = torch.rand(50, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.8
    standardise = pixel_standardiser(occupancy)
    out = standardise(occupancy.float())
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1) < 1e-5
    # Another set (the synthetic images, the test digits) is moved by the same affine map, not its own.
    other = torch.ones(2, 1, 28, 28)
    assert torch.allclose(standardise(other), torch.full_like(other, float(standardise(torch.ones(1)))))
    assert float(standardise(torch.ones(1))) > 1


def test_bf16_evaluation_autocasts_the_forward_and_keeps_float32_weights(mnist, small_eval):
    """Two SGD steps (two epochs of 100 digits) in bf16 and in fp32 from the same start and data order: float32
    weights, nearly the same update (3 % apart measured; a bf16 step that failed to train would be 100 % off), nearly
    the same predictions. Short because bf16 on a CPU without native bfloat16 is ~20x slower than fp32; that
    bf16 matches fp32 over the full protocol is the `precision` grid's row (README, Results)."""
    settings, test_images, test_labels = small_eval
    picks = torch.cat([torch.nonzero(mnist.train_labels == c).flatten()[:10] for c in range(10)])
    images = occupancy_to_images(binarize(mnist.train_images[picks], settings.threshold))
    with autocast(images.device, "bf16"):
        assert make_models("convnet", [0], images.device)[0](images[:2]).dtype == torch.bfloat16
    with autocast(images.device, "fp32"):
        assert make_models("convnet", [0], images.device)[0](images[:2]).dtype == torch.float32
    update, accuracy = {}, {}
    for precision in ("fp32", "bf16"):
        bf = load_settings(["--eval-epochs", "2", "--set", f"EVALUATION.precision={precision}"])
        [net] = make_models("convnet", [0], images.device)
        start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
        train_model(net, images, mnist.train_labels[picks], bf, torch.Generator().manual_seed(0), 0.01)
        assert all(p.dtype == torch.float32 for p in net.parameters())
        update[precision] = torch.nn.utils.parameters_to_vector(net.parameters()).detach() - start
        accuracy[precision] = ev.test_accuracy(net, test_images[:200], test_labels[:200], False, torch.Generator(),
                                               precision=precision)
    assert (update["bf16"] - update["fp32"]).norm() < 0.15 * update["fp32"].norm()
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.05, accuracy
    # The stacked path too: a finite float32 loss from bf16 logits, float32 weights after the steps.
    bf = load_settings(["--eval-epochs", "2", "--set", "EVALUATION.precision=bf16"])
    stack = train_stack(ModelStack(make_models("mlp", [0, 1], images.device)), images, mnist.train_labels[picks], bf,
                        [torch.Generator().manual_seed(s) for s in (0, 1)], 0.01)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in stack.params.values())


def test_bf16_on_a_cpu_without_native_bfloat16_is_warned_about(monkeypatch):
    cpu, native = torch.device("cpu"), {"bf16": True}
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native["bf16"])
    assert ev.emulated_bf16_warning(cpu, "bf16") is None
    native["bf16"] = False
    warning = ev.emulated_bf16_warning(cpu, "bf16")
    assert warning.startswith("EVALUATION.precision=bf16 on a CPU without native bfloat16") and "\n" not in warning
    assert ev.emulated_bf16_warning(cpu, "fp32") is None
    assert ev.emulated_bf16_warning(torch.device("cuda"), "bf16") is None


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_evaluation_trains_and_tests_the_same_model(mnist, small_eval):
    """EVALUATION.compile: the ConvNet through torch.compile ends with the eager model's weights (up to float
    rounding) and the same test accuracy; one graph per mode serves every model of the architecture."""
    from torch._dynamo.utils import counters

    _, test_images, test_labels = small_eval
    picks = torch.cat([torch.nonzero(mnist.train_labels == c).flatten()[:1] for c in range(10)])
    images = occupancy_to_images(binarize(mnist.train_images[picks], 75))
    torch._dynamo.reset()
    counters.clear()
    nets, accuracy = {}, {}
    for flag in ("false", "true", "true"):  # the second compiled model reuses the first one's graphs
        settings = load_settings(["--eval-epochs", "4", "--set", f"EVALUATION.compile={flag}"])
        [net] = make_models("convnet", [0], images.device)
        train_model(ev.compiled(net, settings), images, mnist.train_labels[picks], settings,
                    torch.Generator().manual_seed(0), 0.01)
        nets[flag], accuracy[flag] = net, ev.test_accuracy(ev.compiled(net, settings), test_images, test_labels,
                                                           False, torch.Generator())
    fresh = make_models("convnet", [0], images.device)[0]
    assert not torch.equal(nets["true"].classifier.weight, fresh.classifier.weight)  # the plain module was trained
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])  # train and test, for both models
    for (name, eager), compiled in zip(nets["false"].named_parameters(), nets["true"].parameters(), strict=True):
        assert torch.allclose(eager, compiled, rtol=1e-3, atol=1e-4), name
    assert abs(accuracy["true"] - accuracy["false"]) <= 0.004, accuracy


def test_training_and_testing_in_chunks_is_the_whole_batch_computation(mnist, small_eval, monkeypatch):
    """ev.CHUNK images per forward: the same SGD steps as whole batches (per-sample norms), the same predictions,
    with test augmentation still drawn per batch (490 digits in batches of 230: partial chunks and batches)."""
    _, test_images, test_labels = small_eval
    picks = torch.cat([torch.nonzero(mnist.train_labels == c).flatten()[:6] for c in range(10)])
    images = occupancy_to_images(binarize(mnist.train_images[picks], 75))
    settings = load_settings(["--eval-epochs", "3", "--set", "EVALUATION.batch_size=50"])  # chunks 20, 20, 10
    nets, accuracy = {}, {}
    for chunk in (20, 10**6):
        monkeypatch.setattr(ev, "CHUNK", chunk)
        [nets[chunk]] = make_models("convnet", [0], images.device)
        train_model(nets[chunk], images, mnist.train_labels[picks], settings, torch.Generator().manual_seed(0), 0.01)
        # One trained model, tested both ways: only the chunking differs.
        accuracy[chunk] = ev.test_accuracy(nets[20], test_images[:490], test_labels[:490], True,
                                           torch.Generator().manual_seed(1), batch_size=230)
    for (name, chunked), whole in zip(nets[20].named_parameters(), nets[10**6].parameters(), strict=True):
        assert torch.allclose(chunked, whole, rtol=1e-4, atol=1e-5), name
    assert not torch.equal(nets[20].classifier.weight, make_models("convnet", [0], images.device)[0].classifier.weight)
    assert abs(accuracy[20] - accuracy[10**6]) <= 1 / 490, accuracy
