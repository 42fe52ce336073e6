"""End-to-end runs of mnist_distill.py on tiny budgets: outputs, --no-log, reproducibility."""

import json
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dd3d.outputs import read_ply
from tests.conftest import TINY, only_run_dir, run_cli


def check_run_folder(run, mode: str, log: bool) -> dict:
    results = json.loads((run / "results.json").read_text())
    assert results["mode"] == mode and results["settings"]["total_iterations"] == 3
    assert [e["iteration"] for e in results["evaluations"]] == [0, 3]
    for e in results["evaluations"]:
        assert len(e["accuracies"]) == 2 and 0 <= e["mean"] <= 1
    assert set(results["timings"]) >= {"seconds_per_iteration", "distillation_seconds", "evaluation_seconds"}
    assert results["timings"]["seconds_per_iteration"] > 0
    assert 0.1 < results["peak_memory_gb"] < 64  # torch alone holds more than 100 MB

    ckpt = torch.load(run / "synthetic.pt", weights_only=False)
    assert ckpt["points"].shape == (10, 100, 3) and ckpt["points"].dtype == torch.float32
    assert ckpt["labels"].tolist() == list(range(10)) and ckpt["iteration"] == 3
    assert ckpt["settings"]["num_points"] == 100 and "state" in ckpt["optimizer"]
    # Splatting keeps points within half a cell of the border.
    planar = ckpt["points"][..., 1:]
    assert (ckpt["points"][..., 0] == 0).all() and planar.min() >= 0.5 and planar.max() <= 27.5

    assert sorted(p.name for p in run.glob("digits_it*.png")) == ["digits_it00000.png", "digits_it00003.png"]
    plys = sorted(p.name for p in (run / "ply").glob("*.ply"))
    assert len(plys) == 30 and "it00002_class7_0.ply" in plys  # iterations 0, 2 (save_cad_every) and 3
    assert torch.allclose(torch.from_numpy(read_ply(run / "ply" / "it00003_class4_0.ply").copy()),
                          ckpt["points"][4])

    events = list(run.glob("events.out.tfevents.*"))
    assert bool(events) == log and (run / "log.txt").exists() == log
    if log:
        acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        assert {"Distillation/matched_loss", "Distillation/point_grad_abs_mean", "Distillation/point_displacement",
                "Evaluation/accuracy/mean", "Evaluation/accuracy/std", "Distillation/matched_loss_class/9"} <= set(
            tags["scalars"])
        assert "Evaluation/digits" in tags["images"]
        assert len(acc.Scalars("Distillation/matched_loss")) == 3
        lr = results["settings"]["dist_lr"]  # constant schedule: every iteration at dist_lr
        assert [e.value for e in acc.Scalars("Distillation/point_lr")] == pytest.approx([lr] * 3)
        memory = [e.value for e in acc.Scalars("Distillation/resident_memory_gb")]
        # The kernel's high-water mark lags by a few pages; the steps' readings are within 1 % of it.
        assert len(memory) == 3 and all(0.1 < m <= 1.01 * results["peak_memory_gb"] for m in memory)
        assert "iteration 3: test accuracy" in (run / "log.txt").read_text()
    return results


@pytest.mark.parametrize("mode", ["convnet", "me-convnet"])
def test_tiny_run_writes_every_output(tmp_path, mode):
    if mode == "me-convnet" and os.environ.get("DD3D_SKIP_MINKOWSKI") == "1":
        pytest.skip("MinkowskiEngine not installed")
    runs = tmp_path / "runs"
    proc = run_cli([*TINY, "--exp", "tiny", "--pytorch" if mode == "convnet" else "--no-pytorch"], runs)
    assert proc.returncode == 0, proc.stderr
    run = only_run_dir(runs)
    assert run.name.endswith("_tiny")
    assert proc.stdout.strip().splitlines()[-1] == f"run folder: {run}"
    check_run_folder(run, mode, log=True)


def test_no_log_writes_results_but_no_events(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli([*TINY, "--pytorch", "--no-log"], runs)
    assert proc.returncode == 0, proc.stderr
    check_run_folder(only_run_dir(runs), "convnet", log=False)


def test_same_seed_same_synthetic_set_and_accuracies(tmp_path):
    outs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        runs = tmp_path / name
        assert run_cli([*TINY, "--pytorch", "--no-log", "--seed", str(seed)], runs).returncode == 0
        run = only_run_dir(runs)
        outs.append((torch.load(run / "synthetic.pt", weights_only=False)["points"],
                     [e["accuracies"] for e in json.loads((run / "results.json").read_text())["evaluations"]]))
    assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]
    assert not torch.equal(outs[0][0], outs[2][0])


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path):
    from datetime import datetime

    from dd3d.outputs import create_run_dir

    now = datetime(2026, 1, 2, 3, 4, 5)
    a, b = create_run_dir(tmp_path, "x", now), create_run_dir(tmp_path, "x", now)
    assert a != b and a.name == "20260102030405_x" and b.name == "20260102030405_x_1"
