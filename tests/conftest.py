"""Shared fixtures: the repository root, the prepared MNIST, and a runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs.settings import REPO_ROOT, load_settings
from dd3d.mnist import MNISTSplits, is_prepared, load_mnist

# A tiny, fast configuration for end-to-end runs (same code paths as the default run).
TINY = ["--iterations", "3", "--eval-epochs", "5", "--eval-models", "2",
        "--set", "MODEL.batch_size=16", "--set", "DISTILLATION.num_points=100",
        "--set", "EVALUATION.test_size=300", "--set", "DISTILLATION.save_cad_every=2", "--device", "cpu",
        "--set", "DISTILLATION.eval_iterations=0"]


@pytest.fixture(scope="session")
def mnist() -> MNISTSplits:
    root = load_settings([]).dataset_dir
    if not is_prepared(root):
        pytest.fail(f"MNIST is not prepared under {root}: run the tests with `make test`")
    return load_mnist(root)


def run_cli(args: list[str], runs_dir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run mnist_distill.py in a subprocess with its run folders under ``runs_dir``."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, str(REPO_ROOT / "mnist_distill.py"), "--set", f"DEFAULT.logging_parent={runs_dir}", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def only_run_dir(runs_dir: Path) -> Path:
    dirs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]
