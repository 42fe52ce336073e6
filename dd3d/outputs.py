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


def digit_grid(images: torch.Tensor, per_class: int) -> torch.Tensor:
    """Projected digits as one image grid, one row per clouds-per-class index, one column per class."""
    order = torch.arange(len(images)).view(-1, per_class).t().reshape(-1)
    return make_grid(images[order].cpu(), nrow=len(images) // per_class, padding=2, pad_value=0.5)


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
