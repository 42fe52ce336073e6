"""How informative are the sparse ConvNet's gradients? Cosine to the dense ConvNet's, per layer. Prints JSON.

    .venv/bin/python experiments/sparse_gradients.py [--trials 3] [--batch 32]

For random networks (the distillation draws a fresh one every iteration) and real digit batches of a few
classes, the gradient of the cross-entropy with respect to each weight tensor is computed in DC's dense ConvNet
on the splatted grid and in ``MEConvNet`` (same weights) on MinkowskiEngine voxels of the same splat, for every
``absent_voxels`` mode and halo. Gradient matching compares such gradients, so a sparse network whose gradients
point where the dense network's do carries the same signal to the points. Full halo: cosine 1 (the same net).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.settings import load_settings  # noqa: E402
from dd3d.mnist import load_mnist  # noqa: E402
from dd3d.pointsets import RealClouds  # noqa: E402
from models.MEConv import MEConvNet, create_dense_splat, create_splat_halo_batch  # noqa: E402
from models.MNIST import ConvNet  # noqa: E402

HALOS = (0, 1, 2)
CLASSES = (0, 3, 7)


def weight_gradients(net: torch.nn.Module, x: object, target: torch.Tensor) -> list[torch.Tensor]:
    grads = torch.autograd.grad(F.cross_entropy(net(x), target), list(net.parameters()))
    return [g for g in grads if g.dim() > 1]  # the tensors the layer-wise distances compare


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3, help="random networks")
    p.add_argument("--batch", type=int, default=32, help="real digits per class")
    args = p.parse_args()
    settings = load_settings([])
    data = load_mnist(settings.dataset_dir)
    real = RealClouds(data.train_images, data.train_labels, settings.threshold, settings.num_points)
    generator = torch.Generator().manual_seed(0)
    cosines: dict[str, list[list[float]]] = {}
    voxels: dict[str, list[int]] = {}
    for trial in range(args.trials):
        torch.manual_seed(trial)
        dense = ConvNet()
        for c in CLASSES:
            points = real.sample(c, args.batch, generator) + torch.tensor([0.0, 0.5, 0.5])  # cell centres
            target = torch.full((args.batch,), c)
            reference = weight_gradients(dense, create_dense_splat(points), target)
            for absent in ("skip", "background"):
                sparse = MEConvNet(absent=absent)
                sparse.load_state_dict(dense.state_dict())
                for halo in HALOS:
                    x = create_splat_halo_batch(points, halo)
                    got = weight_gradients(sparse, x, target)
                    key = f"{absent}/halo{halo}"
                    cosines.setdefault(key, []).append([float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))
                                                        for a, b in zip(got, reference, strict=True)])
                    voxels.setdefault(key, []).append(len(x.features))
    layers = ["conv1", "conv2", "conv3", "classifier"]
    out = {"batch_per_class": args.batch, "networks": args.trials, "classes": list(CLASSES),
           "dense_voxels_per_digit": 32 * 32, "modes": {}}
    for key, rows in cosines.items():
        per_layer = [statistics.fmean(col) for col in zip(*rows, strict=True)]
        out["modes"][key] = {"cosine_to_dense": dict(zip(layers, [round(v, 3) for v in per_layer], strict=True)),
                             "voxels_per_digit": round(statistics.fmean(voxels[key]) / args.batch, 1)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
