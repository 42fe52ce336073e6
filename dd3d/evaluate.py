"""Evaluation: train fresh networks of each listed architecture on a (projected) synthetic set, test on MNIST.

The training digits are augmented by EVALUATION.augment_strategy (``dd3d/augment.py``: DC's or DSA's), the whole
batch at once with one affine grid on the tensor's device instead of per-image scipy calls.

The N models of one architecture train either one after another (``train_model``) or as one computation
(``train_stack``: parameters stacked by ``torch.func.stack_module_state``, one forward under ``torch.vmap``,
one SGD step on the stacked tensors). Both draw model k's initialisation, data order and augmentation from
model k's own seed in the same sequence, so they give the same models up to float rounding
(``tests/test_architectures.py``). The test pass likewise runs model by model or as the stack on shared test
batches. Which path runs, for training and for testing, is ``EVALUATION.batched``: ``auto`` stacks on CUDA
and, on the CPU, only where the stack measured faster (``BATCHED_ON_CPU``): there the convolutional nets are
compute-bound already, and vmap's grouped convolutions and per-model norm affines only add work.

``EVALUATION.precision = bf16`` runs every forward (training and test) under bfloat16 autocast; the weights, their
gradients and SGD stay float32. ``EVALUATION.compile`` runs the models trained one after another through
``torch.compile`` (one graph per architecture, batch shape and train/test mode, shared by the N models).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from configs.settings import Settings
from dd3d.augment import augment, augment_stacked
from models.MNIST import ARCHITECTURES

# EVALUATION.batched = auto on the CPU: (train, test) batched where the vmapped stack of 5 models beat the loop
# on the 2-core machine (benchmarks/bench.py, "evaluation_architectures"; README, Speed). CUDA batches both.
BATCHED_ON_CPU: dict[str, tuple[bool, bool]] = {
    "convnet": (False, False), "mlp": (True, True), "lenet": (True, False), "alexnet": (False, False),
    "vgg11": (False, False), "resnet18": (False, False),
}


# Images per forward of one model (training and test): a ConvNet's activations for 20 images (10 MB) stay in cache,
# where 500 at a time stream each layer's 260 MB through memory. Every norm is per sample, so chunking changes only
# float rounding. Measured on one thread: the test pass of 10 000 digits, fp32 channels-last 31.5 -> 23.4 s, bf16
# 24.6 -> 16.7 s (AlexNet, LeNet, ResNet-18 a little faster, VGG-11 level); a training step of 256 images, fp32
# 2.52 -> 1.97 s, bf16 1.51 -> 1.23 s.
CHUNK = 20


def pixel_standardiser(occupancy: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> (x - mean) / std with the pixel statistics of these binarised training digits (DC standardises
    MNIST's pixels the same way, with the gray digits' statistics)."""
    pixels = occupancy.float()
    mean, std = float(pixels.mean()), float(pixels.std())
    return lambda x: (x - mean) / std


@dataclass(frozen=True)
class EvalResult:
    accuracies: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0


@dataclass(frozen=True)
class Evaluation:
    """One EvalResult per architecture, in the order listed; the first one is the headline figure."""

    by_architecture: dict[str, EvalResult]

    @property
    def first(self) -> EvalResult:
        return next(iter(self.by_architecture.values()))

    @property
    def accuracies(self) -> list[float]:
        return self.first.accuracies

    @property
    def mean(self) -> float:
        return self.first.mean

    @property
    def std(self) -> float:
        return self.first.std


def make_models(architecture: str, seeds: Sequence[int], device: torch.device) -> list[nn.Module]:
    """Fresh models, model k initialised from ``torch.manual_seed(seeds[k])`` (the global RNG is restored)."""
    models = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for seed in seeds:
            torch.manual_seed(seed)
            models.append(ARCHITECTURES[architecture]().to(device))
    return models


