"""The seed's own code against this project's faithful mode (configs/seed.ini), at the same iterations.

    .venv/bin/python experiments/seed_faithfulness.py SEED_GIT_DIR PYTHON LABEL [--iterations 250] [--at 0,100]
    .venv/bin/python experiments/seed_faithfulness.py --table    # print and write the README's side-by-side table

Runs the seed's own ``mnist_distill.py`` (kghandour/dd3d, fetched; ``../shared/tools/seed_bench.sh`` unpacks it,
stubs open3d, writes MNIST locally and saves its synthetic set at the chosen iterations) with the interpreter
PYTHON (this project's .venv, or a Python 3.9 venv with the seed's own torch 1.13 / ME 0.5.4 stack), then
evaluates every saved set with ``mnist_distill.py --config configs/seed.ini --eval-only`` (the seed's protocol:
augmented test digits) into ``experiments/seed-code/``. Prints one JSON object. The seed re-seeds
from the clock, so each call is one draw. The faithful mode's own run at the same iterations is the
``seed-faithful`` grid of ``experiments/run_grid.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_BENCH = ROOT.parent / "shared" / "tools" / "seed_bench.sh"
# Apart from experiments/runs/ (the table of this project's runs): these evaluate sets made by the seed's code.
RUNS = ROOT / "experiments" / "seed-code"
EVAL_BUDGET = ["--eval-epochs", "300", "--eval-models", "3"]  # the seed-table rows' reduced protocol


def run_seed(seed_git: str, python: str, label: str, iterations: int, at: list[int],
             pytorch: bool) -> list[Path]:
    """The seed's code for ``iterations`` outer iterations; the sets it saved (at ``at`` and at the end)."""
    out = Path.home() / ".cache" / "seed_faithfulness" / label
    out.mkdir(parents=True, exist_ok=True)
    # One seed_bench work folder per Python (its packages are installed for that interpreter).
    env = {**os.environ, "SEED_SAVE": str(out / "seed.pt"), "SEED_SAVE_AT": ",".join(map(str, at)),
           "SEED_BENCH_DIR": str(Path.home() / ".cache" / "seed_bench" / label),
           "SEED_LOG": str(out / "seed.log")}
    cmd = ["bash", str(SEED_BENCH), seed_git, os.path.abspath(python), str(iterations),
           *(["--pytorch"] if pytorch else [])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"seed run failed: {proc.stdout.strip()[-300:]} {proc.stderr.strip()[-300:]}")
    final = out / f"seed.pt.it{iterations}.pt"
    (out / "seed.pt").replace(final)
    return [out / f"seed.pt.it{i}.pt" for i in at if i < iterations] + [final]


def evaluate(path: Path, label: str, pytorch: bool) -> dict:
    name = f"{label}-{'pytorch' if pytorch else 'me'}-{path.name.split('.')[-2]}"
    cmd = [sys.executable, "mnist_distill.py", "--config", "configs/seed.ini", "--eval-only", str(path), "--exp", name,
           "--no-log", "--set", f"DEFAULT.logging_parent={RUNS}", *EVAL_BUDGET]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluation of {path} failed: {proc.stderr.strip()[-300:]}")
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run folder: "))
    results = json.loads((run_dir / "results.json").read_text())
    results["command"] = " ".join(["python", *cmd[1:]]).replace(str(ROOT) + "/", "")
    results["seed_code"] = {"label": label, "set": path.name}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    e = results["evaluations"][-1]
    return {"set": path.name, "mean": e["mean"], "std": e["std"], "run": str(run_dir.relative_to(ROOT))}


def side_by_side() -> str:
    """Markdown: accuracy at each iteration of the seed's code per stack and of the faithful mode, with commands."""
    rows: dict[str, dict[int, str]] = {}
    commands: dict[str, set[str]] = {}
    for path in sorted(RUNS.glob("*/results.json")):
        r = json.loads(path.read_text())
        if "seed_code" not in r:
            continue
        label = f"seed's code, {r['seed_code']['label']}"
        e = r["evaluations"][-1]
        rows.setdefault(label, {})[int(r["iteration"])] = f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f}"
        commands.setdefault(label, set()).add(
            f"experiments/seed_faithfulness.py SEED_GIT_DIR PYTHON {r['seed_code']['label']} --iterations 250")
    for path in sorted((ROOT / "experiments" / "runs" / "seed-faithful").glob("*/results.json")):
        r = json.loads(path.read_text())
        for e in r["evaluations"]:
            rows.setdefault("this project, configs/seed.ini", {})[int(e["iteration"])] = (
                f"{100 * e['mean']:.1f} ± {100 * e['std']:.1f}")
        commands.setdefault("this project, configs/seed.ini", set()).add(r.get("command", ""))
    iterations = sorted({i for by_iteration in rows.values() for i in by_iteration})
    lines = ["| | " + " | ".join(f"it. {i}" for i in iterations) + " | command |",
             "| --- | " + " | ".join("---" for _ in iterations) + " | --- |"]
    for label, by_iteration in rows.items():
        cells = " | ".join(by_iteration.get(i, "–") for i in iterations)
        lines.append(f"| {label} | {cells} | " + "; ".join(f"`{c}`" for c in sorted(commands[label])) + " |")
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:] == ["--table"]:
        table = side_by_side()
        readme = ROOT / "README.md"
        start, end = "<!-- faithful:start -->", "<!-- faithful:end -->"
        head, rest = readme.read_text().split(start, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
        print(table)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seed_git", help="the seed repository's git dir (fetch github:kghandour/dd3d)")
    p.add_argument("python", help="interpreter that runs the seed's code")
    p.add_argument("label", help="name of this stack in the results, e.g. own-stack or this-stack")
    p.add_argument("--iterations", type=int, default=250)
    p.add_argument("--at", default="0,100", help="also save and evaluate the set at these iterations")
    p.add_argument("--pytorch", action="store_true", help="the seed's --pytorch path")
    args = p.parse_args()
    at = [int(v) for v in args.at.split(",") if v.strip()]
    sets = run_seed(args.seed_git, args.python, args.label, args.iterations, at, args.pytorch)
    print(json.dumps({"label": args.label, "python": args.python,
                      "evaluations": [evaluate(s, args.label, args.pytorch) for s in sets]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
