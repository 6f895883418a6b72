"""Annealing trainers and replica exchange against backprop, at an equal budget of work.

Task: scikit-learn digits (``models.data.load_task("digits", seed)``), one MLP for every method
(1 hidden layer of 32 tanh units, ``models.nets.build_mlp``), 5 seeds: seed ``s`` splits the
data, and every single-run method starts from the same network (init seed ``10 s``, replica
0's). Every method gets the same budget of work, counted in forward-sample equivalents (FSE):
forwarding one sample costs 1, backpropagating it 2 more (so a forward+backward pass over a
minibatch of 64 costs 192). An annealing step forwards its evaluation batch (256 samples, a new
subset every 500 steps): 256 FSE; a hybrid step adds a forward+backward pass on a minibatch of
64: 448 FSE. Monitoring (validation after each epoch) is not counted. Replica exchange runs
K = 4 chains, each with the budget of one chain, so it is compared with the best of 4
independent chains at the same total budget.

Methods (settings fixed from a short pilot on seed 100, never tuned on the 5 benchmark seeds):

* adam, sgd+momentum: ``models.train.train_mlp``, batch 64, as many epochs as the budget buys.
* boltzmann, cauchy, hybrid: ``models.anneal.train_anneal`` with their own schedules (log and
  cauchy cooling); the hybrid's eta is picked by validation accuracy on seed 100 from ETAS.
* replica exchange: strategy ``anneal`` (``search/anneal.py``) driving 4 ``Annealer`` chains
  (Boltzmann moves) in-process through ``models.anneal.run_replica``, one after another.
* best of 4 independent chains: 4 Boltzmann annealing runs (the boltzmann row's settings) from
  the same 4 initial networks as the replicas; and, as the exchange-free ablation, 4 chains
  held at the ladder's fixed temperatures. "Best" is the chain (or replica) with the highest
  validation accuracy at the end, for every group.

Also timed in the same run (one torch thread): one annealing step (perturb, forward on the
evaluation batch, Metropolis test) against one forward+backward pass on the same 256 samples,
median over many repetitions.

    python benchmarks/anneal.py            # full run (~5 min on 2 cores), writes benchmarks/results/anneal.md
    python benchmarks/anneal.py --quick    # 2 seeds, a fifth of the budget: a smoke test, no file written
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.anneal import Annealer, run_replica, train_anneal  # noqa: E402
from models.data import Task, load_task  # noqa: E402
from models.nets import build_mlp  # noqa: E402
from models.train import train_mlp  # noqa: E402
from search import make_strategy  # noqa: E402
from search.base import Result, SearchConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "anneal.md"
NET = {"hidden_layers": 1, "units": 32, "activation": "tanh"}
EVAL_BATCH = 256
MINIBATCH = 64
ANNEAL_STEPS = 500  # steps per reported epoch; a new evaluation subset each
BUDGET = 3_000_000  # FSE per chain
PILOT_SEED = 100

ADAM = {"optimizer": "adam", "lr": 1e-3, "batch_size": MINIBATCH}
SGDM = {"optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "batch_size": MINIBATCH}
ANNEAL = {**NET, "eval_batch_size": EVAL_BATCH, "anneal_steps": ANNEAL_STEPS}
BOLTZMANN = {**ANNEAL, "trainer": "boltzmann", "T0": 1e-3, "anneal_rho": 0.5}
CAUCHY = {**ANNEAL, "trainer": "cauchy", "T0": 0.3, "anneal_rho": 1.0}
HYBRID = {**ANNEAL, "trainer": "hybrid", "T0": 0.01, "anneal_rho": 1.0, "lr": 0.5, "hybrid_alpha": 0.9,
          "batch_size": MINIBATCH}  # fmt: skip
ETAS = (0.5, 0.8, 0.9, 0.95)
REPLICAS = {"replicas": 4, "t_min": 1e-5, "t_max": 1e-4, "steps": 100}


def train_loss(model: torch.nn.Module, task: Task) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(torch.tensor(task.X_train)), torch.tensor(task.y_train)).item()


def backprop(config: dict, task: Task, seed: int, budget: int) -> dict[str, float]:
    epochs = max(1, round(budget / (3 * len(task.y_train))))
    out = train_mlp({**NET, **config, "epochs": epochs}, task, seed=seed)
    m = out.metrics
    return {"test": m["test_accuracy"], "val": m["val_accuracy"], "loss": train_loss(out.model, task),
            "fse": 3 * len(task.y_train) * epochs, "steps": epochs * -(-len(task.y_train) // MINIBATCH)}  # fmt: skip


def anneal_cost(config: dict) -> int:
    return EVAL_BATCH + (3 * MINIBATCH if config["trainer"] == "hybrid" and config.get("hybrid_eta", 0.9) > 0 else 0)


def chain_epochs(config: dict, budget: int) -> int:
    return max(1, round(budget / anneal_cost(config) / ANNEAL_STEPS))


def annealing(config: dict, task: Task, seed: int, budget: int) -> dict[str, float]:
    epochs = chain_epochs(config, budget)
    out = train_anneal({**config, "epochs": epochs}, task, seed=seed)
    m = out.metrics
    return {"test": m["test_accuracy"], "val": m["val_accuracy"], "loss": train_loss(out.model, task),
            "fse": epochs * ANNEAL_STEPS * anneal_cost(config), "steps": epochs * ANNEAL_STEPS}  # fmt: skip


def replica_exchange(task: Task, seed: int, budget: int, swaps: bool = True) -> tuple[dict[str, float], list]:
    """K Boltzmann chains driven by strategy ``anneal`` (swaps=False: each held at its rung)."""
    k, steps = REPLICAS["replicas"], REPLICAS["steps"]
    rounds = max(1, chain_epochs(BOLTZMANN, budget) * ANNEAL_STEPS // steps)  # as many steps as one chain
    options = {**REPLICAS, "rounds": rounds}
    strategy = make_strategy("anneal", SearchConfig(space={}, n_trials=rounds * k, seed=seed, options=options))
    ladder = strategy.ladder
    chains: dict[int, Annealer] = {}
    last: dict[int, dict[str, Any]] = {}
    while not strategy.done():
        for p in strategy.ask(k):
            r = p.params["replica"]
            params = p.params if swaps else {**p.params, "temperature": ladder[r]}
            chains[r], metrics = run_replica({**BOLTZMANN, **params}, task, seed=seed * 10 + r, chain=chains.get(r))
            metrics.pop("__blob__")
            last[r] = metrics
            strategy.tell(Result(p.trial_id, p.params, value=metrics["energy"], metrics=metrics))
    best = max(last.values(), key=lambda m: (m["val_accuracy"], -m["val_loss"]))
    row = {"test": best["test_accuracy"], "val": best["val_accuracy"], "loss": best["train_loss"],
           "fse": k * rounds * steps * EVAL_BATCH, "steps": k * rounds * steps}  # fmt: skip
    return row, strategy.swap_stats()


def independent_chains(task: Task, seed: int, budget: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best of 4 Boltzmann annealing runs from the replicas' 4 initial networks; also chain 0 alone."""
    runs = [annealing(BOLTZMANN, task, seed * 10 + r, budget) for r in range(REPLICAS["replicas"])]
    best = dict(max(runs, key=lambda m: m["val"]))
    best["fse"], best["steps"] = sum(m["fse"] for m in runs), sum(m["steps"] for m in runs)
    return best, runs[0]


