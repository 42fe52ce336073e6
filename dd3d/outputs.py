"""What a run leaves behind: its folder, results.json, the checkpoint, PLY/PNG exports, and the logger.

``RunLogger`` writes TensorBoard events and a text log; ``NullLogger`` has the same methods and does
nothing, so the loop calls the same code whether logging is on or off (``--no-log``).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import make_grid, save_image

from configs.settings import Settings
from dd3d.evaluate import EvalResult

LOG = logging.getLogger("dd3d")


def setup_console_logging() -> None:
    """Route the ``dd3d`` logger to stderr once (tqdm redirects it while the bar is shown)."""
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    if not any(type(h) is logging.StreamHandler for h in LOG.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)


def create_run_dir(parent: Path, experiment: str, now: datetime | None = None) -> Path:
    """``<parent>/<YYYYmmddHHMMSS>_<experiment>``, never an existing folder (suffix _1, _2, ... if taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        path = parent / (f"{stamp}_{experiment}" + (f"_{n}" if n else ""))
        try:
            path.mkdir()  # atomic: fails if another run took the name first
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run folder name under {parent}")


def _replace_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    _replace_atomically(path, lambda fh: fh.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    _replace_atomically(path, lambda fh: torch.save(state, fh))


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, truncated or not dd3d's; the message is one line."""


CHECKPOINT_NAME = "synthetic.pt"
_RESUME_KEYS = ("points", "labels", "optimizer", "iteration", "settings", "network", "generator")


def load_checkpoint(path: Path, for_resume: bool = True) -> dict[str, Any]:
    """Read ``synthetic.pt`` (or the one in a run folder); for evaluation only points and labels are needed."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # torch.load raises many types on a corrupt or truncated file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") \
            from None
    needed = _RESUME_KEYS if for_resume else ("points", "labels")
    missing = [k for k in needed if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a dd3d checkpoint (missing {', '.join(missing)})")
    points, labels = state["points"], state["labels"]
    if not (torch.is_tensor(points) and points.dim() == 3 and points.shape[2] == 3
            and torch.is_tensor(labels) and labels.shape == points.shape[:1]):
        raise CheckpointError(f"{path}: points must be [M, N, 3] with labels [M]")
    return state


def write_ply(path: Path, points: torch.Tensor) -> None:
    """Binary little-endian PLY with float x, y, z (x = depth, y = row, z = col, pixel units)."""
    xyz = points.detach().cpu().numpy().astype("<f4")
    header = ("ply\nformat binary_little_endian 1.0\ncomment dd3d synthetic cloud (depth, row, col)\n"
              f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n")
    _replace_atomically(path, lambda fh: fh.write(header.encode("ascii") + xyz.tobytes()))


def read_ply(path: Path) -> np.ndarray:
    """The [N, 3] float32 vertices of a PLY written by ``write_ply``."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    return np.frombuffer(data[end:], dtype="<f4", count=3 * count).reshape(count, 3)


def export_clouds(folder: Path, points: torch.Tensor, labels: torch.Tensor, iteration: int) -> None:
    """One PLY per synthetic cloud: ``ply/it{iteration:05d}_class{c}_{k}.ply``."""
    folder.mkdir(parents=True, exist_ok=True)
    seen: dict[int, int] = {}
    for cloud, label in zip(points, labels.tolist(), strict=True):
        k = seen.get(label, 0)
        seen[label] = k + 1
        write_ply(folder / f"it{iteration:05d}_class{label}_{k}.ply", cloud)


def digit_grid(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Projected digits as one image grid: one column per class, the k-th cloud of each class in row k."""
    labels = labels.cpu()
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        rank[labels == c] = torch.arange(int((labels == c).sum()))
    order = torch.argsort(rank * (int(labels.max()) + 1) + labels)
    return make_grid(images[order.to(images.device)].cpu(), nrow=len(labels.unique()), padding=2, pad_value=0.5)


def save_digit_grid(path: Path, grid: torch.Tensor) -> None:
    save_image(grid, path)


class NullLogger:
    """Logging switched off: accepts every call and writes nothing."""

    def scalar(self, tag: str, value: float, step: int) -> None: ...

    def scalars(self, tag: str, values: dict[str, float], step: int) -> None: ...

    def image(self, tag: str, image: torch.Tensor, step: int) -> None: ...

    def clouds(self, tag: str, points: torch.Tensor, labels: torch.Tensor, step: int) -> None: ...

    def text(self, tag: str, text: str) -> None: ...

    def close(self) -> None: ...


class RunLogger(NullLogger):
    """TensorBoard events plus ``log.txt`` in the run folder (the console keeps its own handler)."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.file_handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
        self.file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(self.file_handler)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def scalars(self, tag: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{tag}/{name}", value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def clouds(self, tag: str, points: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        # Mesh plugin: vertices [1, P, 3]; one colour per class so the clouds can be told apart.
        pts = points.detach().cpu()
        palette = torch.tensor([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                                [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 0, 128]],
                               dtype=torch.uint8)
        colors = palette[labels.cpu() % len(palette)].repeat_interleave(pts.shape[1], dim=0)
        self.writer.add_mesh(tag, vertices=pts.reshape(1, -1, 3), colors=colors.unsqueeze(0), global_step=step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        LOG.removeHandler(self.file_handler)
        self.file_handler.close()


def make_logger(run_dir: Path, enabled: bool) -> NullLogger:
    return RunLogger(run_dir) if enabled else NullLogger()


class RunRecord:
    """One run's folder and its record: evaluations, step statistics, checkpoint, exports, results.json."""

    def __init__(self, run_dir: Path, settings: Settings, logger: NullLogger,
                 previous: dict[str, Any] | None = None) -> None:
        self.run_dir, self.settings, self.logger = run_dir, settings, logger
        previous = previous or {}
        self.evaluations: list[dict[str, Any]] = list(previous.get("evaluations", []))
        self.timings: dict[str, float] = dict(previous.get("timings", {})) or {
            "distillation_seconds": 0.0, "evaluation_seconds": 0.0, "iterations_timed": 0}
        self.extra: dict[str, Any] = {}

    def evaluated(self, iteration: int) -> bool:
        return any(e["iteration"] == iteration for e in self.evaluations)

    def add_evaluation(self, iteration: int, images: torch.Tensor, labels: torch.Tensor, result: EvalResult,
                       seconds: float) -> None:
        mean, std = result.mean, result.std
        self.evaluations.append({"iteration": iteration, "accuracies": result.accuracies, "mean": mean, "std": std})
        self.timings["evaluation_seconds"] += seconds
        grid = digit_grid(images, labels)
        save_digit_grid(self.run_dir / f"digits_it{iteration:05d}.png", grid)
        self.logger.image("Evaluation/digits", grid, iteration)
        self.logger.scalars("Evaluation/accuracy", {"mean": mean, "std": std}, iteration)
        LOG.info("iteration %d: test accuracy %.2f%% +- %.2f%% over %d models", iteration, 100 * mean, 100 * std,
                 len(result.accuracies))

    def add_step(self, iteration: int, stats: Any, seconds: float) -> None:
        self.timings["distillation_seconds"] += seconds
        self.timings["iterations_timed"] += 1
        self.logger.scalar("Distillation/matched_loss", stats.loss, iteration)
        self.logger.scalars("Distillation/matched_loss_class", {str(c): v for c, v in enumerate(stats.per_class)},
                            iteration)
        self.logger.scalar("Distillation/point_grad_abs_mean", stats.grad_abs_mean, iteration)
        self.logger.scalar("Distillation/point_displacement", stats.displacement, iteration)

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        """PLY exports, the clouds in TensorBoard, and an atomic checkpoint to continue from."""
        export_clouds(self.run_dir / "ply", state["points"], state["labels"], iteration)
        self.logger.clouds("Synthetic/clouds", state["points"], state["labels"], iteration)
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, {
            **state, "iteration": iteration, "settings": self.settings.to_dict(),
            "evaluations": self.evaluations, "timings": self.timings})

    def finish(self, status: str, iteration: int) -> Path:
        timed = max(self.timings["iterations_timed"], 1)
        results = {
            "status": status, "iteration": iteration, "mode": self.settings.mode,
            "settings": self.settings.to_dict(), **self.extra, "evaluations": self.evaluations,
            "timings": {**self.timings, "seconds_per_iteration": self.timings["distillation_seconds"] / timed},
        }
        if self.evaluations:
            results["final_accuracy"] = {k: self.evaluations[-1][k] for k in ("iteration", "mean", "std")}
        write_json(self.run_dir / "results.json", results)
        self.logger.close()
        return self.run_dir
