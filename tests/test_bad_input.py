"""Bad input on every door: hand-made checkpoints, --resume states, the file system, corrupt MNIST, a full disk,
SIGINT in an evaluation.

A refused input gets one line on stderr, exit status 2, and no run folder. Most cases call ``mnist_distill.main``
in-process (with the session's MNIST where it gets that far) to stay fast; the signal cases run the script.
"""

import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mnist_distill
from configs.settings import REPO_ROOT
from dd3d import outputs
from dd3d.mnist import MNISTSplits, raw_dir
from tests.conftest import TINY, only_run_dir

# Two iterations and one one-epoch evaluation model: every path of a run, as quickly as it goes.
FAST = [*TINY, "--pytorch", "--no-log", "--iterations", "2", "--eval-models", "1", "--eval-epochs", "1"]


def console_handler() -> logging.StreamHandler:
    outputs.setup_console_logging()
    return next(h for h in outputs.LOG.handlers if type(h) is logging.StreamHandler)


@pytest.fixture(autouse=True)
def console_back_to_the_real_stderr():
    yield
    console_handler().stream = sys.__stderr__  # not the captured stream of a test that is over


def small(mnist: MNISTSplits) -> MNISTSplits:
    # 2000 training digits (about 200 per class, batches are 16) keep building the real clouds quick.
    return MNISTSplits(mnist.train_images[:2000], mnist.train_labels[:2000], mnist.test_images, mnist.test_labels)


@pytest.fixture
def fast_mnist(monkeypatch, mnist):
    """main() in-process with part of the session's MNIST instead of reading the files again."""
    monkeypatch.setattr(mnist_distill, "load_mnist", lambda root: small(mnist))


def call(argv: list[str], runs: Path, capsys) -> tuple[int, list[str]]:
    # main() logs through one StreamHandler made once per process: point it at this test's captured stderr
    # (not with setStream, which flushes the previous stream, closed by now).
    console_handler().stream = sys.stderr
    code = mnist_distill.main(["--set", f"DEFAULT.logging_parent={runs}", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def refused(argv: list[str], runs: Path, capsys, status: int = 2) -> str:
    code, lines = call(argv, runs, capsys)
    assert code == status and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
    assert not runs.exists()
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory, mnist) -> dict:
    """The checkpoint of a finished tiny run (every resume key), at iteration 2."""
    runs = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist_distill, "load_mnist", lambda root: small(mnist))
        assert mnist_distill.main(["--set", f"DEFAULT.logging_parent={runs}", *FAST]) == 0
    return torch.load(only_run_dir(runs) / "synthetic.pt", weights_only=True)


def points(m: int = 10, n: int = 20) -> torch.Tensor:
    return torch.rand(m, n, 3, generator=torch.Generator().manual_seed(m * n)) * 27


LABELS = torch.arange(10)


def with_nan() -> torch.Tensor:
    p = points()
    p[3, 4, 1] = float("nan")
    return p


def with_inf() -> torch.Tensor:
    p = points()
    p[0, :2, 2] = float("inf")
    return p


class RunsCode:
    """Unpickling this would call print: a weights-only load must refuse it instead."""

    def __reduce__(self):
        return print, ("unpickled code ran",)


EVAL_CASES = {
    "labels 20-29": ({"points": points(), "labels": LABELS + 20}, "labels must be 0-9, found [20, 21, 22, 23, 24] ..."),
    "a class without a cloud": ({"points": points(), "labels": torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 8])},
                                "no cloud of class 9 (every digit 0-9 needs at least one)"),
    "an empty set": ({"points": torch.zeros(0, 20, 3), "labels": torch.zeros(0, dtype=torch.long)},
                     "the set is empty (points [0, 20, 3])"),
    "clouds of no points": ({"points": torch.zeros(10, 0, 3), "labels": LABELS}, "the set is empty"),
    "NaN points": ({"points": with_nan(), "labels": LABELS}, "1 of 200 points are not finite (NaN or Inf)"),
    "Inf points": ({"points": with_inf(), "labels": LABELS}, "2 of 200 points are not finite"),
    "integer points": ({"points": points().long(), "labels": LABELS},
                       "points must be a float tensor [M, N, 3], got torch.int64 [10, 20, 3]"),
    "2-D points": ({"points": points()[..., :2], "labels": LABELS}, "got torch.float32 [10, 20, 2]"),
    "points as a list": ({"points": points().tolist(), "labels": LABELS}, "got list"),
    "float labels": ({"points": points(), "labels": LABELS.float()},
                     "labels must be an integer tensor [10] (one per cloud), got torch.float32 [10]"),
    "fewer labels than clouds": ({"points": points(), "labels": LABELS[:5]}, "got torch.int64 [5]"),
    "no points": ({"labels": LABELS}, "is not a dd3d checkpoint (missing points)"),
    "a tensor, not a dict": (torch.zeros(3), "is not a dd3d checkpoint (missing points, labels)"),
    "settings not a dict": ({"points": points(), "labels": LABELS, "settings": "x"}, "settings must be a dict"),
    "a negative iteration": ({"points": points(), "labels": LABELS, "iteration": -1},
                             "iteration must be an int >= 0, got -1"),
    "a pickle that runs code": ({"points": points(), "labels": LABELS, "x": RunsCode()},
                                "holds objects other than tensors and plain containers"),
}


