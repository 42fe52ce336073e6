"""dd3d: distill MNIST into a few sparse 3D point clouds per class by gradient matching.

settings -> data -> point sets -> network -> gradient match -> coordinate update -> evaluation -> outputs
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from configs.settings import SettingsError, load_settings
from dd3d.distill import Distiller, build_network
from dd3d.evaluate import evaluate_set
from dd3d.mnist import DataError, load_mnist
from dd3d.outputs import (
    LOG,
    create_run_dir,
    digit_grid,
    export_clouds,
    make_logger,
    save_checkpoint,
    save_digit_grid,
    setup_console_logging,
    write_json,
)
from dd3d.pointsets import RealClouds, binarize, occupancy_to_images, points_to_images
from dd3d.runtime import resolve_device, seed_everything
from models.minkowski import MinkowskiUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    setup_console_logging()
    # Everything that can fail on bad input happens before the run folder exists.
    try:
        settings = load_settings(argv)
        device = resolve_device(settings.device)
        data = load_mnist(settings.dataset_dir)
        seed_everything(settings.seed)
        net, to_input = build_network(settings, device)
    except (SettingsError, DataError, MinkowskiUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # Data -> point sets: real digits as capped clouds; test digits binarised the same way.
    real = RealClouds(data.train_images, data.train_labels, settings.threshold, settings.num_points)
    n_test = settings.test_size or len(data.test_labels)
    test_images = occupancy_to_images(binarize(data.test_images[:n_test], settings.threshold)).to(device)
    test_labels = data.test_labels[:n_test].to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    distiller = Distiller(net, to_input, real, settings, device, generator)

    run_dir = create_run_dir(settings.logging_parent, settings.experiment_name)
    logger = make_logger(run_dir, settings.log)
    logger.text("settings", "```\n" + json.dumps(settings.to_dict(), indent=2) + "\n```")
    LOG.info("dd3d: %s path, depth %d, %s distance, %d x %d clouds of %d points, %d iterations on %s",
             settings.mode, settings.net_depth, settings.dist_opt, 10, settings.cad_per_class,
             settings.num_points, settings.total_iterations, device)
    results = {"settings": settings.to_dict(), "mode": settings.mode, "evaluations": [], "timings": {}}
    step_seconds, eval_seconds = [], 0.0

    def evaluate(iteration: int) -> float:
        images = points_to_images(distiller.points)
        result = evaluate_set(images, distiller.labels, test_images, test_labels, settings,
                              seed=settings.seed * 100_003 + iteration)
        save_digit_grid(run_dir / f"digits_it{iteration:05d}.png", grid := digit_grid(images, settings.cad_per_class))
        logger.image("Evaluation/digits", grid, iteration)
        logger.scalars("Evaluation/accuracy", {"mean": result.mean, "std": result.std}, iteration)
        results["evaluations"].append({"iteration": iteration, "accuracies": result.accuracies,
                                       "mean": result.mean, "std": result.std})
        LOG.info("iteration %d: test accuracy %.2f%% +- %.2f%% over %d models", iteration,
                 100 * result.mean, 100 * result.std, settings.eval_models)
        return result.mean

    def export(iteration: int) -> None:
        export_clouds(run_dir / "ply", distiller.points, distiller.labels, iteration)
        logger.clouds("Synthetic/clouds", distiller.points, distiller.labels, iteration)
        save_checkpoint(run_dir / "synthetic.pt", {**distiller.state_dict(), "iteration": iteration,
                                                   "settings": settings.to_dict()})

    # The outer loop: at iteration i the set has had i coordinate updates.
    total, last_acc = settings.total_iterations, float("nan")
    with logging_redirect_tqdm(loggers=[LOG]):
        bar = tqdm(range(total + 1), desc="distilling", unit="it", disable=None)
        for iteration in bar:
            if iteration in settings.eval_iterations:
                start = time.perf_counter()
                last_acc = evaluate(iteration)
                eval_seconds += time.perf_counter() - start
            if iteration == total or (settings.save_cad_every and iteration % settings.save_cad_every == 0):
                export(iteration)
            if iteration == total:
                break
            start = time.perf_counter()
            stats = distiller.step()
            step_seconds.append(time.perf_counter() - start)
            logger.scalar("Distillation/matched_loss", stats.loss, iteration)
            logger.scalars("Distillation/matched_loss_class", {str(c): v for c, v in enumerate(stats.per_class)},
                           iteration)
            logger.scalar("Distillation/point_grad_abs_mean", stats.grad_abs_mean, iteration)
            logger.scalar("Distillation/point_displacement", stats.displacement, iteration)
            bar.set_postfix(loss=f"{stats.loss:.4g}", acc=f"{100 * last_acc:.1f}%")

    results["timings"] = {
        "seconds_per_iteration": sum(step_seconds) / max(len(step_seconds), 1),
        "distillation_seconds": sum(step_seconds),
        "evaluation_seconds": eval_seconds,
    }
    results["final_accuracy"] = {k: results["evaluations"][-1][k] for k in ("mean", "std")}
    write_json(run_dir / "results.json", results)
    logger.close()
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
