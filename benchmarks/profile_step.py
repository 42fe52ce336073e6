"""Where one outer iteration spends its time: torch.profiler's top operators for one path.

    .venv/bin/python benchmarks/profile_step.py [--config configs/default.ini] [--pytorch] [--rows 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configs.settings import REPO_ROOT, load_settings  # noqa: E402
from dd3d.distill import Distiller, build_network  # noqa: E402
from dd3d.mnist import load_mnist  # noqa: E402
from dd3d.pointsets import RealClouds  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO_ROOT / "configs" / "seed.ini"))
    p.add_argument("--pytorch", action="store_true")
    p.add_argument("--rows", type=int, default=15)
    args = p.parse_args()
    path_flag = ["--pytorch"] if args.pytorch else []
    settings = load_settings(["--config", args.config, *path_flag, "--device", "cpu"])
    data = load_mnist(settings.dataset_dir)
    torch.manual_seed(0)
    net, to_input = build_network(settings, torch.device("cpu"))
    real = RealClouds(data.train_images, data.train_labels, settings.threshold, settings.num_points)
    distiller = Distiller(net, to_input, real, settings, torch.device("cpu"), torch.Generator().manual_seed(0))
    distiller.step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        distiller.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