@pytest.mark.parametrize("state, fragment", EVAL_CASES.values(), ids=EVAL_CASES.keys())
def test_a_bad_saved_set_is_one_line_for_eval_only(tmp_path, capsys, state, fragment):
    path = tmp_path / "set.pt"
    torch.save(state, path)
    line = refused([*FAST, "--eval-only", str(path)], tmp_path / "runs", capsys)
    assert fragment in line and "unpickled code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("where", ["missing file", "folder without a checkpoint"])
def test_no_checkpoint_there(tmp_path, capsys, where):
    path = tmp_path / "nothing.pt" if where == "missing file" else tmp_path
    for flag in ("--eval-only", "--resume"):
        line = refused([*FAST, flag, str(path)], tmp_path / "runs", capsys)
        assert line == f"error: no checkpoint at {path if where == 'missing file' else path / 'synthetic.pt'}"


def test_points_and_labels_are_all_evaluation_needs_and_outside_points_are_clamped(tmp_path, capsys, fast_mnist):
    p = points()
    p[2, :5] = 1000 * 27  # five points a thousand times outside the grid
    p[3, :4, 1:] = 27.5  # the splat mode's border (SPLAT_HIGH): inside, as dd3d writes them
    path = tmp_path / "set.pt"
    torch.save({"points": p, "labels": LABELS}, path)  # no settings, no iteration
    code, lines = call([*FAST, "--eval-only", str(path)], tmp_path / "runs", capsys)
    assert code == 0 and f"{path}: clamped 5 of 200 points into the grid [0, 27.5]" in lines, lines
    results = json.loads((only_run_dir(tmp_path / "runs") / "results.json").read_text())
    assert results["status"] == "evaluated" and results["distilled_mode"] is None
    saved = torch.load(only_run_dir(tmp_path / "runs") / "synthetic.pt", weights_only=True)
    assert saved["points"].max() == 27.5 and torch.equal(saved["points"][3:], p[3:])
    assert torch.equal(saved["points"][2, 5:], p[2, 5:]) and (saved["points"][2, :5] == 27.5).all()


def test_a_saved_set_as_init_is_where_the_run_starts(tmp_path, capsys, fast_mnist, good):
    path = tmp_path / "start.pt"
    torch.save({"points": good["points"], "labels": good["labels"]}, path)  # an asset holds no optimiser
    code, lines = call([*FAST, "--iterations", "1", "--set", f"DISTILLATION.init={path}"], tmp_path / "runs", capsys)
    assert code == 0, lines
    saved = torch.load(only_run_dir(tmp_path / "runs") / "synthetic.pt", weights_only=True)
    assert saved["settings"]["init"] == str(path) and saved["iteration"] == 1
    # One Adam step of lr 0.05 from the saved points (a fresh optimiser: its first step is lr wherever the
    # gradient is not zero), not from the herding digits the default would start from.
    moved = (saved["points"] - good["points"]).abs()
    assert 0.04 < moved.max() <= 0.05 + 1e-6


@pytest.mark.parametrize("change, fragment", [
    (lambda good: {"points": good["points"][:, :50], "labels": good["labels"]},
     "points [10, 50, 3] do not fit the run's settings, which make [10, 100, 3]"),
    (lambda good: {"points": good["points"], "labels": good["labels"].flip(0)},
     "labels are not in the class-major order a run writes"),
    (lambda good: {"points": good["points"]}, "is not a dd3d checkpoint (missing labels)"),
])
def test_a_saved_set_as_init_that_does_not_fit_is_one_line(tmp_path, capsys, fast_mnist, good, change, fragment):
    path = tmp_path / "start.pt"
    torch.save(change(good), path)
    assert fragment in refused([*FAST, "--set", f"DISTILLATION.init={path}"], tmp_path / "runs", capsys)


