"""The experiment runner: its plan reproduces every committed result, so `run_grid.py --all` rebuilds the table."""

import itertools
import json

import torch

from configs.settings import load_settings
from experiments import run_grid
from experiments.run_grid import GRIDS, PLAN, Budget, command, command_line, table
from tests.conftest import TINY, run_cli


def plan_command_lines() -> set[str]:
    return {command_line(command(grid, name, flags, budget))
            for grid, names, budget in PLAN for name, flags in GRIDS[grid].items() if names is None or name in names}


def settings_args(command_line: str) -> list[str]:
    """A recorded command's flags without the set it read (--eval-only / --resume FILE): what rebuilds its settings."""
    import shlex

    args = shlex.split(command_line)[2:]
    for flag in ("--eval-only", "--resume"):
        if flag in args:
            del args[args.index(flag):args.index(flag) + 2]
    return args


def test_every_committed_result_is_a_run_of_the_plan():
    results = [r for _, r in run_grid.finished_runs()]  # an interrupted run, kept to be continued, is not one
    assert results, "no committed results under experiments/runs"
    planned = plan_command_lines()
    missing = [r["command"] for r in results if r["command"] not in planned]
    assert not missing, missing


def test_a_run_planned_twice_is_a_longer_distillation_each_time():
    # A name in two PLAN calls is replayed by both: only a longer budget (a resumed distillation) makes the
    # second call a run of its own; any other repeat evaluates the same set again under another budget.
    budgets: dict[tuple[str, str], list[Budget]] = {}
    for grid, names, budget in PLAN:
        for name in GRIDS[grid] if names is None else names:
            budgets.setdefault((grid, name), []).append(budget)
    repeated = {key: b for key, b in budgets.items() if len(b) > 1}
    assert repeated, "PLAN continues no run: this test checks nothing"
    not_longer = [key for key, b in repeated.items()
                  if any(x.iterations is None or y.iterations is None or y.iterations <= x.iterations
                         for x, y in itertools.pairwise(b))]
    assert not not_longer, not_longer


def test_every_committed_result_has_the_settings_its_command_gives_now():
    """The recorded command still means what ran: defaults may change, the commands name their base config."""
    import shlex

    from configs.settings import KEYS_ADDED_LATER, SCHEMA

    base_ignore = {"logging_parent", "dataset_dir", "mode"}
    for folder, r in run_grid.finished_runs():
        now = load_settings(settings_args(r["command"])).to_dict()
        recorded, ignore = {**KEYS_ADDED_LATER, **r["settings"]}, set(base_ignore)
        if now["network"] != "me-convnet":  # its keys mean nothing to the other networks
            ignore |= {"halo", "absent_voxels"}
        if "--eval-only" in shlex.split(r["command"]) or "--baseline" in shlex.split(r["command"]):
            # Nothing is distilled: only the set's size and the evaluation matter.
            ignore |= {field for section in ("MODEL", "DISTILLATION") for field, _ in SCHEMA[section].values()}
            ignore -= {"cad_per_class", "num_points", "classifier_lr"}
        differ = {k: (recorded.get(k), v) for k, v in now.items()
                  if k not in ignore and k in recorded and recorded[k] != v}
        assert not differ, (folder.name, differ)


def test_every_committed_distillation_would_resume_under_its_command():
    """A key added after a run was made has its old default in KEYS_ADDED_LATER, so the run's checkpoint resumes."""
    import shlex

    from configs.settings import check_resumable

    distilled = [(folder, r) for folder, r in run_grid.finished_runs()
                 if not {"--eval-only", "--baseline"} & set(shlex.split(r["command"]))]
    assert any("dist_lr_schedule" not in r["settings"] for _, r in distilled)  # runs older than that key
    for _, r in distilled:
        check_resumable(r["settings"], load_settings(settings_args(r["command"])))


def test_table_has_one_row_per_result_with_its_command():
    rows = table().splitlines()[2:]
    assert len(rows) == len(run_grid.finished_runs())
    assert all(row.count("`python mnist_distill.py ") == 1 for row in rows)


