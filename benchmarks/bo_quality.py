"""Quality and speed of our `bayes` strategy against Optuna TPE, Optuna GP and random search.

Branin (2-D) and Hartmann6 (6-D), 40 evaluations each, 5 seeds (3 with --quick). Reports the
median simple regret (best value found minus the known global minimum) and the median wall
time of one ask+tell (the objective itself is excluded). Methods run one after another, on
one process, so that timings do not compete for the cores.

    python benchmarks/bo_quality.py            # full run, writes benchmarks/results/bo_quality.md
    python benchmarks/bo_quality.py --quick    # 3 seeds, no file written unless --write
    python benchmarks/bo_quality.py --methods bayes --bayes-options '{"xi": 0.0}' --no-write
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search import make_strategy  # noqa: E402
from search.base import Result, SearchConfig  # noqa: E402
from search.bayes import DEFAULTS  # noqa: E402
from search.space import Float  # noqa: E402

N_EVALS = 40
RESULTS = Path(__file__).resolve().parent / "results" / "bo_quality.md"

_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def branin(p: dict[str, float]) -> float:
    x1, x2 = p["x0"], p["x1"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(p: dict[str, float]) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


PROBLEMS: dict[str, tuple[Callable[[dict[str, float]], float], list[tuple[float, float]], float]] = {
    "Branin": (branin, [(-5.0, 10.0), (0.0, 15.0)], 0.397887357729738),
    "Hartmann6": (hartmann6, [(0.0, 1.0)] * 6, -3.32236801141551),
}


def run_ours(name: str, problem: str, seed: int, options: dict) -> tuple[float, list[float]]:
    func, bounds, _ = PROBLEMS[problem]
    space = {f"x{i}": Float(lo, hi) for i, (lo, hi) in enumerate(bounds)}
    strategy = make_strategy(name, SearchConfig(space=space, n_trials=N_EVALS, seed=seed, options=options))
    times, best = [], math.inf
    while not strategy.done():
        t0 = time.perf_counter()
        (proposal,) = strategy.ask(1)
        t1 = time.perf_counter()
        value = func(proposal.params)
        t2 = time.perf_counter()
        strategy.tell(Result(proposal.trial_id, proposal.params, value=value))
        times.append(t1 - t0 + time.perf_counter() - t2)
        best = min(best, value)
    return best, times


def run_optuna(sampler_name: str, problem: str, seed: int) -> tuple[float, list[float]]:
    import optuna

    func, bounds, _ = PROBLEMS[problem]
    dists = {f"x{i}": optuna.distributions.FloatDistribution(lo, hi) for i, (lo, hi) in enumerate(bounds)}
    if sampler_name == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = optuna.samplers.GPSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    times, best = [], math.inf
    for _ in range(N_EVALS):
        t0 = time.perf_counter()
        trial = study.ask(dists)
        t1 = time.perf_counter()
        value = func(trial.params)
        t2 = time.perf_counter()
        study.tell(trial, value)
        times.append(t1 - t0 + time.perf_counter() - t2)
        best = min(best, value)
    return best, times


def run_method(method: str, problem: str, seed: int, options: dict) -> tuple[float, list[float]]:
    if method == "bayes":
        return run_ours("bayes", problem, seed, options)
    if method == "random":
        return run_ours("random", problem, seed, {})
    return run_optuna({"optuna-tpe": "tpe", "optuna-gp": "gp"}[method], problem, seed)


METHODS = ["bayes", "optuna-gp", "optuna-tpe", "random"]


def versions() -> str:
    import optuna
    import scipy
    import sklearn
    import skopt

    parts = [
        f"python {platform.python_version()}",
        f"numpy {np.__version__}",
        f"scipy {scipy.__version__}",
        f"scikit-learn {sklearn.__version__}",
        f"scikit-optimize {skopt.__version__}",
        f"optuna {optuna.__version__}",
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, nproc={os.cpu_count()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds instead of 5; no file unless --write")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides --quick)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {METHODS}")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma list of {list(PROBLEMS)}")
    parser.add_argument("--bayes-options", default="{}", help="JSON options for our bayes strategy")
    parser.add_argument("--write", action="store_true", help="write the results file even with --quick")
    parser.add_argument("--no-write", action="store_true", help="never write the results file")
    args = parser.parse_args(argv)
    n_seeds = args.seeds or (3 if args.quick else 5)
    methods = args.methods.split(",")
    problems = args.problems.split(",")
    options = json.loads(args.bayes_options)
    warnings.filterwarnings("ignore")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:
        methods = [m for m in methods if not m.startswith("optuna")]
        print("optuna not installed: skipping optuna-*", file=sys.stderr)

    # Warm-up (imports of skopt / torch, first-call JIT-like costs) outside the timings.
    for method in methods:
        run_method(method, "Branin", 12345, options)

    # Seeds outermost and methods interleaved, so that a change in machine load (the cores
    # may be shared) hits every method alike.
    start = time.perf_counter()
    regrets: dict[tuple[str, str], list[float]] = {}
    times: dict[tuple[str, str], list[float]] = {}
    for problem in problems:
        for seed in range(n_seeds):
            for method in methods:
                best, ts = run_method(method, problem, seed, options)
                regrets.setdefault((problem, method), []).append(best - PROBLEMS[problem][2])
                times.setdefault((problem, method), []).extend(ts)
            print(
                f"{problem} seed {seed}: " + "  ".join(f"{m} {regrets[problem, m][-1]:.4f}" for m in methods),
                flush=True,
            )
    elapsed = time.perf_counter() - start
    rows = [
        (
            p,
            m,
            statistics.median(regrets[p, m]),
            statistics.median(times[p, m]),
            sum(times[p, m]) / n_seeds,
            regrets[p, m],
        )
        for p in problems
        for m in methods
    ]

    header = (
        "| problem | method | median regret | median ask+tell (ms) | ask+tell per run (s) | regrets by seed |\n"
        "|---|---|---|---|---|---|\n"
    )
    table = header + "".join(
        f"| {p} | {m} | {r:.6f} | {t * 1e3:.1f} | {tot:.2f} | {' '.join(f'{x:.4f}' for x in rs)} |\n"
        for p, m, r, t, tot, rs in rows
    )
    print()
    print(table)
    print(f"{N_EVALS} evaluations, {n_seeds} seeds, {elapsed:.0f} s")
    if args.no_write or (args.quick and not args.write):
        return 0
    bayes_opts = {**DEFAULTS, **options}
    text = RESULTS.read_text() if RESULTS.exists() else ""
    notes = text.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in text else "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Bayesian optimization quality: bayes vs Optuna vs random\n\n"
        f"Generated by `python benchmarks/bo_quality.py` on {datetime.date.today().isoformat()}.\n\n"
        f"- machine: {machine()}\n- versions: {versions()}\n"
        f"- {N_EVALS} evaluations per run, {n_seeds} seeds (0..{n_seeds - 1}), sequential asks (1 worker)\n"
        "- regret: best value found minus the known global minimum; median over seeds\n"
        "- ask+tell: median wall time of one ask plus one tell over all trials of all seeds "
        "(objective excluded); Optuna samplers at their defaults\n"
        f"- our bayes options: `{json.dumps(bayes_opts, sort_keys=True)}`\n"
        f"- benchmark wall time: {elapsed:.0f} s\n\n" + table + "\n<!-- notes -->" + notes
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
