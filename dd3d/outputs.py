"""What a run leaves behind: its folder, results.json, the checkpoint, PLY/PNG exports, and the logger.

``RunLogger`` writes TensorBoard events and a text log; ``NullLogger`` has the same methods and does
nothing, so the loop calls the same code whether logging is on or off (``--no-log``).
"""

from __future__ import annotations

import contextlib
import io
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
from dd3d.evaluate import Evaluation
from dd3d.pointsets import SPLAT_HIGH
from dd3d.runtime import peak_memory_gb, resident_memory_gb

LOG = logging.getLogger("dd3d")


def setup_console_logging() -> None:
    """Route the ``dd3d`` logger to stderr once (tqdm redirects it while the bar is shown)."""
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    if not any(type(h) is logging.StreamHandler for h in LOG.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOG.addHandler(handler)


class OutputError(RuntimeError):
    """An output folder that cannot be created or written; the message is one line."""


def check_creatable_dir(path: Path, what: str) -> None:
    """Raise OutputError unless ``path`` is a writable folder or could be created as one (creates nothing)."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {probe} is not writable")


def create_run_dir(parent: Path, experiment: str, now: datetime | None = None) -> Path:
    """``<parent>/<YYYYmmddHHMMSS>_<experiment>``, never an existing folder (suffix _1, _2, ... if taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    # A file in the way, a read-only or unwritable folder: one line naming the setting (OutputError).
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"DEFAULT.logging_parent = '{parent}' is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            path = parent / (f"{stamp}_{experiment}" + (f"_{n}" if n else ""))
            try:
                path.mkdir()  # atomic: fails if another run took the name first
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise OutputError(f"DEFAULT.logging_parent = '{parent}': cannot create a run folder there "
                          f"({e.strerror or e})") from None
    raise OutputError(f"no free run folder name under {parent}")


def _replace_atomically(path: Path, write: Any) -> None:
    """Write ``path`` through ``path.tmp`` + fsync + rename, so a crash or a full disk never leaves a partial
    file under the real name; on failure the previous file is untouched and OutputError says why."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # the partial copy would only take space
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def write_json(path: Path, obj: Any) -> None:
    _replace_atomically(path, lambda fh: fh.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    # Serialised in memory first: torch.save writing to a full disk fails with an opaque RuntimeError
    # ("unexpected pos"), while the plain write below raises OSError(ENOSPC) that names the cause.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _replace_atomically(path, lambda fh: fh.write(buffer.getbuffer()))


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, truncated or not dd3d's; the message is one line."""


CHECKPOINT_NAME = "synthetic.pt"
_NUM_CLASSES = 10
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_RESUME_KEYS = ("points", "labels", "optimizer", "iteration", "settings", "network", "generator")


def _describe(value: Any) -> str:
    return f"{value.dtype} {list(value.shape)}" if torch.is_tensor(value) else type(value).__name__


def load_checkpoint(path: Path, for_resume: bool = True) -> dict[str, Any]:
    """Read and check ``synthetic.pt`` (or the one in a run folder); anything amiss is one CheckpointError line.

    Evaluation needs only ``points`` (finite floats [M, N, 3], M, N >= 1) and ``labels`` (integers 0-9 [M], every
    class at least once); a resume also needs the optimiser, network, sampler state, iteration and settings.
    Points outside [0, 27.5] are clamped into it with one warning saying how many: the binary projection puts them
    on the border cells anyway. 27.5 is the splat mode's upper bound (SPLAT_HIGH, the border cells' centres), so a
    checkpoint dd3d wrote in either mode loads unchanged and resumes exactly.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        # weights_only: a checkpoint holds tensors and plain containers, so a crafted pickle cannot run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # torch.load raises many types on a corrupt or truncated file
        if "was not an allowed global" in str(e):  # weights_only refused to import a class or function
            raise CheckpointError(f"cannot read checkpoint {path}: it holds objects other than tensors and plain "
                                  "containers, which dd3d never writes (refused without running them)") from None
        # The last line of torch's message names the cause; garbage gives "Unsupported operand 103".
        lines = [line for line in str(e).strip().splitlines() if line.strip() and "documentation" not in line]
        first = (lines[-1] if "Weights only load failed" in str(e) and lines else (lines or [""])[0])[:200]
        first = first or ("the file is empty or cut short" if isinstance(e, EOFError) else "")
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {first}") from None
    needed = _RESUME_KEYS if for_resume else ("points", "labels")
    missing = [k for k in needed if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a dd3d checkpoint (missing {', '.join(missing)})")
    points, labels = state["points"], state["labels"]
    if not (torch.is_tensor(points) and points.layout == torch.strided and points.is_floating_point()
            and points.dim() == 3 and points.shape[2] == 3):
        raise CheckpointError(f"{path}: points must be a float tensor [M, N, 3], got {_describe(points)}")
    if 0 in points.shape:
        raise CheckpointError(f"{path}: the set is empty (points {list(points.shape)}); it needs at least one "
                              "cloud per class and one point per cloud")
    if not (torch.is_tensor(labels) and labels.layout == torch.strided and labels.dtype in _INT_DTYPES
            and labels.shape == points.shape[:1]):
        raise CheckpointError(f"{path}: labels must be an integer tensor [{len(points)}] (one per cloud), got "
                              f"{_describe(labels)}")
    outside = sorted({int(v) for v in labels[(labels < 0) | (labels >= _NUM_CLASSES)].tolist()})
    if outside:
        raise CheckpointError(f"{path}: labels must be 0-9, found {outside[:5]}{' ...' if len(outside) > 5 else ''}")
    absent = sorted(set(range(_NUM_CLASSES)) - set(labels.tolist()))
    if absent:
        raise CheckpointError(f"{path}: no cloud of class {', '.join(map(str, absent))} "
                              "(every digit 0-9 needs at least one)")
    bad = ~torch.isfinite(points).all(dim=-1)
    if bad.any():
        raise CheckpointError(f"{path}: {int(bad.sum())} of {bad.numel()} points are not finite (NaN or Inf)")
    if "settings" in state and not isinstance(state["settings"], dict):
        raise CheckpointError(f"{path}: settings must be a dict, got {_describe(state['settings'])}")
    iteration = state.get("iteration", 0)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(f"{path}: iteration must be an int >= 0, got {iteration!r}"[:300])
    high = SPLAT_HIGH
    outside_grid = ((points < 0) | (points > high)).any(dim=-1)
    if outside_grid.any():
        LOG.warning("%s: clamped %d of %d points into the grid [0, %g]", path, int(outside_grid.sum()),
                    outside_grid.numel(), high)
    state["points"] = points.detach().float().clamp(0.0, high)
    state["labels"] = labels.long()
    return state


def check_set_fits(state: dict[str, Any], path: Path, cad_per_class: int, num_points: int) -> None:
    """A loaded set (``load_checkpoint``) has the shape and class-major labels a run of these settings makes, or
    one CheckpointError line says how it differs."""
    want = (_NUM_CLASSES * cad_per_class, num_points, 3)
    if tuple(state["points"].shape) != want:
        raise CheckpointError(f"{path}: points {list(state['points'].shape)} do not fit the run's settings, which make "
                              f"{list(want)} (10 x cad_per_class clouds of num_points)")
    if not torch.equal(state["labels"], torch.arange(_NUM_CLASSES).repeat_interleave(cad_per_class)):
        raise CheckpointError(f"{path}: labels are not in the class-major order a run writes ({want[0]} clouds)")


def restore_checkpoint(distiller: Any, state: dict[str, Any], path: Path, total_iterations: int) -> None:
    """Load a --resume checkpoint into ``distiller`` (dd3d.distill.Distiller), before any run folder exists.

    A state that does not fit the settings (shape, label layout, optimiser, network, sampler) or that is past
    ``total_iterations`` is one CheckpointError line instead of a traceback halfway into the run.
    """
    check_set_fits(state, path, distiller.settings.cad_per_class, distiller.settings.num_points)
    if state["iteration"] > total_iterations:
        raise CheckpointError(f"{path} is at iteration {state['iteration']}, past DISTILLATION.total_iterations = "
                              f"{total_iterations}: ask for at least that many (--iterations)")
    try:
        distiller.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: cannot resume from it: {type(e).__name__}: {first}") from None


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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {folder}: {e.strerror or e}") from None
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
    _replace_atomically(path, lambda fh: save_image(grid, fh, format="png"))


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


def checkpoint_location(run_dir: Path, settings: Settings) -> Path:
    """Where a run's checkpoint lives: its folder, or ``distillation_checkpoint_dir/<run folder name>/``."""
    if settings.distillation_checkpoint_dir is None:
        return run_dir / CHECKPOINT_NAME
    return settings.distillation_checkpoint_dir / run_dir.name / CHECKPOINT_NAME


class RunRecord:
    """One run's folder and its record: evaluations, step statistics, checkpoint, exports, results.json."""

    def __init__(self, run_dir: Path, settings: Settings, logger: NullLogger,
                 previous: dict[str, Any] | None = None) -> None:
        self.run_dir, self.settings, self.logger = run_dir, settings, logger
        self.checkpoint = checkpoint_location(run_dir, settings)
        if self.checkpoint.parent != run_dir:
            # The run folder links to the checkpoint kept elsewhere, so either folder can be resumed.
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            (run_dir / CHECKPOINT_NAME).symlink_to(self.checkpoint.resolve())
        previous = previous or {}
        self.evaluations: list[dict[str, Any]] = list(previous.get("evaluations", []))
        self.timings: dict[str, float] = dict(previous.get("timings", {})) or {
            "distillation_seconds": 0.0, "evaluation_seconds": 0.0, "iterations_timed": 0}
        self.extra: dict[str, Any] = {}

    def evaluated(self, iteration: int) -> bool:
        return any(e["iteration"] == iteration for e in self.evaluations)

    def add_evaluation(self, iteration: int, images: torch.Tensor, labels: torch.Tensor, result: Evaluation,
                       seconds: float) -> None:
        """Top-level accuracies/mean/std are the first architecture's (what existing tooling reads)."""
        mean, std = result.mean, result.std
        per_arch = {arch: {"accuracies": r.accuracies, "mean": r.mean, "std": r.std}
                    for arch, r in result.by_architecture.items()}
        self.evaluations.append({"iteration": iteration, "accuracies": result.accuracies, "mean": mean, "std": std,
                                 "architectures": per_arch})
        self.timings["evaluation_seconds"] += seconds
        grid = digit_grid(images, labels)
        save_digit_grid(self.run_dir / f"digits_it{iteration:05d}.png", grid)
        self.logger.image("Evaluation/digits", grid, iteration)
        self.logger.scalars("Evaluation/accuracy", {"mean": mean, "std": std}, iteration)
        for arch, r in per_arch.items():
            self.logger.scalars(f"Evaluation/accuracy_{arch}", {"mean": r["mean"], "std": r["std"]}, iteration)
        figures = ", ".join(f"{arch} {100 * r['mean']:.2f}% +- {100 * r['std']:.2f}%" for arch, r in per_arch.items())
        LOG.info("iteration %d: test accuracy %s over %d models each", iteration, figures, len(result.accuracies))

    def add_step(self, iteration: int, stats: Any, seconds: float) -> None:
        self.timings["distillation_seconds"] += seconds
        self.timings["iterations_timed"] += 1
        self.logger.scalar("Distillation/matched_loss", stats.loss, iteration)
        self.logger.scalars("Distillation/matched_loss_class", {str(c): v for c, v in enumerate(stats.per_class)},
                            iteration)
        self.logger.scalar("Distillation/point_grad_abs_mean", stats.grad_abs_mean, iteration)
        self.logger.scalar("Distillation/point_displacement", stats.displacement, iteration)
        self.logger.scalar("Distillation/point_lr", stats.lr, iteration)
        # Some fifty-per-class runs grew to ~22 GB for reasons not yet found (README): make growth visible.
        if (memory := resident_memory_gb()) is not None:
            self.logger.scalar("Distillation/resident_memory_gb", memory, iteration)

    def save(self, iteration: int, state: dict[str, Any]) -> None:
        """PLY exports, the clouds in TensorBoard, and an atomic checkpoint to continue from."""
        export_clouds(self.run_dir / "ply", state["points"], state["labels"], iteration)
        self.logger.clouds("Synthetic/clouds", state["points"], state["labels"], iteration)
        save_checkpoint(self.checkpoint, {
            **state, "iteration": iteration, "settings": self.settings.to_dict(),
            "evaluations": self.evaluations, "timings": self.timings})

    def finish(self, status: str, iteration: int) -> Path:
        timed = max(self.timings["iterations_timed"], 1)
        results = {
            "status": status, "iteration": iteration, "mode": self.settings.mode,
            "settings": self.settings.to_dict(), **self.extra, "evaluations": self.evaluations,
            "timings": {**self.timings, "seconds_per_iteration": self.timings["distillation_seconds"] / timed},
            "peak_memory_gb": peak_memory_gb(),  # this process's (a resumed run's earlier processes not included)
        }
        if self.evaluations:
            results["final_accuracy"] = {k: self.evaluations[-1][k] for k in ("iteration", "mean", "std")}
        write_json(self.run_dir / "results.json", results)
        self.logger.close()
        return self.run_dir
