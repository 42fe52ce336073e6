"""Average the coordinates of synthetic sets distilled from one start with different seeds (a "seed soup").

Runs of one mode from the same start (herding's digits, the same point order) differ only by their draws: fresh
networks, real batches, augmentations. Their points stay in correspondence (the seed-0, -2 and -3 ten-per-class
DM-inner sets: 0.45 px apart on average), so the mean of the sets' coordinates is a set of the same shape whose
points sit where the runs agree; how it trains is what the `distribution/10-dm-inner-soup*` rows measure.

    PYTHONPATH=. .venv/bin/python experiments/average_sets.py OUT.pt SET.pt SET.pt [...]

Each SET is a checkpoint or asset (``dd3d.outputs.load_checkpoint``). OUT gets the mean points, the first set's
labels, iteration and settings, and the sources under ``averaged_from``; OUT.png its projected digit grid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from configs.settings import KEYS_ADDED_LATER
from dd3d.outputs import CheckpointError, digit_grid, load_checkpoint, save_digit_grid
from dd3d.pointsets import project_points

# Settings two sets may differ in and still be runs of one mode from one start.
FREE_SETTINGS = {"seed", "logging_parent", "experiment_name", "dataset_dir", "eval_architectures", "eval_precision",
                 "eval_compile", "eval_models", "eval_epochs", "eval_iterations", "distillation_checkpoint_dir"}


def mode_settings(state: dict[str, Any]) -> dict[str, Any]:
    """The settings that make a set what it is (``FREE_SETTINGS`` left out; keys newer than the set at their
    defaults)."""
    return {k: v for k, v in {**KEYS_ADDED_LATER, **state.get("settings", {})}.items() if k not in FREE_SETTINGS}


def average_sets(states: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """The mean of ``states``' points; each must have the first's shape, labels, iteration and mode settings."""
    first = states[0]
    for state, name in zip(states[1:], names[1:], strict=True):
        if state["points"].shape != first["points"].shape or not torch.equal(state["labels"], first["labels"]):
            raise CheckpointError(f"{name}: points / labels do not match {names[0]}'s")
        if state.get("iteration") != first.get("iteration"):
            raise CheckpointError(f"{name}: iteration {state.get('iteration')} differs from {names[0]}'s "
                                  f"{first.get('iteration')}")
        want, have = mode_settings(first), mode_settings(state)
        differ = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        if differ:
            raise CheckpointError(f"{name}: settings {', '.join(differ)} differ from {names[0]}'s (not one mode)")
    return {"points": torch.stack([s["points"] for s in states]).mean(0), "labels": first["labels"],
            "iteration": first.get("iteration", 0), "settings": first.get("settings", {}), "evaluations": [],
            "averaged_from": names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("sets", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if len(args.sets) < 2:
        parser.error("give at least two sets to average")
    try:
        states = [load_checkpoint(p, for_resume=False) for p in args.sets]
        soup = average_sets(states, [str(p) for p in args.sets])
    except CheckpointError as e:
        print(f"average_sets: {e}", file=sys.stderr)
        return 2
    torch.save(soup, args.out)
    projection = soup["settings"].get("eval_projection", "binary")
    save_digit_grid(args.out.with_suffix(".png"), digit_grid(project_points(soup["points"], projection),
                                                             soup["labels"]))
    print(f"{args.out}: the mean of {len(states)} sets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