def test_reduced_budget_evaluates_only_where_asked():
    assert Budget(300, 300, 3).flags() == ["--iterations", "300", "--eval-epochs", "300", "--eval-models", "3",
                                           "--set", "DISTILLATION.eval_iterations=0"]
    assert Budget(eval_models=5).flags() == ["--eval-models", "5"]  # default iterations: the INI's evaluations


def test_a_named_grid_replays_with_plans_budgets(monkeypatch):
    monkeypatch.setattr(run_grid, "GRIDS", {"g": {"a": [], "b": [], "c": []}})
    monkeypatch.setattr(run_grid, "PLAN", [("g", ["a"], Budget(100)), ("h", None, Budget(7)), ("g", None, Budget(3)),
                                           ("g", ["a"], Budget(200))])
    assert run_grid.planned_calls(["g"], None) == [("g", ["a"], Budget(100)), ("g", ["a", "b", "c"], Budget(3)),
                                                   ("g", ["a"], Budget(200))]
    monkeypatch.setattr(run_grid, "PLAN", [("g", ["a"], Budget(100))])
    assert run_grid.planned_calls(["g"], ["a", "c"]) == [("g", ["a"], Budget(100)), ("g", ["c"], Budget())]


def test_the_best_mode_config_is_the_planned_convnet_run():
    budget = ["--iterations", "300"]
    # The grid ran before the default evaluated only at 0 and the end, and on the splat image; the method is
    # the same.
    from_ini = load_settings(["--config", "configs/convnet.ini", "--set", "DISTILLATION.eval_iterations=auto",
                              "--set", "EVALUATION.projection=binary"])
    from_grid = load_settings([*GRIDS["convnet"]["meaninit"], *budget])
    assert from_ini == from_grid


def test_a_longer_budget_continues_the_shorter_run(tmp_path, monkeypatch):
    flags = ["--pytorch", *TINY[TINY.index("--eval-epochs"):]]  # TINY without its --iterations
    first = run_cli(["--exp", "tiny", *flags, "--iterations", "3"], tmp_path / "g")
    assert first.returncode == 0, first.stderr
    monkeypatch.setattr(run_grid, "RUNS", tmp_path)
    shorter = next((tmp_path / "g").glob("*_tiny"))
    longer = Budget(5, 5, 2)
    assert run_grid.resumable("g", "tiny", command("g", "tiny", flags, longer)) == shorter
    assert run_grid.resumable("g", "tiny", command("g", "tiny", flags, Budget(3, 5, 2))) is None  # nothing to add
    other = [*flags, "--distance", "modmse"]  # a different trajectory: cannot continue
    assert run_grid.resumable("g", "tiny", command("g", "tiny", other, longer)) is None

    assert run_grid.run("g", "tiny", flags, longer, dry_run=False)
    done = run_grid.finished("g", "tiny", command_line(command("g", "tiny", flags, longer)))
    results = json.loads(done.read_text())
    assert results["iteration"] == 5 and results["resumed_from"] == str(shorter)
    assert [e["iteration"] for e in results["evaluations"]] == [0, 3, 5]  # 0 and 3 from the shorter run

    # The asset stays the pinned set (the one `final` evaluated), not the newer, longer run of the same name.
    monkeypatch.setattr(run_grid, "ROOT", tmp_path)
    monkeypatch.setattr(run_grid, "ASSETS", {"tiny": ("g", "tiny", 3)})
    (tmp_path / "assets").mkdir()
    run_grid.export_assets()
    asset = torch.load(tmp_path / "assets" / "tiny.pt", weights_only=False)
    assert asset["iteration"] == 3 and (tmp_path / "assets" / "tiny.png").exists()

    # A run stopped exactly at the target before evaluating it (a longer run interrupted there) is continued:
    # continuing it only evaluates.
    checkpoint = shorter / run_grid.CHECKPOINT_NAME
    state = torch.load(checkpoint, weights_only=False)
    state["evaluations"] = [e for e in state["evaluations"] if e["iteration"] != 3]
    torch.save(state, checkpoint)
    assert run_grid.resumable("g", "tiny", command("g", "tiny", flags, Budget(3, 5, 2))) == shorter


