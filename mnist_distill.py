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

from configs.settings import Settings, SettingsError, check_resumable, parse_command_line
from dd3d.distill import Distiller, DivergedError, build_network
from dd3d.evaluate import emulated_bf16_warning, evaluate_set, pixel_standardiser
from dd3d.mnist import DataError, load_mnist
from dd3d.outputs import (
    LOG,
    CheckpointError,
    OutputError,
    RunRecord,
    check_creatable_dir,
    check_set_fits,
    create_run_dir,
    load_checkpoint,
    make_logger,
    restore_checkpoint,
    setup_console_logging,
)
from dd3d.pointsets import CELL_CENTRE, RealClouds, binarize, occupancy_to_images, project_points
from dd3d.runtime import StopRequest, release_free_memory, resolve_device, seed_everything
from models.minkowski import MinkowskiUnavailable

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_WRITE_FAILED, EXIT_INTERRUPTED = 2, 3, 4, 130


def baseline_set(name: str, real: RealClouds, settings: Settings) -> torch.Tensor:
    """Points [10 * K, N, 3] of a baseline made of real training digits (seeded by --seed)."""
    points = real.digits(name, settings.cad_per_class, torch.Generator().manual_seed(settings.seed))
    # At their cell centres the splat projection draws the pixels exactly (the binary projection is the same).
    return points + torch.tensor(CELL_CENTRE) if settings.eval_projection == "splat" else points


def start_set(settings: Settings) -> torch.Tensor | None:
    """The saved set a distillation starts from (DISTILLATION.init = its path), checked to fit the settings."""
    if settings.init_set is None:
        return None
    state = load_checkpoint(settings.init_set, for_resume=False)
    check_set_fits(state, settings.init_set, settings.cad_per_class, settings.num_points)
    return state["points"]