def step_cost(task: Task, reps: int) -> dict[str, float]:
    """Median wall time (us) of one step of each annealing trainer and of one forward+backward pass."""
    X, y = torch.tensor(task.X_train[:EVAL_BATCH]), torch.tensor(task.y_train[:EVAL_BATCH])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_mlp(task.n_features, task.n_classes, NET)

    def fwd_bwd(n: int) -> None:
        for _ in range(n):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(X), y).backward()

    chains = {name: Annealer({**cfg, "hybrid_eta": 0.9}, task) for name, cfg in
              (("boltzmann", BOLTZMANN), ("cauchy", CAUCHY), ("hybrid", HYBRID))}  # fmt: skip
    jobs: dict[str, Callable[[int], None]] = {"forward+backward": fwd_bwd}
    for name, chain in chains.items():
        jobs[name] = lambda n, chain=chain: chain._run([1e-4] * n)  # n steps as train_anneal runs them
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    inner = 50
    for _ in range(reps):
        for name, job in jobs.items():  # interleaved, so a burst of load hits every kind alike
            start = time.perf_counter()
            job(inner)
            samples[name].append((time.perf_counter() - start) / inner * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def summary(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, a fifth of the budget, no file written")
    parser.add_argument("--write", action="store_true", help="write the results file even with --quick")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [0, 1] if args.quick else [0, 1, 2, 3, 4]
    budget = BUDGET // 5 if args.quick else BUDGET
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.time()

    pilot = load_task("digits", seed=PILOT_SEED)
    eta_val = {eta: annealing({**HYBRID, "hybrid_eta": eta}, pilot, PILOT_SEED, budget)["val"] for eta in ETAS}
    eta = max(ETAS, key=lambda e: (eta_val[e], e))
    print(f"hybrid eta search on seed {PILOT_SEED}: {eta_val} -> eta={eta}", flush=True)

    rows: dict[str, list[dict[str, float]]] = {}
    walls: dict[str, list[float]] = {}
    swap_rates: list[list] = []

    def record(name: str, row: dict[str, float], wall: float) -> None:
        rows.setdefault(name, []).append(row)
        walls.setdefault(name, []).append(wall)

    for seed in seeds:
        task = load_task("digits", seed=seed)
        for name, run, config in (
            ("adam", backprop, ADAM),
            ("sgd+momentum", backprop, SGDM),
            ("cauchy", annealing, CAUCHY),
            (f"hybrid (eta={eta})", annealing, {**HYBRID, "hybrid_eta": eta}),
        ):
            t = time.time()
            record(name, run(config, task, seed * 10, budget), time.time() - t)  # init seed as replica 0's
        t = time.time()
        best, first = independent_chains(task, seed, budget)
        wall = time.time() - t
        record("boltzmann", first, wall / REPLICAS["replicas"])
        record("best of 4 boltzmann chains", best, wall)
        t = time.time()
        row, stats = replica_exchange(task, seed, budget)
        record("replica exchange, K=4", row, time.time() - t)
        swap_rates.append([s["rate"] for s in stats])
        t = time.time()
        row, _ = replica_exchange(task, seed, budget, swaps=False)
        record("best of 4 fixed-T chains (no swaps)", row, time.time() - t)
        print(f"seed {seed}: " + ", ".join(f"{n} {r[-1]['test']:.3f}" for n, r in rows.items()), flush=True)

    costs = step_cost(load_task("digits", seed=0), reps=15 if args.quick else 60)
    elapsed = time.time() - started
    lines = render(rows, walls, swap_rates, costs, eta, eta_val, seeds, budget, load, elapsed)
    print("\n".join(lines))
    if not args.quick or args.write:
        text = RESULTS.read_text() if RESULTS.exists() else ""
        notes = text.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in text else "\n"
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines) + "\n\n<!-- notes -->" + notes)
        print(f"wrote {RESULTS}")


