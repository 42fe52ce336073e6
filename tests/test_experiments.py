"""The experiment runner: its plan reproduces every committed result, so `run_grid.py --all` rebuilds the table."""

import json

from configs.settings import load_settings
from experiments.run_grid import GRIDS, PLAN, RUNS, Budget, command, command_line, table


def plan_command_lines() -> set[str]:
    return {command_line(command(grid, name, flags, budget))
            for grid, names, budget in PLAN for name, flags in GRIDS[grid].items() if names is None or name in names}


def test_every_committed_result_is_a_run_of_the_plan():
    results = [json.loads(p.read_text()) for p in RUNS.glob("*/*/results.json")]
    assert results, "no committed results under experiments/runs"
    planned = plan_command_lines()
    missing = [r["command"] for r in results if r["command"] not in planned]
    assert not missing, missing


def test_table_has_one_row_per_result_with_its_command():
    rows = table().splitlines()[2:]
    assert len(rows) == len(list(RUNS.glob("*/*/results.json")))
    assert all(row.count("`python mnist_distill.py ") == 1 for row in rows)


def test_reduced_budget_evaluates_only_where_asked():
    assert Budget(300, 300, 3).flags() == ["--iterations", "300", "--eval-epochs", "300", "--eval-models", "3",
                                           "--set", "DISTILLATION.eval_iterations=0"]
    assert Budget(eval_models=5).flags() == ["--eval-models", "5"]  # default iterations: the INI's evaluations


def test_the_best_mode_config_is_the_planned_convnet_run():
    budget = ["--iterations", "300"]
    from_ini = load_settings(["--config", "configs/convnet.ini"])
    from_grid = load_settings([*GRIDS["convnet"]["meaninit"], *budget])
    assert from_ini == from_grid
