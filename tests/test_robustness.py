"""Interrupt, resume, evaluate saved sets, divergence guard, corrupt checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from configs.settings import REPO_ROOT, load_settings
from dd3d.distill import Distiller, DivergedError, build_network
from dd3d.pointsets import RealClouds
from dd3d.runtime import StopRequest, release_free_memory, resident_memory_gb
from tests.conftest import TINY, only_run_dir, run_cli

LONGER = [*TINY, "--pytorch", "--no-log", "--iterations", "12", "--set", "DISTILLATION.save_cad_every=1",
          "--set", "DISTILLATION.eval_iterations=0", "--eval-models", "1", "--eval-epochs", "2"]


def test_stop_request_turns_sigint_into_a_flag():
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when the suite runs in the background
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.requested and stop.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path):
    full = run_cli(LONGER, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    expected = torch.load(only_run_dir(tmp_path / "full") / "synthetic.pt", weights_only=False)

    runs = tmp_path / "cut"
    env = {**os.environ}
    cmd = [sys.executable, str(REPO_ROOT / "mnist_distill.py"), "--set", f"DEFAULT.logging_parent={runs}", *LONGER]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for a checkpoint past iteration 2, then interrupt
        ckpts = list(runs.glob("*/ply/it00003_class0_0.ply")) if runs.exists() else []
        if ckpts:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    cut = only_run_dir(runs)
    results = json.loads((cut / "results.json").read_text())
    assert results["status"] == "interrupted" and 3 <= results["iteration"] < 12
    saved = torch.load(cut / "synthetic.pt", weights_only=False)
    assert saved["iteration"] == results["iteration"]

    resumed_runs = tmp_path / "resumed"
    proc = run_cli([*LONGER, "--resume", str(cut)], resumed_runs)
    assert proc.returncode == 0, proc.stderr
    resumed = only_run_dir(resumed_runs)
    final = torch.load(resumed / "synthetic.pt", weights_only=False)
    assert final["iteration"] == 12
    assert torch.equal(final["points"], expected["points"])
    results = json.loads((resumed / "results.json").read_text())
    assert results["status"] == "completed" and results["resumed_from"] == str(cut)
    assert [e["iteration"] for e in results["evaluations"]] == [0, 12]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("finished")
    assert run_cli([*TINY, "--pytorch", "--no-log"], runs).returncode == 0
    return only_run_dir(runs)


def test_eval_only_evaluates_a_saved_set(tmp_path, finished_run):
    runs = tmp_path / "eval"
    proc = run_cli([*TINY, "--eval-only", str(finished_run), "--eval-models", "1"], runs)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((only_run_dir(runs) / "results.json").read_text())
    assert results["status"] == "evaluated" and results["evaluated"] == str(finished_run)
    assert results["distilled_mode"] == "convnet"  # the saved set's mode, not this (ME) command's
    assert len(results["evaluations"]) == 1 and len(results["evaluations"][0]["accuracies"]) == 1


@pytest.mark.parametrize("flags, fragment", [
    (["--distance", "modmse"], "cannot resume: dist_opt was 'ours' in the checkpoint, now 'modmse'"),
    (["--seed", "5"], "cannot resume: seed was 0"),
])
def test_resume_with_incompatible_settings_names_the_difference(tmp_path, finished_run, flags, fragment):
    runs = tmp_path / "r"
    proc = run_cli([*TINY, "--resume", str(finished_run), *flags], runs)
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not runs.exists()


@pytest.mark.parametrize("content", [b"", b"garbage", "truncate"])
def test_corrupt_checkpoint_is_one_line_and_nothing_is_written(tmp_path, finished_run, content):
    bad = tmp_path / "synthetic.pt"
    good = (finished_run / "synthetic.pt").read_bytes()
    bad.write_bytes(good[: len(good) // 2] if content == "truncate" else content)
    runs = tmp_path / "r"
    for flag in ("--resume", "--eval-only"):
        proc = run_cli([*TINY, flag, str(bad)], runs)
        assert proc.returncode == 2 and "checkpoint" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not runs.exists()
    assert (finished_run / "synthetic.pt").read_bytes() == good


def test_nan_stops_the_step_and_leaves_the_points(mnist):
    # The seed's fixed network (configs/seed.ini): a fresh network per iteration would replace the NaN.
    settings = load_settings(["--config", str(REPO_ROOT / "configs" / "seed.ini"), "--pytorch", "--set",
                              "MODEL.batch_size=8", "--set", "DISTILLATION.num_points=50", "--device", "cpu"])
    net, to_input = build_network(settings, torch.device("cpu"))
    real = RealClouds(mnist.train_images[:2000], mnist.train_labels[:2000], 75, 50)
    distiller = Distiller(net, to_input, real, settings, torch.device("cpu"), torch.Generator().manual_seed(0))
    distiller.step()
    before = distiller.points.detach().clone()
    with torch.no_grad():
        net.classifier.bias.fill_(float("nan"))
    with pytest.raises(DivergedError, match="not finite"):
        distiller.step()
    assert torch.equal(distiller.points.detach(), before)


def test_distillation_checkpoint_dir_keeps_checkpoints_apart_and_either_folder_resumes(tmp_path):
    ckpts = tmp_path / "ckpts"
    flags = [*TINY, "--pytorch", "--no-log", "--set", f"DISTILLATION.distillation_checkpoint_dir={ckpts}"]
    first = run_cli(flags, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    run = only_run_dir(tmp_path / "a")
    kept = ckpts / run.name / "synthetic.pt"
    assert kept.is_file() and (run / "synthetic.pt").resolve() == kept.resolve()
    assert torch.load(kept, weights_only=False)["iteration"] == 3
    evaluated = run_cli([*flags, "--eval-only", str(ckpts / run.name)], tmp_path / "b")
    assert evaluated.returncode == 0, evaluated.stderr
    resumed = run_cli([*flags, "--iterations", "4", "--resume", str(run)], tmp_path / "c")
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(ckpts / only_run_dir(tmp_path / "c").name / "synthetic.pt", weights_only=False)["iteration"] == 4


def test_distillation_checkpoint_dir_that_cannot_be_created_stops_before_writing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli([*TINY, "--pytorch", "--set", f"DISTILLATION.distillation_checkpoint_dir={blocker}/sub"],
                   tmp_path / "runs")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "distillation_checkpoint_dir" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's heap and /proc are Linux's")
def test_release_free_memory_returns_the_heap_holes_a_step_leaves():
    # 64 KiB blocks come from the heap (under glibc's mmap threshold); a small keeper after each stops the
    # heap's top from shrinking by itself when the blocks are freed, as a step's live objects do.
    blocks, keepers = [], []
    for _ in range(3000):
        blocks.append(bytearray(64 * 1024))
        keepers.append(bytearray(1024))
    del blocks
    before = resident_memory_gb()
    release_free_memory()
    assert before - resident_memory_gb() > 0.1  # of the ~0.19 GB freed