def render(rows, walls, swap_rates, costs, eta, eta_val, seeds, budget, load, elapsed) -> list[str]:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    lines = [
        "# Annealing trainers and replica exchange vs backprop (digits)",
        "",
        f"Generated by `python benchmarks/anneal.py` on {datetime.date.today().isoformat()}.",
        "",
        f"- machine: {platform.system()} {platform.machine()}, {cpu_name()}, "
        f"nproc={os.cpu_count()}, load average {load:.1f} at the start (shared machine); one torch thread",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}",
        f"- task: digits, 60/20/20 split; seeds {seeds[0]}..{seeds[-1]} (split and init); MLP 64-32-10, tanh",
        f"- budget: {budget:,} forward-sample equivalents (FSE) per chain; forward = 1 per sample, backward = 2;"
        f" annealing evaluation batch {EVAL_BATCH} (new subset every {ANNEAL_STEPS} steps), minibatch {MINIBATCH}",
        f"- hybrid eta picked on seed {PILOT_SEED} by validation accuracy: "
        + ", ".join(f"eta={e}: {v:.3f}" for e, v in eta_val.items())
        + f" -> **eta={eta}**",
        f"- replica exchange: ladder {REPLICAS['t_min']:g}..{REPLICAS['t_max']:g} (geometric, K=4), "
        f"{REPLICAS['steps']} steps per round, even/odd neighbour swaps; best replica = highest validation accuracy",
        f"- benchmark wall time: {elapsed:.0f} s",
        "",
        "| method | FSE per run | steps per run | median test accuracy (min-max) | "
        "median final train loss (min-max) | wall s per run |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in rows.items():
        lines.append(
            f"| {name} | {rs[0]['fse']:,.0f} | {rs[0]['steps']:,.0f} | {summary([r['test'] for r in rs], '.3f')} | "
            f"{summary([r['loss'] for r in rs], '.2g')} | {statistics.median(walls[name]):.1f} |"
        )
    lines += ["", "Test accuracy by seed:", "", "| method | " + " | ".join(str(s) for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]  # fmt: skip
    for name, rs in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['test']:.3f}" for r in rs) + " |")
    rates = [statistics.median(x for x in col if x is not None) for col in zip(*swap_rates, strict=True)]
    lines += ["", "Replica-exchange swap acceptance per neighbouring pair (median over seeds): "
              + ", ".join(f"rungs {i}-{i + 1}: {r:.2f}" for i, r in enumerate(rates)), ""]  # fmt: skip
    fb = costs["forward+backward"]
    lines += ["| one step on 256 samples | median us | x forward+backward |", "|---|---|---|"]
    for name, us in costs.items():
        lines.append(f"| {name} | {us:.0f} | {us / fb:.2f} |")
    hybrid = next(n for n in rows if n.startswith("hybrid"))
    gap = (med("adam", "test") - med(hybrid, "test")) * 100
    re_vs = med("replica exchange, K=4", "test") - med("best of 4 boltzmann chains", "test")
    worst = max(costs[n] for n in ("boltzmann", "cauchy")) / fb
    lines += [
        "",
        "## Goals",
        "",
        f"- hybrid within 1 point of Adam's median test accuracy: gap {gap:+.1f} points -> "
        + ("**met**" if gap <= 1.0 else "**not met**"),
        f"- replica exchange >= best independent chain (median test accuracy): difference {re_vs * 100:+.1f} points -> "
        + ("**met**" if re_vs >= 0 else "**not met**"),
        f"- one annealing step <= 3x a forward+backward pass: boltzmann/cauchy up to {worst:.2f}x -> "
        + ("**met**" if worst <= 3.0 else "**not met**")
        + f" (hybrid, which includes a forward+backward pass: {costs['hybrid'] / fb:.2f}x)",
    ]
    return lines


if __name__ == "__main__":
    main()