def emulated_bf16_warning(device: torch.device, precision: str) -> str | None:
    """One line for a bf16 evaluation on a CPU without native bfloat16 arithmetic (oneDNN's check: AVX-512 or AMX),
    else None. There autocast's bf16 kernels are emulated: on an AVX2-only CPU a ConvNet trained ~17x slower than in
    fp32 (30 epochs on 100 digits: 480 s against 28 s)."""
    if precision != "bf16" or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return (f"EVALUATION.precision=bf16 on a CPU without native bfloat16 ({torch.backends.cpu.get_cpu_capability()}):"
            " emulated, many times slower than fp32")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward passes' arithmetic: a no-op for fp32; bfloat16 autocast for bf16 (float32 master weights)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compiled(net: nn.Module, settings: Settings) -> nn.Module:
    """``net`` through torch.compile under EVALUATION.compile (else itself): inductor fuses the memory-bound norm,
    ReLU and pooling passes between the convolutions, which eager mode runs as separate sweeps over activations
    far larger than the caches. ``dynamic=False``: a graph per batch shape, as there are only a few."""
    return torch.compile(net, dynamic=False) if settings.eval_compile else net


def _sgd(params: Sequence[torch.Tensor], lr: float, settings: Settings) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=settings.eval_momentum, weight_decay=settings.eval_weight_decay)


def train_model(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: Settings,
                generator: torch.Generator, lr: float) -> nn.Module:
    """DC's schedule: SGD with momentum and weight decay, learning rate x0.1 at half the epochs."""
    params = list(net.parameters())
    opt = _sgd(params, lr, settings)
    net.train()
    for epoch in range(settings.eval_epochs):
        if epoch == settings.eval_epochs // 2 and epoch > 0:
            lr *= 0.1
            opt = _sgd(params, lr, settings)  # a fresh optimizer, as DC: the momentum restarts
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for batch in order.split(settings.eval_batch_size):
            x, y = images[batch], labels[batch]
            if settings.augment:
                x = augment(x, generator, settings.eval_augment_strategy)
            opt.zero_grad(set_to_none=True)
            # The batch's mean loss as the sum of its CHUNKs' summed losses / B: the same gradient, in cache.
            for xc, yc in zip(x.split(CHUNK), y.split(CHUNK), strict=True):
                with autocast(x.device, settings.eval_precision):
                    loss = F.cross_entropy(net(xc), yc, reduction="sum") / len(y)
                loss.backward()
            opt.step()
    return net


class ModelStack:
    """N models of one architecture as one computation: each parameter stacked along a new first dimension."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.models, self.n = list(models), len(models)
        self.params, self.buffers = stack_module_state(self.models)  # copies: leaves that require grad
        self.template = copy.deepcopy(models[0]).to("meta")  # only its structure is used

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits [N, B, classes] of x [N, B, ...] (model k sees x[k]), or of one x [B, ...] for all (shared)."""
        def one(params: dict, buffers: dict, xk: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (xk,))

        return torch.vmap(one, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, x)

    @torch.no_grad()
    def unstack(self) -> list[nn.Module]:
        """The N models it was built from, their values replaced by the stacked (trained) ones."""
        for k, net in enumerate(self.models):
            for name, t in [*net.named_parameters(), *net.named_buffers()]:
                t.copy_({**self.params, **self.buffers}[name][k])
        return self.models


def train_stack(stack: ModelStack, images: torch.Tensor, labels: torch.Tensor, settings: Settings,
                generators: Sequence[torch.Generator], lr: float) -> ModelStack:
    """``train_model`` for all N models at once; model k reads only ``generators[k]``, in train_model's order."""
    params = list(stack.params.values())
    opt = _sgd(params, lr, settings)  # SGD, momentum and weight decay are elementwise: per model as if alone
    stack.template.train()
    for epoch in range(settings.eval_epochs):
        if epoch == settings.eval_epochs // 2 and epoch > 0:
            lr *= 0.1
            opt = _sgd(params, lr, settings)
        orders = torch.stack([torch.randperm(len(images), generator=g) for g in generators]).to(images.device)
        for batch in orders.split(settings.eval_batch_size, dim=1):
            x = images[batch]  # [N, B, C, H, W]: each model its own batch
            if settings.augment:
                x = augment_stacked(x, generators, settings.eval_augment_strategy)
            with autocast(x.device, settings.eval_precision):
                logits = stack(x)
            if logits.dtype == torch.bfloat16:  # the loss in float32, as autocast computes train_model's
                logits = logits.float()
            # The sum over models of each model's mean loss: model k's gradient is its own loss's gradient.
            per_sample = F.cross_entropy(logits.flatten(0, 1), labels[batch].flatten(), reduction="none")
            loss = per_sample.view(stack.n, -1).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return stack


