from pathlib import Path

import pytest

from configs.settings import REPO_ROOT, SettingsError, check_resumable, load_settings
from tests.conftest import run_cli


def test_defaults_are_dc_convnet_matching_on_the_minkowski_path():
    s = load_settings([])
    assert (s.pytorch, s.network, s.net_depth, s.splat, s.reinit_net, s.init) == (False, "me-convnet", 3, True, True,
                                                                                 "herding")
    assert (s.batch_size, s.dist_opt, s.dist_optimizer, s.dist_lr) == (64, "ours", "adam", 0.05)
    assert (s.cad_per_class, s.num_points, s.total_iterations, s.threshold) == (1, 250, 400, 75)
    assert (s.eval_epochs, s.eval_models, s.augment, s.augment_test) == (1000, 5, True, False)
    assert s.eval_iterations == (400,)  # the final set only
    assert (s.augment_match, s.eval_projection, s.eval_architectures) == (True, "splat", ("convnet",))
    assert s.dataset_dir == REPO_ROOT / "data" / "mnist"
    # --pytorch gives the same method in its dense implementation; the seed's networks are asked for by name.
    assert load_settings(["--pytorch"]).network == "convnet"
    assert load_settings(["--network", "seed"]).net_depth == 2


def test_init_names_a_start_or_a_saved_set_relative_to_the_repository(tmp_path):
    assert load_settings([]).init_set is None
    s = load_settings(["--set", "DISTILLATION.init=assets/mnist_1cpc_dm_inner.pt"])
    assert s.init == "assets/mnist_1cpc_dm_inner.pt" and s.init_set == REPO_ROOT / "assets" / "mnist_1cpc_dm_inner.pt"
    assert load_settings(["--set", f"DISTILLATION.init={tmp_path}"]).init_set == tmp_path


def test_flags_and_set_override_the_ini():
    s = load_settings(["--pytorch", "--iterations", "20", "--distance", "ours", "--exp", "x",
                       "--set", "MNIST.threshold=10", "--set", "EVALUATION.augment=false", "--no-log"])
    assert s.pytorch and s.net_depth == 3  # auto depth follows the path
    assert (s.total_iterations, s.dist_opt, s.experiment_name, s.threshold) == (20, "ours", "x", 10)
    assert s.augment is False and s.log is False
    assert s.eval_iterations == (20,)
    assert load_settings(["--pytorch", "--depth", "2"]).net_depth == 2
    auto = load_settings(["--iterations", "20", "--set", "DISTILLATION.eval_iterations=auto"])
    assert auto.eval_iterations == (0, 5, 10, 15, 20)


def test_explicit_eval_iterations_keep_the_end():
    s = load_settings(["--iterations", "10", "--set", "DISTILLATION.eval_iterations=3,0,50"])
    assert s.eval_iterations == (0, 3, 10)