def test_average_sets_writes_the_mean_of_one_modes_sets_and_refuses_two_modes(tmp_path):
    from experiments import average_sets

    labels = torch.arange(10).repeat_interleave(2)
    settings = {"seed": 0, "init": "herding", "dist_lr": 0.05}
    a = {"points": torch.rand(20, 7, 3) * 27, "labels": labels, "iteration": 100, "settings": settings}
    b = {**a, "points": torch.rand(20, 7, 3) * 27, "settings": {**settings, "seed": 2}}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    assert average_sets.main([str(tmp_path / "soup.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    soup = torch.load(tmp_path / "soup.pt", weights_only=True)
    assert torch.allclose(soup["points"], (a["points"] + b["points"]) / 2)
    assert torch.equal(soup["labels"], labels) and soup["iteration"] == 100
    assert soup["averaged_from"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert (tmp_path / "soup.png").exists()
    torch.save({**b, "settings": {**settings, "dist_lr": 0.1}}, tmp_path / "c.pt")
    assert average_sets.main([str(tmp_path / "bad.pt"), str(tmp_path / "a.pt"), str(tmp_path / "c.pt")]) == 2
    assert not (tmp_path / "bad.pt").exists()


def test_pixel_ceiling_warps_an_image_as_the_point_transform_moves_its_points(mnist):
    """The pixel control's Siamese augmentation is the point method's: identity and whole-pixel shifts reproduce
    the moved points' splat exactly, and a rotation turns the image the way it turns the points."""
    from dd3d.augment import warp_images
    from dd3d.pointsets import CELL_CENTRE, RealClouds, planar_affine, splat_images, transform_points
    from experiments.pixel_ceiling import warp_theta

    real = RealClouds(mnist.train_images[:500], mnist.train_labels[:500], 75, 250)
    points = real.sample(3, 4, torch.Generator().manual_seed(0)) + torch.tensor(CELL_CENTRE)
    image = splat_images(points)
    for t in (torch.zeros(2), torch.tensor([2.0, -3.0])):
        moved = splat_images(transform_points(points, torch.eye(2), t))
        torch.testing.assert_close(warp_images(image, warp_theta(torch.eye(2), t).expand(4, 2, 3)), moved)

    def centroids(x: torch.Tensor) -> torch.Tensor:
        grid = torch.arange(28.0)
        mass = x.sum((1, 2, 3))
        return torch.stack([(x.sum(3) * grid).sum((1, 2)) / mass, (x.sum(2) * grid).sum((1, 2)) / mass], 1)

    a, t = planar_affine("rotate", torch.tensor([0.95, 0.0]))  # 13.5 degrees
    moved = centroids(splat_images(transform_points(points, a, t)))
    right = (centroids(warp_images(image, warp_theta(a, t).expand(4, 2, 3))) - moved).norm(dim=1)
    wrong = (centroids(warp_images(image, warp_theta(a.T, t).expand(4, 2, 3))) - moved).norm(dim=1)
    assert (right < wrong).all() and (right < 0.5).all(), (right, wrong)


def test_pixel_ceiling_step_moves_the_pixels_towards_the_real_embeddings(mnist):
    """One DM-inner iteration on free pixels lowers the matched distance in a fixed network and keeps --clamp's
    range."""
    import argparse

    from dd3d.pointsets import CELL_CENTRE, RealClouds, splat_images
    from experiments.pixel_ceiling import PixelDistiller

    real = RealClouds(mnist.train_images[:3000], mnist.train_labels[:3000], 75, 250)
    args = argparse.Namespace(per_class=1, batch_size=32, outer_loop=1, inner_loop=0, lr=0.0, clamp=True)
    generator = torch.Generator().manual_seed(0)
    start = splat_images(real.digits("class-mean", 1, generator) + torch.tensor(CELL_CENTRE))
    distiller = PixelDistiller(start, real, args, 0.13, 0.33, generator)
    distiller.fresh_network()
    state = generator.get_state()
    before = distiller.match_and_update()
    generator.set_state(state)  # the same real batches and draws again
    after = distiller.match_and_update()
    assert after < before
    assert not torch.equal(distiller.images.detach(), start)
    images = distiller.images.detach()
    assert 0 <= float(images.min()) and float(images.max()) <= 1
