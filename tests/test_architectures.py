"""Cross-architecture evaluation (models/MNIST.py ARCHITECTURES) and the batched (vmapped) training of N models."""

import json

import pytest
import torch

from configs import settings as settings_module
from configs.settings import SettingsError, load_settings
from dd3d import evaluate as ev  # its test_* functions are not pytest tests: keep them off this module's names
from dd3d.evaluate import ModelStack, evaluate_set, make_models, train_model, train_stack
from models.MNIST import ARCHITECTURES
from tests.conftest import TINY, only_run_dir, run_cli

CPU = torch.device("cpu")


def test_registry_matches_the_settings_names_and_takes_mnist_digits():
    assert tuple(ARCHITECTURES) == settings_module.ARCHITECTURES
    x = torch.rand(3, 1, 28, 28)
    for name, build in ARCHITECTURES.items():
        net = build()
        assert net(x).shape == (3, 10), name
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()), name


@pytest.mark.parametrize("arch, width", [("convnet", 2048), ("mlp", 128), ("lenet", 84), ("alexnet", 3072)])
def test_embed_is_what_the_last_linear_layer_reads(arch, width):
    torch.manual_seed(0)
    net = ARCHITECTURES[arch]()
    x = torch.rand(3, 1, 28, 28)
    emb = net.embed(x)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert emb.shape == (3, width) and torch.allclose(last(emb), net(x), atol=1e-6)


def test_architectures_setting_and_flag():
    assert load_settings([]).eval_architectures == ("convnet",)
    assert load_settings(["--architectures", "all"]).eval_architectures == settings_module.ARCHITECTURES
    s = load_settings(["--architectures", "mlp, ResNet18,mlp", "--set", "EVALUATION.architecture_lr=mlp:0.05"])
    assert s.eval_architectures == ("mlp", "resnet18")
    assert (s.eval_lr("mlp"), s.eval_lr("resnet18")) == (0.05, s.classifier_lr)


@pytest.mark.parametrize("argv, fragment", [
    (["--architectures", ""], "EVALUATION.architectures = '' is empty"),
    (["--architectures", " , "], "is empty"),
    (["--architectures", "convnet,vgg16"], "names an unknown architecture 'vgg16'"),
    (["--set", "EVALUATION.architectures=all,mlp"], "unknown architecture 'all'"),
    (["--set", "EVALUATION.architecture_lr=mlp=0.1"], "EVALUATION.architecture_lr = 'mlp=0.1': bad entry"),
    (["--set", "EVALUATION.architecture_lr=lenet:-1"], "bad entry 'lenet:-1'"),
    (["--set", "EVALUATION.architecture_lr=mlp:inf"], "bad entry 'mlp:inf'"),
    (["--set", "EVALUATION.batched=sometimes"], "EVALUATION.batched = 'sometimes' is out of range"),
])
def test_bad_architecture_settings_name_the_problem(argv, fragment):
    with pytest.raises(SettingsError) as e:
        load_settings(argv)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_unknown_architecture_exits_2_and_writes_nothing(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli(["--pytorch", "--architectures", "convnet,transformer", "--baseline", "random-real"], runs)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: EVALUATION.architectures = 'convnet,transformer' names an unknown "
                                   "architecture 'transformer' (convnet/mlp/lenet/alexnet/vgg11/resnet18, or all)")
    assert not runs.exists()


def _train_both(arch: str, dtype: torch.dtype, epochs: int = 2, n_images: int = 12, strategy: str = "dc"):
    """The same N = 2 models trained one by one and as a stack (augmentation on, two batches per epoch)."""
    batch = str((n_images + 1) // 2)
    settings = load_settings(["--eval-epochs", str(epochs), "--set", f"EVALUATION.batch_size={batch}",
                              "--set", f"EVALUATION.augment_strategy={strategy}", "--device", "cpu"])
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_images, 1, 28, 28, generator=g).round().to(dtype)
    labels = torch.arange(n_images) % 10
    seeds = [7, 8]
    singles = [train_model(net.to(dtype), images, labels, settings, torch.Generator().manual_seed(s), 0.01)
               for net, s in zip(make_models(arch, seeds, CPU), seeds, strict=True)]
    stack = ModelStack([net.to(dtype) for net in make_models(arch, seeds, CPU)])
    train_stack(stack, images, labels, settings, [torch.Generator().manual_seed(s) for s in seeds], 0.01)
    return singles, stack