def test_user_config_only_needs_changed_keys(tmp_path: Path):
    cfg = tmp_path / "mine.ini"
    cfg.write_text("[MODEL]\ndist_lr = 0.5\n")
    s = load_settings(["--config", str(cfg)])
    assert s.dist_lr == 0.5 and s.batch_size == 64


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
    (["--set", "DISTILLATION.init=zeros"],
     "DISTILLATION.init = 'zeros' is out of range (noise/real/mean/herding/kmeans or an existing saved set: a .pt or "
     "a run folder)"),
    (["--set", "DISTILLATION.init= "], "DISTILLATION.init = '' is out of range"),
    (["--set", "DISTILLATION.outer_loop=0"], "DISTILLATION.outer_loop = 0 is out of range"),
    (["--set", "MODEL.network=resnet"], "MODEL.network = 'resnet' is out of range (seed/convnet/me-convnet)"),
    (["--set", "DISTILLATION.matched_layers=conv"], "DISTILLATION.matched_layers = 'conv' is out of range (all/head)"),
    (["--no-pytorch", "--network", "convnet", "--set", "DISTILLATION.splat=true"], "needs the PyTorch path"),
    (["--pytorch", "--network", "me-convnet", "--set", "DISTILLATION.splat=true"], "not with --pytorch"),
    (["--no-pytorch", "--network", "me-convnet", "--set", "DISTILLATION.splat=false"],
     "network me-convnet reads splatted occupancy"),
    (["--no-pytorch", "--network", "me-convnet", "--set", "MODEL.halo=-1"], "MODEL.halo = -1 is out of range"),
    (["--set", "MODEL.absent_voxels=zero"], "MODEL.absent_voxels = 'zero' is out of range (skip/background)"),
    (["--pytorch", "--set", "MODEL.network=convnet", "--set", "DISTILLATION.splat=false"], "DISTILLATION.splat=true"),
    (["--config", "/nonexistent/x.ini"], "cannot read config /nonexistent/x.ini"),
    (["--set", "DISTILLATION.network_pool=128x3,128x5"], "network_pool = '128x3,128x5': bad entry '128x5'"),
    (["--set", "DISTILLATION.network_pool=128x3-batch"], "bad entry '128x3-batch'"),
    (["--set", "DISTILLATION.network_pool=wide"], "bad entry 'wide'"),
    (["--set", "DISTILLATION.network_pool=lenet,vgg11"], "bad entry 'vgg11'"),
    (["--set", "DISTILLATION.network_pool=128x3,mlp", "--set", "DISTILLATION.matched_layers=head"],
     "mlp/lenet/alexnet need DISTILLATION.matched_layers=all"),
    (["--set", "DISTILLATION.network_pool=\u00b2x3"], "bad entry '\u00b2x3'"),
    (["--set", "DISTILLATION.class_ce=-1"], "DISTILLATION.class_ce = -1.0 is out of range (>= 0)"),
    (["--set", "DISTILLATION.class_ce=1"], "class_ce = 1.0 is out of range (a classification term beside"),
    (["--set", "DISTILLATION.class_ce=1", "--set", "DISTILLATION.objective=distribution", "--set",
      "DISTILLATION.network_pool=128x3,mlp"], "class_ce reads a ConvNet's classifier: a pool of ConvNets only"),
    (["--set", "DISTILLATION.dm_layers=some"], "DISTILLATION.dm_layers = 'some' is out of range (last/all)"),
    (["--set", "DISTILLATION.dm_layers=all"], "dm_layers = 'all' is out of range (every block's embedding: needs"),
    (["--set", "DISTILLATION.dm_layers=all", "--set", "DISTILLATION.objective=distribution", "--set",
      "DISTILLATION.network_pool=128x3,mlp"], "dm_layers=all reads a ConvNet's blocks: a pool of ConvNets only"),
    (["--set", "DISTILLATION.dm_kernel=cubic"], "DISTILLATION.dm_kernel = 'cubic' is out of range (linear/gaussian)"),
    (["--set", "DISTILLATION.dm_kernel=gaussian"], "dm_kernel = 'gaussian' is out of range (a kernel between"),
    (["--set", "DISTILLATION.dm_kernel=gaussian", "--set", "DISTILLATION.objective=distribution", "--set",
      "DISTILLATION.dm_layers=all"], "the last embedding alone: needs DISTILLATION.dm_layers=last"),
    (["--set", "DISTILLATION.pixel_match=-1"], "DISTILLATION.pixel_match = -1.0 is out of range (>= 0)"),
    (["--set", "DISTILLATION.pixel_match=1"], "pixel_match = 1.0 is out of range (the mean splat image beside"),
    (["--set", "DISTILLATION.network_pool=64x2", "--set", "DISTILLATION.reinit_net=false"],
     "needs DISTILLATION.reinit_net"),
    (["--config", "configs/seed.ini", "--set", "DISTILLATION.network_pool=64x2"],
     "needs MODEL.network convnet or me-convnet"),
    (["--set", "DISTILLATION.objective=dm"], "DISTILLATION.objective = 'dm' is out of range (gradient/distribution)"),
    (["--set", "DISTILLATION.inner_data=test"], "DISTILLATION.inner_data = 'test' is out of range (synthetic/real)"),
    (["--config", "configs/seed.ini", "--set", "DISTILLATION.objective=distribution"],
     "distribution matching embeds with DC's ConvNet"),
    (["--set", "EVALUATION.precision=fp16"], "EVALUATION.precision = 'fp16' is out of range (fp32/bf16)"),
    (["--set", "DISTILLATION.augment_kinds=shift,flip"], "'shift,flip' names an unknown transform 'flip'"),
    (["--set", "DISTILLATION.augment_kinds= , "], "DISTILLATION.augment_kinds = ',' is empty"),
    (["--set", "DISTILLATION.augment_ranges=wide"], "DISTILLATION.augment_ranges = 'wide' is out of range (dsa/dc)"),
    (["--set", "DISTILLATION.augment_kinds=cutout", "--set", "DISTILLATION.splat=false", "--config",
      "configs/seed.ini", "--set", "DISTILLATION.augment_match=true"], "cutout drops points from the splatted"),
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
    seed = ["--config", str(REPO_ROOT / "configs" / "seed.ini"), "--pytorch"]
    saved = load_settings(seed).to_dict()
    del saved["network"]  # written before MODEL.network existed: it ran the seed's network
    check_resumable(saved, load_settings(seed))
    convnet = load_settings([*seed, "--set", "MODEL.network=convnet", "--set", "DISTILLATION.splat=true"])
    with pytest.raises(SettingsError, match="cannot resume: network was 'seed' in the checkpoint, now 'convnet'"):
        check_resumable(saved, convnet)