def one_line(error: Exception) -> str:
    # Messages are one line by design; a path typed with a newline in it must not break that.
    return str(error).replace("\n", "\\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 2 bad input (nothing written), 3 diverged, 4 a write failed, 130 interrupted."""
    try:
        return run(argv)
    except OutputError as e:  # mid-run, e.g. disk full: every file is written atomically, so none is half-written
        print(f"error: {one_line(e)}; the files written before it, the last checkpoint included, are intact",
              file=sys.stderr)
        return EXIT_WRITE_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the run folder exists
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(argv: Sequence[str] | None = None) -> int:
    setup_console_logging()
    # Everything that can fail on bad input happens before the run folder exists, and creating it is the last
    # step of this block: a refused command leaves nothing behind.
    try:
        # With --resume the checkpoint is read once: its settings become the base of the new ones.
        resumed: dict[str, dict] = {}
        settings, invocation = parse_command_line(
            argv, saved_settings=lambda p: resumed.setdefault("state", load_checkpoint(p))["settings"])
        saved = resumed.get("state") or (load_checkpoint(invocation.eval_only, for_resume=False)
                                         if invocation.eval_only else None)
        if invocation.resume:
            check_resumable(saved["settings"], settings)
        if settings.distillation_checkpoint_dir is not None:
            check_creatable_dir(settings.distillation_checkpoint_dir, "DISTILLATION.distillation_checkpoint_dir")
        device = resolve_device(settings.device)
        if warning := emulated_bf16_warning(device, settings.eval_precision):
            LOG.warning(warning)
        data = load_mnist(settings.dataset_dir)
        seed_everything(settings.seed)
        distilling = not (invocation.eval_only or invocation.baseline)
        real = RealClouds(data.train_images, data.train_labels, settings.threshold, settings.num_points)
        start = start_set(settings) if distilling and not invocation.resume else None
        distiller = Distiller(*build_network(settings, device), real, settings, device,
                              torch.Generator().manual_seed(settings.seed), start) if distilling else None
        if invocation.resume:
            restore_checkpoint(distiller, saved, invocation.resume, settings.total_iterations)
        run_dir = create_run_dir(settings.logging_parent, settings.experiment_name)
    except (SettingsError, DataError, MinkowskiUnavailable, CheckpointError, OutputError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Data -> point sets: real digits as capped clouds; test digits binarised the same way.
    n_test = settings.test_size or len(data.test_labels)
    test_images = occupancy_to_images(binarize(data.test_images[:n_test], settings.threshold)).to(device)
    test_labels = data.test_labels[:n_test].to(device)
    standardise = pixel_standardiser(real.occupancy) if settings.eval_normalize else (lambda x: x)
    test_inputs = standardise(test_images)  # once, not at every evaluation

    def evaluate(points: torch.Tensor, labels: torch.Tensor, iteration: int) -> None:
        start, images = time.perf_counter(), project_points(points, settings.eval_projection)
        result = evaluate_set(standardise(images.to(device)), labels.to(device), test_inputs, test_labels, settings,
                              seed=settings.seed * 100_003 + iteration)
        record.add_evaluation(iteration, images, labels, result, time.perf_counter() - start)

    logger = make_logger(run_dir, settings.log)
    logger.text("settings", "```\n" + json.dumps(settings.to_dict(), indent=2) + "\n```")

    if not distilling:  # evaluate a saved synthetic set, or a baseline made of real digits, with this protocol
        record = RunRecord(run_dir, settings, logger)
        if invocation.baseline:
            record.extra["baseline"] = invocation.baseline
            points, iteration = baseline_set(invocation.baseline, real, settings), 0
            labels = torch.arange(10).repeat_interleave(settings.cad_per_class)
        else:
            # `mode` in results.json is this command's; the set's own mode is in its checkpoint.
            record.extra["evaluated"] = str(invocation.eval_only)
            record.extra["distilled_mode"] = saved.get("settings", {}).get("mode")
            points, labels, iteration = saved["points"], saved["labels"], int(saved.get("iteration", 0))
        with StopRequest() as stop, stop.abortable():  # Ctrl-C stops the evaluation at once
            evaluate(points.to(device), labels, iteration)
        record.save(iteration, {"points": points, "labels": labels})
        print(f"run folder: {record.finish('interrupted' if stop.requested else 'evaluated', iteration)}")
        return EXIT_INTERRUPTED if stop.requested else 0

    record = RunRecord(run_dir, settings, logger, previous=saved)
    start_iteration = 0
    if saved is not None:
        start_iteration = int(saved["iteration"])
        record.extra["resumed_from"] = str(invocation.resume)
    network = f"pool {settings.network_pool}" if settings.network_pool else f"depth {settings.net_depth}"
    matching = f"{settings.dist_opt} distance" if settings.objective == "gradient" else "distribution matching"
    LOG.info("dd3d: %s path, %s, %s, 10 x %d clouds of %d points, iterations %d-%d on %s",
             settings.mode, network, matching, settings.cad_per_class, settings.num_points,
             start_iteration, settings.total_iterations, device)

    # The outer loop: at iteration i the synthetic set has had i coordinate updates.
    total, status, iteration = settings.total_iterations, "completed", start_iteration
    with logging_redirect_tqdm(loggers=[LOG]), StopRequest() as stop:
        bar = tqdm(range(start_iteration, total + 1), desc="distilling", unit="it", disable=None)
        for iteration in bar:
            if not stop.requested and iteration in settings.eval_iterations and not record.evaluated(iteration):
                with stop.abortable():  # Ctrl-C stops an evaluation at once; a resume redoes it
                    evaluate(distiller.points, distiller.labels, iteration)
            if stop.requested or iteration == total or (
                    settings.save_cad_every and iteration % settings.save_cad_every == 0):
                record.save(iteration, distiller.state_dict())
            if stop.requested:
                status = "interrupted"
                LOG.warning("stopped by signal %d at iteration %d; continue with --resume %s", stop.signal,
                            iteration, run_dir)
                break
            if iteration == total:
                break
            start = time.perf_counter()
            try:
                stats = distiller.step(iteration)
            except DivergedError as e:
                status = "diverged"
                LOG.error("iteration %d: %s; the last good checkpoint is kept in %s", iteration, e, run_dir)
                break
            release_free_memory()
            record.add_step(iteration, stats, time.perf_counter() - start)
            last = record.evaluations[-1]["mean"] if record.evaluations else float("nan")
            bar.set_postfix(loss=f"{stats.loss:.4g}", acc=f"{100 * last:.1f}%")

    print(f"run folder: {record.finish(status, iteration)}")
    return {"completed": 0, "interrupted": EXIT_INTERRUPTED, "diverged": EXIT_DIVERGED}[status]


if __name__ == "__main__":
    sys.exit(main())