def _max_param_error(singles, stack) -> tuple[float, float]:
    err, scale = 0.0, 0.0
    for k, net in enumerate(singles):
        for name, p in net.named_parameters():
            err = max(err, (p - stack.params[name][k]).abs().max().item())
            scale = max(scale, p.abs().max().item())
    return err, scale


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_batched_training_is_the_same_math_as_separate_trainings(arch):
    """In float64 rounding is out of the way: every architecture's stack equals its separate models."""
    # The two largest nets on fewer digits: float64 on the CPU is slow, and the math is the same at any size.
    singles, stack = _train_both(arch, torch.float64, epochs=2, n_images=5 if arch in ("vgg11", "resnet18") else 12)
    err, scale = _max_param_error(singles, stack)
    assert scale > 0 and err < 1e-9 * max(scale, 1.0), (arch, err)
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    logits = stack(x, shared=True)
    for k, net in enumerate(singles):
        assert torch.allclose(logits[k], net(x), atol=1e-9)


@pytest.mark.parametrize("arch, strategy", [("convnet", "dc"), ("mlp", "dc"), ("lenet", "dc"), ("lenet", "dsa")])
def test_batched_training_matches_separate_trainings_in_float32(arch, strategy):
    singles, stack = _train_both(arch, torch.float32, epochs=2, strategy=strategy)
    err, scale = _max_param_error(singles, stack)
    assert err < 1e-5 * max(scale, 1.0), (arch, err)
    for net, again in zip(singles, stack.unstack(), strict=True):
        x = torch.rand(4, 1, 28, 28)
        assert torch.allclose(net(x), again(x), atol=1e-4)


@pytest.mark.parametrize("augment_test", [False, True])
def test_batched_test_pass_equals_the_loop(augment_test):
    nets = make_models("lenet", [1, 2, 3], CPU)
    stack = ModelStack(nets)
    images = torch.rand(50, 1, 28, 28).round()
    labels = torch.randint(0, 10, (50,))
    batched = ev.test_stack(stack, images, labels, augment_test, [torch.Generator().manual_seed(s) for s in (1, 2, 3)],
                         batch_size=20)
    loop = [ev.test_accuracy(net, images, labels, augment_test, torch.Generator().manual_seed(s), batch_size=20)
            for net, s in zip(nets, (1, 2, 3), strict=True)]
    assert batched == pytest.approx(loop, abs=1e-12)


def test_evaluate_set_reports_each_architecture_whichever_path():
    images, labels = torch.rand(10, 1, 28, 28).round(), torch.arange(10)
    test_images, test_labels = torch.rand(40, 1, 28, 28).round(), torch.randint(0, 10, (40,))
    results = {}
    for batched in ("true", "false", "auto"):  # auto on the CPU: lenet trains batched and tests one by one
        settings = load_settings(["--eval-models", "2", "--eval-epochs", "2", "--architectures", "lenet,mlp",
                                  "--set", f"EVALUATION.batched={batched}", "--device", "cpu"])
        before = torch.get_rng_state()
        result = evaluate_set(images, labels, test_images, test_labels, settings, seed=3)
        assert torch.equal(torch.get_rng_state(), before)
        assert list(result.by_architecture) == ["lenet", "mlp"]
        assert result.accuracies == result.by_architecture["lenet"].accuracies and len(result.accuracies) == 2
        assert evaluate_set(images, labels, test_images, test_labels, settings, seed=3) == result
        results[batched] = result
    for arch in ("lenet", "mlp"):  # same models up to float rounding: at most one test digit in 40 may flip
        for other in ("false", "auto"):
            assert results[other].by_architecture[arch].accuracies == pytest.approx(
                results["true"].by_architecture[arch].accuracies, abs=1.01 / 40)


def test_baseline_run_records_every_architecture(tmp_path, mnist):
    runs = tmp_path / "runs"
    proc = run_cli([*TINY, "--pytorch", "--baseline", "class-mean", "--architectures", "convnet,mlp"], runs)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(runs)
    [entry] = json.loads((run / "results.json").read_text())["evaluations"]
    assert list(entry["architectures"]) == ["convnet", "mlp"]
    for arch in ("convnet", "mlp"):
        assert len(entry["architectures"][arch]["accuracies"]) == 2
    assert entry["accuracies"] == entry["architectures"]["convnet"]["accuracies"]
    assert entry["mean"] == entry["architectures"]["convnet"]["mean"]
    log = (run / "log.txt").read_text()
    assert "test accuracy convnet" in log and ", mlp " in log

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    assert {"Evaluation/accuracy/mean", "Evaluation/accuracy_convnet/mean", "Evaluation/accuracy_mlp/std"} <= set(
        acc.Tags()["scalars"])
