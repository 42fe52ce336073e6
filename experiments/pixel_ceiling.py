"""Is the ten-per-class ConvNet gap the point clouds' or the method's? DM-inner on free pixels. Prints JSON.

    .venv/bin/python experiments/pixel_ceiling.py --out experiments/pixel_ceiling/free [--clamp] [--iterations 100]

The control for ``distribution/10-dm-inner`` (the best ten-per-class ConvNet set, 96.97 %): the same method and
settings (herding's digits as the start, DM's distance of mean embeddings in a fresh DC ConvNet each iteration, three
matches per iteration with 25 SGD steps of the network on the set between them, 256 real digits per class, one of
DSA's shift / scale / rotate drawn per class and applied to both sides), but the synthetic set is 10 x 10 free gray
images instead of clouds of 250 points: what pixel-space DM reaches on these binarised digits. The real side is the
splat of the same capped real clouds the point method matches (the same images); a draw's transform warps both
sides' images (DSA's bilinear resampling) where the point method moves points. The pixels move by DM's own recipe,
SGD with momentum 0.5 and learning rate 1 on standardised pixels (``--lr`` in [0, 1] units; default std^2, the
same step); ``--clamp`` keeps them in [0, 1], the splat images' range. The set is evaluated by the default protocol
(``evaluate_set``, the ConvNet, DC's augmentation, clean test digits, the same evaluation seed as a run's
iteration), and written with its checkpoint to ``--out``; a run continues from its checkpoint there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.settings import load_settings  # noqa: E402
from dd3d.augment import warp_images  # noqa: E402
from dd3d.distill import CHUNK, NUM_CLASSES  # noqa: E402
from dd3d.evaluate import evaluate_set  # noqa: E402
from dd3d.mnist import load_mnist  # noqa: E402
from dd3d.pointsets import (  # noqa: E402
    CELL_CENTRE,
    IMAGE_SIZE,
    MATCH_RANGES,
    RealClouds,
    binarize,
    occupancy_to_images,
    random_planar_transform,
    splat_images,
)
from distillation_loss import embedding_distance  # noqa: E402
from models.MNIST import ConvNet  # noqa: E402


def warp_theta(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """grid_sample's map [1, 2, 3] (output -> input, (x, y) = (col, row) in [-1, 1]) of the point transform
    p' = A (p - c) + c + t on (row, col) about the image centre: the image of the moved points."""
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    inverse = torch.linalg.inv(swap @ a @ swap)
    shift = -inverse @ (swap @ t) / (IMAGE_SIZE / 2)  # a pixel is 2 / 28 of grid_sample's [-1, 1]
    return torch.cat([inverse, shift.unsqueeze(1)], dim=1).unsqueeze(0)


