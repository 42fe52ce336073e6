from pathlib import Path

import pytest

from configs.settings import REPO_ROOT, SettingsError, check_resumable, load_settings
from tests.conftest import run_cli


def test_defaults_are_the_seeds_configuration():
    s = load_settings([])
    assert (s.batch_size, s.dist_opt, s.dist_lr, s.dist_momentum) == (256, "modmse", 0.1, 0.5)
    assert (s.cad_per_class, s.num_points, s.total_iterations, s.threshold) == (1, 250, 2500, 75)
    assert (s.eval_epochs, s.eval_models, s.net_depth, s.pytorch) == (1000, 5, 2, False)
    assert s.eval_iterations == (0, 250, 625, 1250, 1875, 2500)
    assert s.dataset_dir == REPO_ROOT / "data" / "mnist"


def test_flags_and_set_override_the_ini():
    s = load_settings(["--pytorch", "--iterations", "20", "--distance", "ours", "--exp", "x",
                       "--set", "MNIST.threshold=10", "--set", "EVALUATION.augment=false", "--no-log"])
    assert s.pytorch and s.net_depth == 3  # auto depth follows the path
    assert (s.total_iterations, s.dist_opt, s.experiment_name, s.threshold) == (20, "ours", "x", 10)
    assert s.augment is False and s.log is False
    assert s.eval_iterations == (0, 5, 10, 15, 20)
    assert load_settings(["--pytorch", "--depth", "2"]).net_depth == 2


def test_explicit_eval_iterations_keep_the_end():
    s = load_settings(["--iterations", "10", "--set", "DISTILLATION.eval_iterations=3,0,50"])
    assert s.eval_iterations == (0, 3, 10)


def test_user_config_only_needs_changed_keys(tmp_path: Path):
    cfg = tmp_path / "mine.ini"
    cfg.write_text("[MODEL]\ndist_lr = 0.5\n")
    s = load_settings(["--config", str(cfg)])
    assert s.dist_lr == 0.5 and s.batch_size == 256


@pytest.mark.parametrize("argv, fragment", [
    (["--set", "MODEL.nope=1"], "unknown key MODEL.nope"),
    (["--set", "NOPE.x=1"], "unknown section [NOPE]"),
    (["--set", "MODEL.batch_size=abc"], "MODEL.batch_size = 'abc' is not a valid int"),
    (["--set", "MODEL.dist_lr=-1"], "MODEL.dist_lr = -1.0 is out of range"),
    (["--set", "DISTILLATION.num_points=0"], "DISTILLATION.num_points = 0 is out of range"),
    (["--set", "MODEL.net_depth=7"], "MODEL.net_depth = '7' is not supported"),
    (["--set", "EVALUATION.augment=maybe"], "EVALUATION.augment = 'maybe' is not a valid bool"),
    (["--set", "novalue"], "--set expects SECTION.key=value"),
    (["--set", "MODEL.dist_optimizer=lbfgs"], "MODEL.dist_optimizer = 'lbfgs' is out of range (sgd/adam)"),
    (["--set", "DISTILLATION.init=zeros"], "DISTILLATION.init = 'zeros' is out of range (noise/real/mean)"),
    (["--set", "DISTILLATION.outer_loop=0"], "DISTILLATION.outer_loop = 0 is out of range"),
    (["--set", "MODEL.network=resnet"], "MODEL.network = 'resnet' is out of range (seed/convnet)"),
    (["--set", "DISTILLATION.matched_layers=conv"], "DISTILLATION.matched_layers = 'conv' is out of range (all/head)"),
    (["--set", "MODEL.network=convnet", "--set", "DISTILLATION.splat=true"], "needs --pytorch"),
    (["--pytorch", "--set", "MODEL.network=convnet"], "DISTILLATION.splat=true"),
    (["--config", "/nonexistent/x.ini"], "cannot read config /nonexistent/x.ini"),
])
def test_bad_settings_name_the_problem(argv, fragment):
    with pytest.raises(SettingsError) as e:
        load_settings(argv)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_key_in_a_config_file(tmp_path: Path):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[DISTILLATION]\nnum_pointz = 3\n")
    with pytest.raises(SettingsError, match=r"unknown key DISTILLATION.num_pointz"):
        load_settings(["--config", str(cfg)])


@pytest.mark.parametrize("args, fragment", [
    (["--set", "MODEL.dist_lr=-0.1"], "MODEL.dist_lr"),
    (["--depth", "9"], "invalid choice"),
    (["--set", "MNIST.dataset_dir=/nonexistent"], "MNIST not found under /nonexistent"),
])
def test_cli_rejects_bad_input_with_one_line_and_writes_nothing(tmp_path: Path, args, fragment):
    runs = tmp_path / "runs"
    proc = run_cli(["--pytorch", *args], runs)
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not runs.exists()


def test_a_checkpoint_older_than_a_key_resumes_with_that_keys_old_default():
    saved = load_settings(["--pytorch"]).to_dict()
    del saved["network"]  # written before MODEL.network existed: it ran the seed's network
    check_resumable(saved, load_settings(["--pytorch"]))
    convnet = load_settings(["--pytorch", "--set", "MODEL.network=convnet", "--set", "DISTILLATION.splat=true"])
    with pytest.raises(SettingsError, match="cannot resume: network was 'seed' in the checkpoint, now 'convnet'"):
        check_resumable(saved, convnet)


def test_a_checkpoint_resumes_in_another_clone_but_not_with_another_trajectory():
    saved = load_settings(["--pytorch"]).to_dict()
    saved["dataset_dir"] = "/elsewhere/data/mnist"  # the same MNIST, prepared by another clone
    check_resumable(saved, load_settings(["--pytorch", "--iterations", "5000"]))
    with pytest.raises(SettingsError, match="cannot resume: threshold was 75"):
        check_resumable(saved, load_settings(["--pytorch", "--set", "MNIST.threshold=100"]))
