"""The README's across-architectures table: which evaluations count for which set, and that the README is current."""

from pathlib import Path

from experiments import run_grid
from experiments.architecture_table import architecture_table, best_evaluations

ASSETS = {"mnist_10cpc_x": ("distribution", "10-x", 100)}
SIZES = {"mnist_10cpc_x": 10, "mnist_10cpc_soup": 10}


def run(name: str, command: str, accuracies: dict[str, list[float]], iteration: int = 100, grid: str = "distribution",
        baseline: str | None = None, **settings) -> tuple[Path, dict]:
    """A finished run's (folder, results) with one evaluation of these architectures' models."""
    models = len(next(iter(accuracies.values())))
    base = {"cad_per_class": 1, "seed": 0, "eval_models": models, "eval_epochs": 1000, "augment": True,
            "augment_test": False, "eval_augment_strategy": "dc", "eval_normalize": False, "test_size": 0,
            "eval_projection": "splat", "eval_precision": "fp32"}
    evaluation = {"iteration": iteration, "architectures": {
        arch: {"accuracies": a, "mean": sum(a) / len(a), "std": 0.0} for arch, a in accuracies.items()}}
    results = {"status": "completed", "command": command, "settings": {**base, **settings},
               "evaluations": [evaluation]}
    if baseline:
        results["baseline"] = baseline
    return Path(f"experiments/runs/{grid}/20260101000000_{name}"), results


def test_pinned_iteration_eval_only_runs_and_seeds_pool_and_other_protocols_do_not_count():
    runs = [
        run("10-x", "python mnist_distill.py --exp 10-x", {"convnet": [0.90, 0.92]}, cad_per_class=10),
        run("10-x", "python mnist_distill.py --exp 10-x", {"convnet": [0.10]}, iteration=50, cad_per_class=10),
        # an --eval-only run keeps the INI's clouds per class: the asset's size comes from the file
        run("x-seed1", "python mnist_distill.py --eval-only assets/mnist_10cpc_x.pt", {"convnet": [0.94, 0.96]},
            grid="fifty-full", seed=1),
        run("x-300", "python mnist_distill.py --eval-only assets/mnist_10cpc_x.pt", {"convnet": [0.5]},
            grid="fifty-full", seed=2, eval_epochs=300),
        run("x-dsa", "python mnist_distill.py --eval-only assets/mnist_10cpc_x.pt", {"convnet": [0.5]},
            grid="fifty-full", seed=3, eval_augment_strategy="dsa"),
        run("soup-bf16", "python mnist_distill.py --eval-only assets/mnist_10cpc_soup.pt", {"mlp": [0.8, 0.8]},
            eval_precision="bf16"),
        run("soup-fp32", "python mnist_distill.py --eval-only assets/mnist_10cpc_soup.pt", {"mlp": [0.7, 0.7]}),
        run("soup-bf16-more", "python mnist_distill.py --eval-only assets/mnist_10cpc_soup.pt", {"lenet": [0.6] * 3},
            eval_precision="bf16"),
        run("soup-fp32-fewer", "python mnist_distill.py --eval-only assets/mnist_10cpc_soup.pt", {"lenet": [0.5]}),
        # a baseline's projection does not matter (real digits); older runs predate the key
        run("herding-10", "python mnist_distill.py --baseline herding", {"convnet": [0.95]}, cad_per_class=10,
            baseline="herding", eval_projection=None),
        # another seed draws other random digits: another set, not more models of the same one
        run("random-real-10", "python mnist_distill.py --baseline random-real", {"convnet": [0.93]}, cad_per_class=10,
            baseline="random-real"),
        run("random-real-10-seed1", "python mnist_distill.py --baseline random-real", {"convnet": [0.91]},
            cad_per_class=10, baseline="random-real", seed=1),
    ]
    cells = best_evaluations(runs, ASSETS, SIZES)
    mean, std, models, precision = cells[(10, "mnist_10cpc_x")]["convnet"]
    assert (models, precision) == (4, "fp32") and abs(mean - 0.93) < 1e-9 and abs(std - 0.0223607) < 1e-6
    assert cells[(10, "mnist_10cpc_soup")]["mlp"][2:] == (2, "fp32")  # fp32 on a tie
    assert cells[(10, "mnist_10cpc_soup")]["lenet"][2:] == (3, "bf16")  # more models first
    assert cells[(10, "herding")]["convnet"][0] == 0.95
    assert cells[(10, "random-real")]["convnet"][:3] == (0.93, 0.0, 1)
    assert cells[(10, "random-real (seed 1)")]["convnet"][:3] == (0.91, 0.0, 1)
    assert set(cells) == {(10, "mnist_10cpc_x"), (10, "mnist_10cpc_soup"), (10, "herding"), (10, "random-real"),
                          (10, "random-real (seed 1)")}

    rows = architecture_table(runs, ASSETS, SIZES).splitlines()
    assert rows[0].startswith("| clouds / class | set | convnet | mlp | lenet | alexnet | vgg11 | resnet18 |")
    assert rows[2].startswith("| 10 | random-real | 93.00 ± 0.00 (1) | – |")  # baselines first
    assert rows[3].startswith("| 10 | herding | **95.00 ± 0.00** (1) | – |")  # the best of its column in bold
    assert rows[4].startswith("| 10 | `assets/mnist_10cpc_x.pt` | 93.00 ± 2.24 (4) | – |")
    assert "| **60.00 ± 0.00** (3, bf16) |" in rows[5]
    assert rows[6].startswith("| 10 | random-real (seed 1) | 91.00 ± 0.00 (1) | – |")


def test_readme_holds_the_table_of_the_committed_runs():
    text = run_grid.README.read_text()
    shown = text.split(run_grid.ARCH_START, 1)[1].split(run_grid.ARCH_END, 1)[0].strip()
    assert shown == run_grid.architectures()
    assert "| 10 | herding |" in shown and "| 50 | herding |" in shown