def test_a_checkpoint_resumes_in_another_clone_but_not_with_another_trajectory():
    saved = load_settings(["--pytorch"]).to_dict()
    saved["dataset_dir"] = "/elsewhere/data/mnist"  # the same MNIST, prepared by another clone
    check_resumable(saved, load_settings(["--pytorch", "--iterations", "5000"]))
    with pytest.raises(SettingsError, match="cannot resume: threshold was 75"):
        check_resumable(saved, load_settings(["--pytorch", "--set", "MNIST.threshold=100"]))


def test_seed_ini_is_the_seeds_method():
    s = load_settings(["--config", str(REPO_ROOT / "configs" / "seed.ini")])
    assert (s.network, s.pytorch, s.net_depth, s.splat, s.init) == ("seed", False, 2, False, "noise")
    assert (s.reinit_net, s.outer_loop, s.inner_loop, s.matched_layers, s.augment_match) == (False, 1, 0, "all", False)
    assert (s.dist_opt, s.dist_optimizer, s.dist_lr, s.dist_momentum, s.batch_size) == ("modmse", "sgd", 0.1, 0.5, 256)
    assert (s.total_iterations, s.eval_models, s.eval_epochs, s.augment, s.augment_test) == (2500, 5, 1000, True, True)
    assert load_settings(["--config", str(REPO_ROOT / "configs" / "seed.ini"), "--pytorch"]).net_depth == 3


def test_an_ini_written_for_the_seed_loads(tmp_path: Path):
    """The seed's section and key names (its ShapeNet / PointNet++ keys are accepted and ignored)."""
    cfg = tmp_path / "seed_style.ini"
    cfg.write_text(
        f"[DEFAULT]\nlogging_parent = {tmp_path / 'logs'}\ntensorboard_folder_name = tb\nlog_folder_name = logs\n"
        "experiment_name = old\nnum_workers = 4\n\n[SHAPENET]\ndataset_dir = /x\nnum_points = 250\n\n"
        "[MODEL]\ncheckpoint_dir = /x\nload_ckpt_name = None\nepoch=100\nbatch_size = 128\ndist_opt = modmse\n"
        "dist_lr = 0.1\nclassifier_lr = 0.01\ndist_beta_1=0.9\ndist_beta_2=0.999\ndist_momentum=0.5\nnum_votes = 3\n\n"
        f"[DISTILLATION]\nexport_folder_name = output/\ncad_per_class = 2\ntotal_iterations = 10\n"
        f"save_cad_every = 5\ndistillation_checkpoint_dir = {tmp_path / 'ckpt'}\n\n[MNIST]\ndataset_dir = /data/m\n")
    s = load_settings(["--config", str(cfg)])
    assert (s.experiment_name, s.batch_size, s.cad_per_class, s.total_iterations) == ("old", 128, 2, 10)
    assert s.distillation_checkpoint_dir == tmp_path / "ckpt" and s.dataset_dir == Path("/data/m")
    assert load_settings([]).distillation_checkpoint_dir is None


def test_distillation_checkpoint_dir_that_is_a_file_is_refused(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsError, match="DISTILLATION.distillation_checkpoint_dir = .*a folder, not a file"):
        load_settings(["--set", f"DISTILLATION.distillation_checkpoint_dir={blocker}"])


def test_augment_kinds_are_shift_scale_rotate_by_default_in_one_spelling():
    assert load_settings([]).augment_kinds == "shift,scale,rotate"
    assert load_settings(["--set", "DISTILLATION.augment_kinds=Cutout, shift,cutout"]).augment_kinds == "cutout,shift"


def test_network_pool_lists_its_members_and_is_off_by_default():
    from configs.settings import PoolMember, parse_network_pool

    assert load_settings([]).network_pool == ""
    assert parse_network_pool("") == ()
    assert parse_network_pool(" 128x3, 64X2-none ,") == (PoolMember(128, 3, "instance"), PoolMember(64, 2, "none"))
    assert [str(m) for m in parse_network_pool("128x3,64x2-none")] == ["128x3", "64x2-none"]
    assert [str(m) for m in parse_network_pool("LeNet, 64x2,mlp")] == ["lenet", "64x2", "mlp"]
    # Stored in one spelling, so a resume compares pools, not how they were typed.
    assert load_settings(["--set", "DISTILLATION.network_pool= 64X2-NONE, 128x3 ,"]).network_pool == "64x2-none,128x3"