def resume_cases() -> dict:
    def edit(**changes):
        return lambda good: {**good, **changes}

    return {
        "only points and labels": (
            lambda good: {"points": good["points"], "labels": good["labels"]},
            "not a dd3d checkpoint (missing optimizer, iteration, settings, network, generator)"),
        "points that disagree with its settings": (
            lambda good: {**good, "points": good["points"][:, :50]},
            "points [10, 50, 3] do not fit the run's settings, which make [10, 100, 3]"),
        "labels out of order": (lambda good: {**good, "labels": good["labels"].flip(0)},
                                "labels are not in the class-major order a run writes"),
        "an empty network": (edit(network={}), "cannot resume from it: RuntimeError: Error(s) in loading state_dict"),
        "an optimiser of no groups": (edit(optimizer={"state": {}, "param_groups": []}),
                                      "cannot resume from it: ValueError"),
        "a bad sampler state": (edit(generator=torch.zeros(3, dtype=torch.uint8)), "cannot resume from it"),
        "iteration as text": (edit(iteration="3"), "iteration must be an int >= 0, got '3'"),
        "settings not a dict": (edit(settings=[1, 2]), "settings must be a dict, got list"),
        "a setting of the wrong type": (lambda good: {**good, "settings": {**good["settings"], "seed": "x"}},
                                        "DEFAULT.seed = 'x' is not a valid int"),
    }


@pytest.mark.parametrize("case", resume_cases().keys())
def test_a_bad_resume_state_is_one_line(tmp_path, capsys, fast_mnist, good, case):
    make, fragment = resume_cases()[case]
    path = tmp_path / "synthetic.pt"
    torch.save(make(good), path)
    assert fragment in refused([*FAST, "--resume", str(path)], tmp_path / "runs", capsys)


def test_resume_past_the_asked_iterations(tmp_path, capsys, fast_mnist, good):
    path = tmp_path / "synthetic.pt"
    torch.save(good, path)
    line = refused([*FAST, "--resume", str(path), "--iterations", "1"], tmp_path / "runs", capsys)
    assert "is at iteration 2, past DISTILLATION.total_iterations = 1: ask for at least that many" in line