class PixelDistiller:
    """Free images [10 * K, 1, 28, 28] in [0, 1] units moved by DM-inner (``distribution/10-dm-inner``'s loop)."""

    def __init__(self, start: torch.Tensor, real: RealClouds, args: argparse.Namespace, mean: float, std: float,
                 generator: torch.Generator) -> None:
        self.images = start.clone().requires_grad_()
        self.real, self.args, self.generator = real, args, generator
        self.mean, self.std = mean, std
        self.labels = torch.arange(NUM_CLASSES).repeat_interleave(args.per_class)
        self.optimizer = torch.optim.SGD([self.images], lr=args.lr or std ** 2, momentum=0.5)
        self.net = ConvNet()

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def fresh_network(self) -> None:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = ConvNet()

    def match_and_update(self) -> float:
        k, total = self.args.per_class, 0.0
        self.optimizer.zero_grad()
        for c in range(NUM_CLASSES):
            points = self.real.sample(c, self.args.batch_size, self.generator) + torch.tensor(CELL_CENTRE)
            real, syn = splat_images(points), self.images[c * k:(c + 1) * k]
            theta = warp_theta(*random_planar_transform(self.generator, MATCH_RANGES["dsa"]))
            real, syn = warp_images(real, theta.expand(len(real), 2, 3)), warp_images(syn, theta.expand(len(syn), 2, 3))
            with torch.no_grad():
                target = torch.cat([self.net.embed(self.standardised(part)) for part in real.split(CHUNK)])
            distance = embedding_distance(self.net.embed(self.standardised(syn)), target)
            distance.backward()
            total += float(distance.detach())
        self.optimizer.step()
        if self.args.clamp:
            with torch.no_grad():
                self.images.clamp_(0, 1)
        return total

    def train_network(self) -> None:
        opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        inputs = self.standardised(self.images.detach())
        for _ in range(self.args.inner_loop):
            opt.zero_grad()
            F.cross_entropy(self.net(inputs), self.labels).backward()
            opt.step()

    def step(self) -> float:
        self.fresh_network()
        losses = []
        for ol in range(self.args.outer_loop):
            losses.append(self.match_and_update())
            if ol < self.args.outer_loop - 1:
                self.train_network()
        return sum(losses) / len(losses)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt and results.json")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256, help="real digits per class and match")
    p.add_argument("--outer-loop", type=int, default=3)
    p.add_argument("--inner-loop", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.0, help="pixels' SGD step in [0, 1] units (0: DM's, std^2)")
    p.add_argument("--clamp", action="store_true", help="keep the pixels in [0, 1]")
    p.add_argument("--eval-models", type=int, default=5)
    p.add_argument("--eval-epochs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    settings = load_settings(["--architectures", "convnet", "--eval-models", str(args.eval_models),
                              "--eval-epochs", str(args.eval_epochs), "--seed", str(args.seed),
                              "--set", "EVALUATION.compile=true"])
    data = load_mnist(settings.dataset_dir)
    torch.manual_seed(args.seed)
    real = RealClouds(data.train_images, data.train_labels, settings.threshold, settings.num_points)
    generator = torch.Generator().manual_seed(args.seed)
    start = splat_images(real.digits("herding", args.per_class, generator) + torch.tensor(CELL_CENTRE))
    pixels = real.occupancy.float()
    distiller = PixelDistiller(start, real, args, float(pixels.mean()), float(pixels.std()), generator)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint, first, seconds = args.out / "checkpoint.pt", 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint)
        with torch.no_grad():
            distiller.images.copy_(state["images"])
        distiller.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        first, seconds = state["iteration"], state["seconds"]
    for it in range(first, args.iterations):
        begin = time.perf_counter()
        loss = distiller.step()
        seconds += time.perf_counter() - begin
        print(f"iteration {it + 1}: loss {loss:.4f}, {seconds / (it + 1):.1f} s/it", flush=True)
        if (it + 1) % 10 == 0 or it + 1 == args.iterations:
            torch.save({"images": distiller.images.detach(), "optimizer": distiller.optimizer.state_dict(),
                        "generator": generator.get_state(), "iteration": it + 1, "seconds": seconds},
                       checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)

    n_test = settings.test_size or len(data.test_labels)
    test_images = occupancy_to_images(binarize(data.test_images[:n_test], settings.threshold))
    images = distiller.images.detach()
    result = evaluate_set(images, distiller.labels, test_images, data.test_labels[:n_test], settings,
                          seed=settings.seed * 100_003 + args.iterations).first
    report = {"method": "DM-inner on free pixels (distribution/10-dm-inner's settings)",
              "command": "python experiments/pixel_ceiling.py " + " ".join(sys.argv[1:]),
              "iterations": args.iterations, "per_class": args.per_class, "clamp": args.clamp,
              "lr": distiller.optimizer.param_groups[0]["lr"],
              "seconds_per_iteration": seconds / max(args.iterations, 1),
              "pixel_range": [float(images.min()), float(images.max())],
              "evaluation": f"{args.eval_models} x {args.eval_epochs} ep, convnet, {settings.eval_precision}",
              "convnet_accuracies": result.accuracies, "convnet_mean": result.mean, "convnet_std": result.std}
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
