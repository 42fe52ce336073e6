"""One outer iteration of gradient matching, and the state it updates (the synthetic coordinates).
With DISTILLATION.objective = distribution the same loop matches mean embeddings instead (DM).

Faithful to the seed: one distillation network, initialised once and never trained; for every class a
random real batch gives the target gradients (constants) and the class's synthetic clouds give
gradients with ``create_graph=True``; the distances are summed over classes and back-propagated to the
coordinates, which SGD with momentum moves. Points live on the grid [0, 27] on the depth-0 plane.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from configs.settings import PoolMember, Settings, parse_network_pool
from dd3d.pointsets import (
    CELL_CENTRE,
    IMAGE_SIZE,
    MATCH_RANGES,
    SPLAT_HIGH,
    SPLAT_LOW,
    RealClouds,
    constrain_,
    init_uniform,
    random_match_augment,
    random_planar_transforms,
    splat_images,
    spread_padding,
    transform_points,
)
from distillation_loss import embedding_distance, gaussian_mmd, layerwise_embedding_distance, match_loss

NUM_CLASSES = 10
# DISTILLATION.init -> the baseline whose digits it starts from (the noise init has none).
INIT_DIGITS = {"real": "random-real", "mean": "class-mean", "herding": "herding", "kmeans": "kmeans"}
# The real batch's side of a match and an inner-loop step's batch run in chunks of this many clouds on the CPU.
# Every network here normalises and pools per sample (instance norm, no batch norm), so a batch's mean-loss gradient
# is the size-weighted sum of its chunks' and its mean embedding the mean of theirs (equal up to rounding), while a
# chunk's activations stay in cache where 256 clouds' stream through memory: measured one thread, 256 -> 64 digits
# took a class's real gradients 0.35 -> 0.28 s (ME path) and 0.74 -> 0.62 s (PyTorch path). A GPU wants the whole
# batch in one pass.
CHUNK = 64


class DivergedError(RuntimeError):
    """The matching loss or the coordinate gradient is NaN/Inf; the points were left unchanged."""


@dataclass(frozen=True)
class StepStats:
    loss: float  # summed over classes
    per_class: list[float]
    grad_abs_mean: float  # mean |d loss / d coordinate|
    displacement: float  # mean distance a point moved in this step
    lr: float  # the coordinates' learning rate at this step's first update (MODEL.dist_lr_schedule)


def build_network(settings: Settings, device: torch.device, member: PoolMember | None = None
                  ) -> tuple[nn.Module, Callable[[torch.Tensor], Any]]:
    """The distillation network and the function that turns points [B, N, 3] into its input.

    ``network = convnet`` is DC's ConvNet on the dense splatted grid, ``me-convnet`` the same ConvNet on
    MinkowskiEngine voxels of the splat (plus ``halo``); otherwise the seed's network of the chosen path, on
    the features-as-coordinates input or the splat. ``member`` (a network pool's) sets the ConvNets' width,
    depth and norm; without it they are 128 wide, ``net_depth`` deep, instance-normalised.

    The MinkowskiEngine network is imported only here and only in its mode, so ``--pytorch`` runs
    without MinkowskiEngine installed (MinkowskiUnavailable otherwise).
    """
    channels = 1 if settings.splat else 3
    shape = member or PoolMember(128, settings.net_depth, "instance")
    if shape.family != "convnet":  # a pool's other architectures: dense, on the splat image (needs splat)
        from models.MEConv import create_dense_splat
        from models.MNIST import ARCHITECTURES

        return ARCHITECTURES[shape.family]().to(device), create_dense_splat
    if settings.network == "convnet":
        from models.MEConv import create_dense_splat
        from models.MNIST import ConvNet

        net = ConvNet(channel=channels, width=shape.width, depth=shape.depth, norm=shape.norm)
        return net.to(device), create_dense_splat
    if settings.network == "me-convnet":
        from models.MEConv import MEConvNet, create_splat_halo_batch

        net = MEConvNet(channel=channels, width=shape.width, depth=shape.depth, absent=settings.absent_voxels,
                        norm=shape.norm)
        return net.to(device), partial(create_splat_halo_batch, halo=settings.halo)
    if settings.pytorch:
        from models.MEConv import MEPytorch, create_dense_batch, create_dense_splat

        net = MEPytorch(in_channel=channels, depth=settings.net_depth)
        return net.to(device), create_dense_splat if settings.splat else create_dense_batch
    from models.MEConv import MEConvExp, create_input_batch, create_splat_input_batch

    net = MEConvExp(in_channel=channels, depth=settings.net_depth)
    return net.to(device), create_splat_input_batch if settings.splat else create_input_batch


class Distiller:
    """Synthetic point sets [10 * K, N, 3] and the optimiser that moves them."""

    def __init__(self, net: nn.Module, to_input: Callable[[torch.Tensor], Any], real: RealClouds,
                 settings: Settings, device: torch.device, generator: torch.Generator,
                 start: torch.Tensor | None = None) -> None:
        self.to_input, self.real = to_input, real
        self.pool = parse_network_pool(settings.network_pool)
        self.member: PoolMember | None = None  # the pool's network now matched in (None: no pool)
        self.settings, self.device, self.generator = settings, device, generator
        self.chunk = CHUNK if device.type == "cpu" else 1 << 30
        k = settings.cad_per_class
        # Splatting keeps points within half a cell of the border so no occupancy falls off the grid, and
        # treats real pixels as their cell centres (the binary projection is unchanged either way).
        self.bounds = (SPLAT_LOW, SPLAT_HIGH) if settings.splat else (0.0, IMAGE_SIZE - 1.0)
        self.real_offset = torch.tensor(CELL_CENTRE if settings.splat else (0.0, 0.0, 0.0), device=device)
        if start is not None:  # a saved set (DISTILLATION.init = its path), fine-tuned
            points = start.detach().clone().float().to(device)
        elif settings.init == "noise":
            points = init_uniform(NUM_CLASSES * k, settings.num_points, generator).to(device)
        else:
            points = real.digits(INIT_DIGITS[settings.init], k, generator).to(device) + self.real_offset
            points = spread_padding(points, settings.init_spread, generator)  # reads the generator only if > 0
        constrain_(points, *self.bounds)
        self.points = points.requires_grad_()
        self.labels = torch.arange(NUM_CLASSES, device=device).repeat_interleave(k)
        self.optimizer = (torch.optim.Adam([self.points], lr=settings.dist_lr) if settings.dist_optimizer == "adam"
                          else torch.optim.SGD([self.points], lr=settings.dist_lr, momentum=settings.dist_momentum))
        self.use_network(net)

    def use_network(self, net: nn.Module, to_input: Callable[[torch.Tensor], Any] | None = None) -> None:
        """Match in ``net`` from now on (its trainable parameters; the classifier's alone for ``head``), fed by
        ``to_input`` when given (a pool's members may take different inputs)."""
        self.net = net
        self.to_input = to_input or self.to_input
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.matched = list(net.classifier.parameters()) if self.settings.matched_layers == "head" else self.params

    def class_gradients(self, points: torch.Tensor, c: int, create_graph: bool) -> tuple[torch.Tensor, ...]:
        """Gradients of the network's cross-entropy on ``points`` (all of class ``c``) w.r.t. the matched
        parameters."""
        logits = self.net(self.to_input(points))
        target = torch.full((len(points),), c, dtype=torch.long, device=self.device)
        return torch.autograd.grad(F.cross_entropy(logits, target), self.matched, create_graph=create_graph)

    def class_distance(self, real: torch.Tensor, syn: torch.Tensor, c: int) -> torch.Tensor:
        """How far class ``c``'s synthetic clouds are from its real batch, under DISTILLATION.objective."""
        if self.settings.objective == "distribution":
            with torch.no_grad():  # the real side is a constant target
                per_chunk = [self.embeddings(self.to_input(part)) for part in real.split(self.chunk)]
                layers_real = [torch.cat(parts) for parts in zip(*per_chunk, strict=True)]
            layers_syn = self.embeddings(self.to_input(syn))
            distance = (gaussian_mmd(layers_syn[-1], layers_real[-1]) if self.settings.dm_kernel == "gaussian"
                        else layerwise_embedding_distance(layers_syn, layers_real))
            if self.settings.class_ce:
                distance = distance + self.settings.class_ce * self.class_term(layers_syn[-1], layers_real[-1], c)
            if self.settings.pixel_match:
                distance = distance + self.settings.pixel_match * self.pixel_term(syn, real)
            return distance
        gw_real = self.real_gradients(real, c)
        gw_syn = self.class_gradients(syn, c, create_graph=True)
        return match_loss(gw_syn, gw_real, self.settings.dist_opt)

    def pixel_term(self, syn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Herding's criterion beside the network's: the squared distance between the class's mean splat image of
        the synthetic clouds and of the real batch (DM's distance with the pixels as the embedding). Herding's
        digits keep their class's mean image; DM's network embeddings alone let the set drift off it, which
        networks that read pixels (the MLP) feel."""
        with torch.no_grad():
            target = splat_images(real).flatten(1)
        return embedding_distance(splat_images(syn).flatten(1), target)

    def embeddings(self, x: Any) -> list[torch.Tensor]:
        """What DM matches of input ``x``: the last embedding alone, or every block's (DISTILLATION.dm_layers)."""
        return self.net.embed_layers(x) if self.settings.dm_layers == "all" else [self.net.embed(x)]

    def real_gradients(self, real: torch.Tensor, c: int) -> list[torch.Tensor]:
        """``class_gradients`` of a real batch (constants), computed ``chunk`` digits at a time."""
        total = [torch.zeros_like(p) for p in self.matched]
        for part in real.split(self.chunk):  # one chunk: 0 + g * 1.0, the one-pass gradient exactly
            for t, g in zip(total, self.class_gradients(part, c, create_graph=False), strict=True):
                t.add_(g, alpha=len(part) / len(real))
        return total

    def class_term(self, emb_syn: torch.Tensor, emb_real: torch.Tensor, c: int) -> torch.Tensor:
        """IDM's class-aware term: the classifier's cross-entropy on the synthetic embeddings of class ``c``,
        weighted by its accuracy on the real ones (a constant). Every ConvNet's logits are ``classifier(embed)``
        (the sparse one's forward is the same linear map over its dense embedding), so no second pass is needed."""
        with torch.no_grad():
            weight = (self.net.classifier(emb_real).argmax(1) == c).float().mean()
        target = torch.full((len(emb_syn),), c, dtype=torch.long, device=emb_syn.device)
        return weight * F.cross_entropy(self.net.classifier(emb_syn), target)

    def coordinate_lr(self, update: int) -> float:
        """The coordinates' learning rate at their ``update``-th step (0-based) under MODEL.dist_lr_schedule."""
        s = self.settings
        if s.dist_lr_schedule == "constant":
            return s.dist_lr
        total = s.total_iterations * s.outer_loop
        return s.dist_lr * 0.5 * (1 + math.cos(math.pi * min(update, total) / total))

    def match_and_update(self, update: int = 0) -> tuple[list[float], float]:
        """One gradient match over all classes and the coordinates' ``update``-th optimiser step."""
        s, k = self.settings, self.settings.cad_per_class
        for group in self.optimizer.param_groups:
            group["lr"] = self.coordinate_lr(update)
        self.optimizer.zero_grad(set_to_none=False)
        per_class = []
        for c in range(NUM_CLASSES):
            real = self.real.sample(c, s.batch_size, self.generator).to(self.device) + self.real_offset
            syn = self.points[c * k:(c + 1) * k]
            if s.augment_match:  # one draw per class, applied to both sides (DSA)
                augment = random_match_augment(self.generator, s.augment_kinds.split(","),
                                               MATCH_RANGES[s.augment_ranges])
                real, syn = augment(real), augment(syn)
            distance = self.class_distance(real, syn, c)
            # Backward per class: the same summed gradient, with one class's graph alive at a time.
            distance.backward()
            per_class.append(float(distance.detach()))
        grad_abs_mean = float(self.points.grad.abs().mean())
        if not (torch.isfinite(torch.tensor(per_class)).all() and torch.isfinite(self.points.grad).all()):
            self.optimizer.zero_grad(set_to_none=False)
            raise DivergedError(f"matching loss or coordinate gradient is not finite (loss per class: {per_class})")
        self.optimizer.step()
        constrain_(self.points, *self.bounds)
        return per_class, grad_abs_mean

    def reinit_network(self) -> None:
        """DC's protocol: a fresh random network, drawn from the batch sampler's stream (so resume is exact).

        With a pool, the member is drawn from the same seed as the weights: the batch sampler's stream, and so
        the real batches, stay those of a run without a pool.
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            if self.pool:
                self.member = self.pool[int(torch.randint(len(self.pool), (1,)))]
                self.use_network(*build_network(self.settings, self.device, self.member))
            else:
                self.net.load_state_dict(build_network(self.settings, self.device)[0].state_dict())

    def train_network(self, steps: int) -> None:
        """The inner loop: plain SGD steps of the network, points fixed, on the synthetic set (DC, full batch) or
        on random real digits (``inner_data = real``: as many per class and step as the synthetic set holds, so a
        step costs what DC's does). A step's batch runs ``chunk`` clouds at a time, as the real side of a match."""
        s = self.settings
        opt = torch.optim.SGD(self.params, lr=s.net_lr)
        if s.inner_data == "synthetic" and not s.inner_augment:  # the points stay put during the loop
            fixed = self.chunked_inputs(self.points.detach(), self.labels)
        for _ in range(steps):
            if s.inner_data == "real":
                batches = self.chunked_inputs(*self.real_batch(s.cad_per_class))
            elif s.inner_augment:
                batches = self.chunked_inputs(self.augmented(self.points.detach()), self.labels)
            else:
                batches = fixed
            opt.zero_grad(set_to_none=True)
            for inputs, labels, share in batches:  # the batch's mean loss: each chunk's weighted by its share
                (F.cross_entropy(self.net(inputs), labels) * share).backward()
            opt.step()

    def chunked_inputs(self, points: torch.Tensor, labels: torch.Tensor) -> list[tuple[Any, torch.Tensor, float]]:
        """Network inputs of ``chunk`` clouds at a time, with their labels and their share of the batch."""
        return [(self.to_input(p), y, len(p) / len(points))
                for p, y in zip(points.split(self.chunk), labels.split(self.chunk), strict=True)]

    def real_batch(self, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Points and labels of ``per_class`` random real digits of every class (augmented under
        ``inner_augment``)."""
        points = self.real.per_class(per_class, self.generator).to(self.device) + self.real_offset
        labels = torch.arange(NUM_CLASSES, device=self.device).repeat_interleave(per_class)
        return self.augmented(points) if self.settings.inner_augment else points, labels

    def augmented(self, points: torch.Tensor) -> torch.Tensor:
        """Clouds [B, N, 3], each moved by its own draw of the match's shift / scale / rotate (the inner loop's
        DSA augmentation; as in the match, points moved off the grid fall out of the input)."""
        a, t = random_planar_transforms(len(points), self.generator, MATCH_RANGES[self.settings.augment_ranges])
        return transform_points(points, a.to(self.device), t.to(self.device))

    def step(self, iteration: int = 0) -> StepStats:
        """One outer iteration, the ``iteration``-th (0-based; the learning-rate schedule's clock): [fresh
        network,] then outer_loop x (match and update [, train network])."""
        s = self.settings
        first_update = iteration * s.outer_loop
        before = self.points.detach().clone()
        if s.reinit_net:
            self.reinit_network()
        losses, grads = [], []
        for ol in range(s.outer_loop):
            per_class, grad_abs_mean = self.match_and_update(first_update + ol)
            losses.append(per_class)
            grads.append(grad_abs_mean)
            if ol < s.outer_loop - 1 and s.inner_loop:
                self.train_network(s.inner_loop)
        per_class = [sum(v) / len(v) for v in zip(*losses, strict=True)]
        displacement = float((self.points.detach() - before).norm(dim=-1).mean())
        return StepStats(sum(per_class), per_class, sum(grads) / len(grads), displacement,
                         self.coordinate_lr(first_update))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: points, optimiser, network and the batch sampler's RNG."""
        return {"points": self.points.detach().cpu().clone(), "labels": self.labels.cpu().clone(),
                "optimizer": self.optimizer.state_dict(), "network": self.net.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["points"].shape) != tuple(self.points.shape):
            raise ValueError(f"checkpoint holds points {tuple(state['points'].shape)}, "
                             f"settings need {tuple(self.points.shape)}")
        with torch.no_grad():
            self.points.copy_(state["points"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        # A pool's network is drawn afresh at the start of every step (reinit_net is required), from the sampler
        # stream restored below: the saved one, of whichever member, is never matched in again.
        if not self.pool:
            self.net.load_state_dict(state["network"])
        self.generator.set_state(state["generator"])
