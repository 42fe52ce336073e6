"""The README's across-architectures table: every baseline and asset by the default protocol, one column per network.

Built from the same committed results.json as the results table. A set is a baseline of some size (``--baseline``
runs) or a file in assets/ (its distillation run at the asset's pinned iteration, or an ``--eval-only
assets/NAME.pt`` run).
A cell holds that set's models of that architecture by the default protocol (1000 epochs, DC's augmentation, clean
full test set, raw pixels, the splat projection): mean ± std over the models of every run with its own evaluation
seed (for the random-real and kmeans baselines the seed also picks the digits: another seed is another row), fp32
unless bf16 has more; the best cell of each column within a size is in bold.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

ARCHITECTURES = ("convnet", "mlp", "lenet", "alexnet", "vgg11", "resnet18")
BASELINES = ("class-mean", "random-real", "herding", "kmeans")
SEEDED_BASELINES = ("random-real", "kmeans")  # their digits depend on DEFAULT.seed: another seed is another set

Evaluation = tuple[float, float, int, str]  # mean, std, models, precision


def default_protocol(settings: dict, baseline: bool) -> bool:
    """Whether a run's evaluations follow the protocol the issue's targets are stated in. A key a run predates
    (None) had its default then; the projection only matters for clouds (real digits are the same image)."""
    return (settings.get("eval_epochs") == 1000 and not settings.get("augment_test") and settings.get("augment", True)
            and settings.get("eval_augment_strategy") in (None, "dc") and not settings.get("eval_normalize")
            and settings.get("test_size") == 0 and (baseline or settings.get("eval_projection") == "splat"))


def run_name(folder: Path) -> tuple[str, str]:
    """(grid, name) of a run folder experiments/runs/<grid>/<timestamp>_<name>."""
    return folder.parent.name, folder.name.split("_", 1)[1]


def evaluated_sets(folder: Path, results: dict, assets: dict[str, tuple[str, str, int]],
                   sizes: dict[str, int]) -> list[tuple[tuple[int, str], dict]]:
    """((clouds per class, set name), evaluation) for each evaluation of this run that is of a baseline or asset.
    ``sizes``: each file's clouds per class in assets/ (an --eval-only run's own settings keep the INI's)."""
    if "baseline" in results:
        name, seed = results["baseline"], results["settings"]["seed"]
        name += f" (seed {seed})" if name in SEEDED_BASELINES and seed != 0 else ""
        return [((int(results["settings"]["cad_per_class"]), name), e) for e in results["evaluations"]]
    args = shlex.split(results["command"])
    if "--eval-only" in args:
        path = Path(args[args.index("--eval-only") + 1])
        named = path.parent.as_posix() == "assets" and path.stem in sizes
        return [((sizes[path.stem], path.stem), e) for e in results["evaluations"]] if named else []
    return [((int(results["settings"]["cad_per_class"]), asset), e) for asset, (grid, name, iteration) in assets.items()
            if (grid, name) == run_name(folder) for e in results["evaluations"] if e["iteration"] == iteration]


def best_evaluations(runs: list[tuple[Path, dict]], assets: dict[str, tuple[str, str, int]],
                     sizes: dict[str, int]) -> dict[tuple[int, str], dict[str, Evaluation]]:
    """For each set and architecture, its models by the default protocol: those of runs with distinct evaluation
    seeds pooled (the largest evaluation per seed), in fp32 unless bf16 has more."""
    # (set, architecture, precision) -> evaluation seed -> the accuracies of its models
    models: dict[tuple[tuple[int, str], str, str], dict[int, list[float]]] = {}
    for folder, results in runs:
        settings = results["settings"]
        if "command" not in results or not default_protocol(settings, "baseline" in results):
            continue
        precision = settings.get("eval_precision") or "fp32"
        for key, evaluation in evaluated_sets(folder, results, assets, sizes):
            for arch, a in evaluation.get("architectures", {}).items():
                by_seed = models.setdefault((key, arch, precision), {})
                if len(a["accuracies"]) > len(by_seed.get(settings["seed"], [])):
                    by_seed[settings["seed"]] = a["accuracies"]
    cells: dict[tuple[int, str], dict[str, Evaluation]] = {}
    for (key, arch, precision), by_seed in sorted(models.items(), key=lambda item: item[0][2] == "fp32"):
        pooled = torch.tensor([accuracy for accuracies in by_seed.values() for accuracy in accuracies],
                              dtype=torch.float64)
        old = cells.setdefault(key, {}).get(arch)
        if old is None or len(pooled) >= old[2]:  # fp32 last: it replaces bf16 of as many models
            cells[key][arch] = (pooled.mean().item(), pooled.std(correction=0).item(), len(pooled), precision)
    return cells


def architecture_table(runs: list[tuple[Path, dict]], assets: dict[str, tuple[str, str, int]],
                       sizes: dict[str, int]) -> str:
    """Markdown: one row per set (baselines first within a size, then ``assets``' order, then the other files in
    assets/), one column per architecture. ``assets``: the files made by a run, with the run and its iteration;
    ``sizes``: every file's clouds per class."""
    cells = best_evaluations(runs, assets, sizes)
    order = {name: i for i, name in enumerate([*BASELINES, *assets])}
    keys = sorted(cells, key=lambda key: (key[0], order.get(key[1], len(order)), key[1]))
    rows = ["| clouds / class | set | " + " | ".join(ARCHITECTURES) + " |",
            "| --- | --- | " + " | ".join("---" for _ in ARCHITECTURES) + " |"]
    for size in sorted({key[0] for key in keys}):
        of_size = [key for key in keys if key[0] == size]
        best = {arch: max((cells[key][arch][0] for key in of_size if arch in cells[key]), default=None)
                for arch in ARCHITECTURES}
        for key in of_size:
            shown = []
            for arch in ARCHITECTURES:
                if arch not in cells[key]:
                    shown.append("–")
                    continue
                mean, std, models, precision = cells[key][arch]
                text = f"{100 * mean:.2f} ± {100 * std:.2f}"
                text = f"**{text}**" if mean == best[arch] else text
                shown.append(f"{text} ({models}{', bf16' if precision == 'bf16' else ''})")
            name = key[1] if key[1].split(" (")[0] in BASELINES else f"`assets/{key[1]}.pt`"
            rows.append(f"| {size} | {name} | " + " | ".join(shown) + " |")
    return "\n".join(rows)