@pytest.mark.parametrize("argv, fragment", [
    (["--config", "{tmp}"], "cannot read config {tmp}: Is a directory"),
    (["--config", "{tmp}/latin1.ini"], "is not UTF-8 text (byte 0xe9 on line 2)"),
    (["--iteration", "3"], "unrecognized arguments: --iteration 3 (see --help)"),
    (["--set", "MODEL.dist_lr=nan"], "MODEL.dist_lr = 'nan' is not a valid finite float"),
])
def test_bad_settings_end_to_end(tmp_path, capsys, argv, fragment):
    (tmp_path / "latin1.ini").write_bytes("[DEFAULT]\nexperiment_name = caf\u00e9\n".encode("latin-1"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert fragment.replace("{tmp}", str(tmp_path)) in refused([*FAST, *argv], tmp_path / "runs", capsys)


def test_logging_parent_that_is_a_file(tmp_path, capsys, fast_mnist):
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    code, lines = call(FAST, runs, capsys)
    assert code == 2 and lines == [f"error: DEFAULT.logging_parent = '{runs}' is a file, not a folder"]
    assert runs.read_text() == "not a folder"


def test_logging_parent_that_is_not_writable(tmp_path, capsys, fast_mnist):
    if os.geteuid() != 0:
        parent = tmp_path / "read-only"
        parent.mkdir(mode=0o500)
    elif Path("/sys/kernel").is_dir():
        parent = Path("/sys")  # root may write anywhere but sysfs, which takes no new folders
    else:
        pytest.skip("root without sysfs: no folder here refuses root")
    line = refused(FAST, parent / "dd3d-runs", capsys)
    assert line.startswith(f"error: DEFAULT.logging_parent = '{parent / 'dd3d-runs'}': cannot create a run folder "
                           "there (")


class FullDisk:
    """A file that takes half of what it is given and then fails as a full disk does."""

    def __init__(self, fh) -> None:
        self.fh = fh

    def __enter__(self) -> "FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def write(self, data) -> int:
        self.fh.write(bytes(data)[: len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        self.fh.flush()

    def fileno(self) -> int:
        return self.fh.fileno()


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_stops_with_one_line(tmp_path, capsys, fast_mnist,
                                                                                  monkeypatch):
    opened = []

    def open_on_a_disk_that_fills(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        if Path(path).name == "synthetic.pt.tmp":
            opened.append(path)
            if len(opened) >= 2:  # the first checkpoint fits, the second does not
                return FullDisk(fh)
        return fh

    monkeypatch.setattr(outputs, "open", open_on_a_disk_that_fills, raising=False)
    runs = tmp_path / "runs"
    code, lines = call([*FAST, "--set", "DISTILLATION.save_cad_every=1"], runs, capsys)
    run = only_run_dir(runs)
    assert code == 4 and len(opened) == 2
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]] and "Traceback" not in "\n".join(lines)
    assert errors[0] == (f"error: cannot write {run / 'synthetic.pt'}: No space left on device; the files written "
                         "before it, the last checkpoint included, are intact")
    assert outputs.load_checkpoint(run)["iteration"] == 0 and not (run / "synthetic.pt.tmp").exists()


def mnist_copy(tmp_path: Path, mnist_root: Path, damaged: str, damage) -> Path:
    """A dataset_dir whose files link to the real ones, except ``damaged``, a damaged copy."""
    root = tmp_path / "mnist"
    out = raw_dir(root)
    out.mkdir(parents=True)
    for f in raw_dir(mnist_root).iterdir():
        if f.name == damaged:
            (out / f.name).write_bytes(damage(f.read_bytes()))
        else:
            (out / f.name).symlink_to(f)
    return root


def flip_one_label(data: bytes) -> bytes:
    body = bytearray(data)
    body[8] = (body[8] + 1) % 10
    return bytes(body)


@pytest.mark.parametrize("damaged, damage, fragment", [
    ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2], "cannot read MNIST under"),
    ("train-images-idx3-ubyte", lambda b: b"", "cannot read MNIST under"),
    ("t10k-labels-idx1-ubyte", lambda b: b"\0\0\0\0" + b[4:], "cannot read MNIST under"),  # bad magic number
    ("t10k-labels-idx1-ubyte", flip_one_label, "MNIST test split has 10000 digits with class counts"),
])
def test_corrupt_mnist_is_one_line_with_how_to_prepare_it_again(tmp_path, capsys, mnist, damaged, damage, fragment):
    from configs.settings import load_settings

    root = mnist_copy(tmp_path, load_settings([]).dataset_dir, damaged, damage)
    line = refused([*FAST, "--set", f"MNIST.dataset_dir={root}"], tmp_path / "runs", capsys)
    assert fragment in line and f"delete {raw_dir(root)} and run `make data`" in line


def start(args: list[str], runs: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO_ROOT / "mnist_distill.py"), "--set", f"DEFAULT.logging_parent={runs}", *args]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_once_the_run_folder_exists(proc: subprocess.Popen, runs: Path) -> tuple[int, str]:
    deadline = time.time() + 120
    while time.time() < deadline and not (runs.exists() and any(runs.iterdir())) and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # into the evaluation, which takes far longer than this
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("what", ["--eval-only", "distillation"])
def test_sigint_during_an_evaluation_stops_it_at_once(tmp_path, good, what):
    path = tmp_path / "synthetic.pt"
    torch.save(good, path)
    runs = tmp_path / "runs"
    long_eval = ["--eval-epochs", "100000", "--eval-models", "1"]
    args = [*FAST, *long_eval, "--eval-only", str(path)] if what == "--eval-only" else [*FAST, *long_eval]
    started = time.time()
    code, err = interrupt_once_the_run_folder_exists(start(args, runs), runs)
    assert code == 130 and "Traceback" not in err, err
    assert time.time() - started < 100  # 100 000 epochs would take hours
    run = only_run_dir(runs)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "interrupted" and results["evaluations"] == []
    kept = outputs.load_checkpoint(run, for_resume=what == "distillation")
    assert kept["iteration"] == (2 if what == "--eval-only" else 0)
    assert torch.equal(kept["points"], good["points"]) == (what == "--eval-only")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root with mount rights only), to fill for real."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_disk_that_fills_up_for_real(tmp_path, capsys, fast_mnist, good, tiny_tmpfs):
    """The same on a tmpfs sized to hold the first checkpoint but not a second copy of it next to the first."""
    buffer = io.BytesIO()
    torch.save(good, buffer)
    size = int(1.6 * len(buffer.getvalue())) + 100_000
    subprocess.run(["mount", "-o", f"remount,size={size}", str(tiny_tmpfs)], check=True)
    runs = tiny_tmpfs / "runs"
    code, lines = call([*FAST, "--set", "DISTILLATION.save_cad_every=1"], runs, capsys)
    run = only_run_dir(runs)
    assert code == 4 and lines[-1].startswith("error: cannot write ") and "No space left on device" in lines[-1]
    assert sum(line.startswith("error: ") for line in lines) == 1 and "Traceback" not in "\n".join(lines)
    assert outputs.load_checkpoint(run)["iteration"] in (0, 1, 2) and not (run / "synthetic.pt.tmp").exists()