@torch.no_grad()
def test_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, augment_test: bool,
                  generator: torch.Generator, batch_size: int = 500, precision: str = "fp32") -> float:
    """Accuracy of ``net`` on the test digits, augmented (augment_test) in batches of ``batch_size``."""
    # channels_last: the convolutions and pooling run ~15 % faster on the CPU in fp32; in bf16 it makes them
    # slower (the norms' bfloat16 kernels), so bf16 keeps the default layout.
    layout = torch.channels_last if precision == "fp32" else torch.contiguous_format
    net.eval().to(memory_format=layout)
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        if augment_test:  # the draws per batch of batch_size, as always; the forward goes in CHUNKs
            x = augment(x, generator)
        with autocast(x.device, precision):
            predicted = torch.cat([net(c).argmax(1) for c in x.contiguous(memory_format=layout).split(CHUNK)])
        correct += int((predicted == labels[start:start + batch_size]).sum())
    return correct / len(images)


@torch.no_grad()
def test_stack(stack: ModelStack, images: torch.Tensor, labels: torch.Tensor, augment_test: bool,
               generators: Sequence[torch.Generator], batch_size: int = 500, precision: str = "fp32") -> list[float]:
    """``test_accuracy`` of each stacked model; test digits shared by all models unless augmented per model."""
    stack.template.eval()
    correct = torch.zeros(stack.n, dtype=torch.long, device=images.device)
    # Augmentation draws follow test_accuracy's batches; the forward runs in N times smaller chunks, so the
    # N models' activations together take the memory of one model's batch.
    chunk = max(1, batch_size // stack.n)
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if augment_test:
            x = augment_stacked(x.expand(stack.n, *x.shape), generators)
        for c in range(0, len(y), chunk):
            with autocast(x.device, precision):
                logits = stack(x[:, c:c + chunk]) if augment_test else stack(x[c:c + chunk], shared=True)
            correct += (logits.argmax(-1) == y[c:c + chunk]).sum(1)
    return (correct.double() / len(images)).tolist()


def batched_paths(architecture: str, settings: Settings, device: torch.device) -> tuple[bool, bool]:
    """Whether training and the test pass run as one stack (else one model after another)."""
    if settings.eval_batched != "auto":
        return (settings.eval_batched == "true",) * 2
    return (True, True) if device.type == "cuda" else BATCHED_ON_CPU[architecture]


def evaluate_architecture(architecture: str, images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                          test_labels: torch.Tensor, settings: Settings, seed: int) -> EvalResult:
    """Train ``settings.eval_models`` fresh models of one architecture on (images, labels); test each.

    Model k's seed is ``seed * 1000 + k`` whatever the architecture, so every architecture sees the same data
    orders and augmentation draws (the ConvNet's figures are those of the single-architecture code before).
    """
    seeds = [seed * 1000 + k for k in range(settings.eval_models)]
    lr = settings.eval_lr(architecture)
    nets = make_models(architecture, seeds, images.device)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    batched_train, batched_test = batched_paths(architecture, settings, images.device)
    if batched_train:
        nets = train_stack(ModelStack(nets), images, labels, settings, generators, lr).unstack()
    else:
        for net, g in zip(nets, generators, strict=True):
            train_model(compiled(net, settings), images, labels, settings, g, lr)  # trains net's own parameters
    # Each generator goes on from where its model's training left it, whichever path trained it.
    if batched_test:
        return EvalResult(test_stack(ModelStack(nets), test_images, test_labels, settings.augment_test, generators,
                                     precision=settings.eval_precision))
    return EvalResult([test_accuracy(compiled(net, settings), test_images, test_labels, settings.augment_test, g,
                                     precision=settings.eval_precision)
                       for net, g in zip(nets, generators, strict=True)])


def evaluate_set(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                 test_labels: torch.Tensor, settings: Settings, seed: int) -> Evaluation:
    """Every architecture of ``settings.eval_architectures``, in order (``evaluate_architecture``).

    Runs on its own random streams (seeded from ``seed``), so evaluating never changes the distillation.
    """
    return Evaluation({arch: evaluate_architecture(arch, images, labels, test_images, test_labels, settings, seed)
                       for arch in settings.eval_architectures})
