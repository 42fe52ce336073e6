"""kill -9 a short distillation at random moments: does the last checkpoint always load, and does --resume end
with exactly the points of an uninterrupted run? Prints one JSON object.

    .venv/bin/python experiments/kill9_trials.py --trials 20          # about a minute per trial on a busy 2-core CPU

One uninterrupted reference run comes first (its final points, and its seconds per iteration). Every trial
starts the same command, picks an iteration k at random, waits until the run has exported iteration k's clouds
(the checkpoint write of k comes right after) and SIGKILLs it after a further delay drawn uniformly from one
iteration's time, so kills land in checkpoint writes, steps and evaluations alike, whatever the machine's load.
It then loads the last checkpoint with ``load_checkpoint`` and continues it with ``--resume``. A trial loses
nothing when the checkpoint loads and the resumed run's final points equal the reference's bit for bit. The
PyTorch path on CPU with tiny budgets keeps it short.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from dd3d.outputs import CHECKPOINT_NAME, CheckpointError, load_checkpoint  # noqa: E402

# The seed's method (configs/seed.ini: one fixed network, the cheapest per iteration) on the PyTorch path, tiny
# sizes, and a checkpoint at every iteration so kills often land in a write.
FLAGS = ["--config", "configs/seed.ini", "--pytorch", "--no-log", "--device", "cpu", "--eval-models", "1",
         "--eval-epochs", "2",
         "--set", "MODEL.batch_size=4", "--set", "DISTILLATION.num_points=100", "--set", "EVALUATION.test_size=300",
         "--set", "DISTILLATION.save_cad_every=1", "--set", "DISTILLATION.eval_iterations=0"]


def command(runs: Path, iterations: int, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "mnist_distill.py"), "--set", f"DEFAULT.logging_parent={runs}", *FLAGS,
            "--iterations", str(iterations), *extra]


def run_folder(runs: Path) -> Path | None:
    folders = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    return folders[0] if folders else None


def reference_run(runs: Path, iterations: int) -> tuple[torch.Tensor, float, float]:
    """Final points of an uninterrupted run, and the seconds until its first checkpoint and until its end."""
    start = time.monotonic()
    proc = subprocess.Popen(command(runs, iterations), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    first = None
    while proc.poll() is None:
        folder = run_folder(runs)
        if first is None and folder is not None and (folder / CHECKPOINT_NAME).exists():
            first = time.monotonic() - start
        time.sleep(0.02)
    end = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed ({proc.returncode}): {proc.stderr.read().strip()[-500:]}")
    folder = run_folder(runs)
    assert folder is not None
    final = load_checkpoint(folder)
    assert final["iteration"] == iterations
    return final["points"], first if first is not None else end, end


def trial(work: Path, index: int, target: int, delay: float, iterations: int,
          expected: torch.Tensor) -> dict[str, Any]:
    runs = work / f"killed{index}"
    proc = subprocess.Popen(command(runs, iterations), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Progress, not wall time, decides where the kill lands: the last PLY of iteration `target`.
    while proc.poll() is None:
        folder = run_folder(runs)
        if folder is not None and (folder / "ply" / f"it{target:05d}_class9_0.ply").exists():
            break
        time.sleep(0.01)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    if not finished_first:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out: dict[str, Any] = {"trial": index, "after_iteration": target, "then_s": round(delay, 3),
                           "finished_before_kill": finished_first}
    folder = run_folder(runs)
    checkpoint = folder / CHECKPOINT_NAME if folder is not None else None
    out["tmp_file_left"] = bool(folder is not None and (folder / (CHECKPOINT_NAME + ".tmp")).exists())
    if checkpoint is None or not checkpoint.exists():
        # Killed before the first checkpoint: there is nothing to lose and nothing to resume.
        out.update(checkpoint_iteration=None, loads=None, resumed_equal=None, lost_nothing=True)
        return out
    try:
        out["checkpoint_iteration"] = int(load_checkpoint(checkpoint)["iteration"])
        out["loads"] = True
    except CheckpointError as e:
        out.update(checkpoint_iteration=None, loads=False, error=str(e), resumed_equal=False, lost_nothing=False)
        return out
    resumed_runs = work / f"resumed{index}"
    proc = subprocess.run(command(resumed_runs, iterations, "--resume", str(folder)), cwd=REPO,
                          capture_output=True, text=True)
    resumed = run_folder(resumed_runs)
    if proc.returncode != 0 or resumed is None:
        out.update(resumed_equal=False, lost_nothing=False, error=proc.stderr.strip()[-300:])
        return out
    final = load_checkpoint(resumed)
    out["resumed_equal"] = bool(final["iteration"] == iterations and torch.equal(final["points"], expected))
    out["lost_nothing"] = out["resumed_equal"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--iterations", type=int, default=6, help="outer iterations of each run")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--keep", type=Path, help="keep the run folders here instead of a temporary folder")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="dd3d-kill9-") as tmp:
        work = args.keep or Path(tmp)
        expected, first, end = reference_run(work / "reference", args.iterations)
        step = (end - first) / args.iterations  # seconds per iteration, evaluations included
        results = [trial(work, i, rng.randrange(args.iterations), rng.uniform(0, step), args.iterations, expected)
                   for i in range(args.trials)]
    lost = [r["trial"] for r in results if not r["lost_nothing"]]
    print(json.dumps({
        "trials": args.trials, "iterations": args.iterations, "lost_nothing": args.trials - len(lost),
        "lost_in_trials": lost, "reference_s": {"first_checkpoint": round(first, 3), "end": round(end, 3)},
        "finished_before_kill": sum(r["finished_before_kill"] for r in results),
        "killed_with_a_checkpoint": sum(r["checkpoint_iteration"] is not None for r in results),
        "killed_mid_write": sum(r["tmp_file_left"] for r in results),
        "results": results}, indent=1))
    return 0 if not lost else 1


if __name__ == "__main__":
    sys.exit(main())
