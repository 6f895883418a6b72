"""NEAT: XOR quality against the NEAT paper and neat-python, throughput against neat-python's evaluators.

1. XOR quality: our `neat` strategy with `evaluate_batch` in-process (150 genomes, fitness
   4 - SSE, threshold 3.9, at most 300 generations), 20 seeds; and neat-python's own XOR
   example config run by `neat.Population.run` on the same seeds. Seeds run two at a time.
2. Throughput, one method after another on the same seed and NEAT settings (no fitness
   termination, a fixed number of generations): generations per second on CartPole-v1 (150
   genomes x 5 episodes) and on XOR for neat-python serial (`FeedForwardNetwork` + a
   gymnasium loop per genome; stock `neat.DefaultGenome` and `neat.DefaultSpeciesSet`), the
   same serial loop with our `FastGenome` and `FastSpeciesSet` (the classes our strategy uses:
   the same populations and species, faster reproduction and speciation), neat-python
   `ParallelEvaluator(2)`, our batched evaluation in-process (the strategy and
   `evaluate_batch` in one loop, no service), and a real Crucible job: a `neat` JobSpec run
   by `service.runner.run` on a local Ray with 2 worker CPUs (one batch per worker per
   generation, the task settings in the object store); and, as the floor any Ray-based
   service pays here, the same strategy calling 2 bare Ray actors directly (no runner,
   records or reporters).

    python benchmarks/neat.py            # full run (~5 min), writes benchmarks/results/neat.md
    python benchmarks/neat.py --quick    # ~1 min smoke, no file unless --write
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where this very file would
# shadow the `neat` package: put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import gymnasium as gym  # noqa: E402
import neat  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.neat_tasks import (  # noqa: E402
    XOR_INPUTS,
    XOR_OUTPUTS,
    cartpole_fitness,
    cartpole_seeds,
    evaluate_batch,
    xor_fitness,
)
from search.base import Mode, Result, SearchConfig, Status  # noqa: E402
from search.neat import NEAT_DEFAULTS, NeatStrategy, build_neat_config, resolve_neat_settings  # noqa: E402
from service.events import Reporter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "neat.md"
EPISODES = 5
MAX_GENERATIONS = 300

# neat-python's examples/xor/config-feedforward, as changes to our defaults (min_species_size and
# the initial connection are neat-python 2's defaults for keys the example leaves out).
EXAMPLE_XOR = {
    "reset_on_extinction": False,
    "genome": {"conn_delete_prob": 0.5, "node_delete_prob": 0.2, "initial_connection": "full"},
    "stagnation": {"max_stagnation": 20, "species_elitism": 2},
    "reproduction": {"min_species_size": 1, "survival_threshold": 0.2},
}


# -- fitness functions for neat-python (one genome at a time) ------------------------------------


def xor_genome(genome: Any, config: Any) -> float:
    """neat-python's XOR example fitness."""
    net = neat.nn.FeedForwardNetwork.create(genome, config)
    fitness = 4.0
    for xi, xo in zip(XOR_INPUTS, XOR_OUTPUTS, strict=True):
        fitness -= (net.activate(xi)[0] - xo) ** 2
    return fitness


_ENV: Any = None


def cartpole_genome(genome: Any, config: Any) -> float:
    """Mean CartPole-v1 return over the generation's episodes (one env per process, reused)."""
    global _ENV
    if _ENV is None:
        _ENV = gym.make("CartPole-v1")
    net = neat.nn.FeedForwardNetwork.create(genome, config)
    returns = []
    for seed in cartpole_seeds(config.bench_seed, config.bench_generation, EPISODES):
        obs, _ = _ENV.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action = 1 if net.activate(obs.tolist())[0] > 0.5 else 0
            obs, reward, terminated, truncated, _ = _ENV.step(action)
            total += reward
            done = terminated or truncated
        returns.append(total)
    return sum(returns) / len(returns)


GENOME_FITNESS = {"xor": xor_genome, "cartpole": cartpole_genome}
DIGITS = 9
"""Throughput runs round every fitness to 9 decimals, for every method: the batched sums and
sigmoids differ from neat-python's in the last bit, and NEAT's ties and sorts would amplify
that into different evolutions; rounded, all methods evolve the same populations (except
ParallelEvaluator: pickling neat-python's genome config advances its node-id counter)."""


class Clock(neat.reporting.BaseReporter):
    """Time and population fitness at each generation's post_evaluate (the same hook for all methods)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.fitness_sums: list[float] = []
        self.bests: list[float] = []
        self.eval_seconds: list[float] = []  # neat-python's own loop: each generation's evaluation

    def post_evaluate(self, config: Any, population: dict, species: Any, best_genome: Any) -> None:
        self.times.append(time.perf_counter())
        self.fitness_sums.append(sum(g.fitness for g in population.values()))
        self.bests.append(best_genome.fitness)


# -- XOR quality ---------------------------------------------------------------------------------


def xor_ours(seed: int) -> tuple[bool, int]:
    s = NeatStrategy(SearchConfig(space={}, mode=Mode.MAX, seed=seed,
                                  options={"task": "xor", "generations": MAX_GENERATIONS}))  # fmt: skip
    while not s.done():
        for p in s.ask(1):
            s.tell(Result(p.trial_id, p.params, metrics=evaluate_batch({"task": "xor", **p.params})))
    return s.ended == "solved", len(s.generation_stats())


def xor_example(seed: int) -> tuple[bool, int]:
    config = build_neat_config(resolve_neat_settings(EXAMPLE_XOR, "xor"), neat.DefaultGenome, neat.DefaultSpeciesSet)
    random.seed(seed)
    pop = neat.Population(config)
    clock = Clock()
    pop.add_reporter(clock)

    def evaluate(genomes: list, cfg: Any) -> None:
        for _, g in genomes:
            g.fitness = xor_genome(g, cfg)

    try:
        best = pop.run(evaluate, MAX_GENERATIONS)
    except neat.CompleteExtinctionException:
        return False, len(clock.times)
    return best.fitness >= config.fitness_threshold, len(clock.times)


def _quality_job(args: tuple[str, int]) -> tuple[bool, int]:
    torch.set_num_threads(1)
    method, seed = args
    return xor_ours(seed) if method == "ours" else xor_example(seed)


def xor_quality(seeds: int) -> dict[str, list[tuple[bool, int]]]:
    out = {}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for method in ("ours", "example"):
            out[method] = list(pool.map(_quality_job, [(method, s) for s in range(seeds)]))
            print(f"xor {method}: {out[method]}", flush=True)
    return out


# -- throughput ----------------------------------------------------------------------------------


def throughput_settings() -> dict[str, Any]:
    return {"fitness_threshold": None}


def neat_python(task: str, gens: int, seed: int, workers: int, ours: bool = False) -> Clock:
    """neat-python's own loop: serial (workers=0) or ParallelEvaluator(workers).

    Stock ``DefaultGenome`` and ``DefaultSpeciesSet``, or with ``ours`` the classes our strategy uses.
    """
    stock = (None, None) if ours else (neat.DefaultGenome, neat.DefaultSpeciesSet)
    config = build_neat_config(resolve_neat_settings(throughput_settings(), task), *stock)
    config.bench_seed = seed
    random.seed(seed)
    pop = neat.Population(config)
    clock = Clock()
    pop.add_reporter(clock)
    fitness = GENOME_FITNESS[task]
    parallel = neat.ParallelEvaluator(workers, fitness) if workers else None

    def evaluate(genomes: list, cfg: Any) -> None:
        cfg.bench_generation = pop.generation
        started = time.perf_counter()
        if parallel is not None:
            parallel.evaluate(genomes, cfg)
        else:
            for _, g in genomes:
                g.fitness = fitness(g, cfg)
        clock.eval_seconds.append(time.perf_counter() - started)
        for _, g in genomes:
            g.fitness = round(g.fitness, DIGITS)

    try:
        pop.run(evaluate, gens)
    finally:
        if parallel is not None:
            parallel.close()
    return clock


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, DIGITS) if k.startswith("fitness.") else v for k, v in metrics.items()}


def crucible(task: str, gens: int, seed: int) -> Clock:
    """Our strategy + evaluate_batch in one process, one batch per generation (no service, no Ray)."""
    options = {"task": task, "batches": 1, "generations": gens, "neat": throughput_settings()}
    s = NeatStrategy(SearchConfig(space={}, mode=Mode.MAX, seed=seed, options=options))
    clock = Clock()
    s.add_reporter(clock)
    extra = {"task": task, "episodes": EPISODES, "dtype": "float64"}
    while not s.done():
        for p in s.ask(1):
            s.tell(Result(p.trial_id, p.params, metrics=_rounded(evaluate_batch({**extra, **p.params}))))
    return clock


# -- Crucible's real path: a `neat` job on Ray workers -------------------------------------------


def bench_xor(batch: Any, config: dict) -> list[float]:
    """XOR fitness rounded to DIGITS (the job's user fitness function, run on the Ray workers)."""
    return [round(v, DIGITS) for v in xor_fitness(batch)]


def bench_cartpole(batch: Any, config: dict) -> list[float]:
    """CartPole fitness rounded to DIGITS (the job's user fitness function, run on the Ray workers)."""
    return [round(v, DIGITS) for v in cartpole_fitness(batch, config)[0]]


class RoundClock(Reporter):
    """A Crucible reporter: time and fitness at each generation's end (the runner's ``on_round`` hook)."""

    def __init__(self, pop_size: int) -> None:
        self.clock, self.pop_size = Clock(), pop_size

    def on_round(self, index: int, stats: dict[str, Any]) -> None:
        self.clock.times.append(time.perf_counter())
        self.clock.fitness_sums.append(stats["mean"] * self.pop_size)
        self.clock.bests.append(stats["best"])


JOB_WALL: dict[str, float] = {}
NOP_ROUND_TRIP: dict[str, list[float]] = {}  # median seconds of one empty call to each of the 2 bare actors, together
SERIAL_EVAL: dict[str, list[float]] = {}  # median seconds of neat-python's serial evaluation of one generation


def crucible_ray(task: str, gens: int, seed: int) -> Clock:
    """A `neat` JobSpec through `service.runner.run` on local Ray with 2 workers (task: a rounding function)."""
    from service.runner import ensure_ray, run
    from service.spec import JobSpec

    ensure_ray(num_cpus=2)
    n_in, n_out = {"xor": (2, 1), "cartpole": (4, 1)}[task]
    settings = {**throughput_settings(), "genome": {"num_inputs": n_in, "num_outputs": n_out}}
    spec = JobSpec.from_dict({
        "name": f"bench-{task}", "strategy": "neat", "task": "function", "seed": seed,
        "budget": {"trials": gens, "parallel": 2},
        "fixed": {"function": f"benchmarks.neat:bench_{task}", "episodes": EPISODES, "dtype": "float64"},
        "strategy_options": {"neat": settings},
    })  # fmt: skip
    clock = RoundClock(150)
    result = run(spec, progress=False, tracking=False, reporters=[clock])
    if result.count(Status.FAILED):
        raise RuntimeError(f"{task}: failed batches: {[t.reason for t in result.trials if t.reason]}")
    JOB_WALL[task] = result.wall_seconds
    return clock.clock


def ray_floor(task: str, gens: int, seed: int) -> Clock:
    """Ray's own floor: the strategy driving 2 plain Ray actors directly (no runner, no records, no hooks)."""
    import ray

    from service.runner import ensure_ray

    ensure_ray(num_cpus=2)
    evaluator = ray.remote(num_cpus=1)(_Evaluator)
    actors = [evaluator.remote() for _ in range(2)]
    options = {"task": task, "batches": 2, "generations": gens, "neat": throughput_settings()}
    s = NeatStrategy(SearchConfig(space={}, mode=Mode.MAX, seed=seed, options=options))
    clock = Clock()
    s.add_reporter(clock)
    extra = {"task": task, "episodes": EPISODES, "dtype": "float64"}
    try:
        ray.get([a.nop.remote() for a in actors])
        trips = []
        for _ in range(200):  # a round trip to both actors with no work at all
            started = time.perf_counter()
            ray.get([a.nop.remote() for a in actors])
            trips.append(time.perf_counter() - started)
        NOP_ROUND_TRIP.setdefault(task, []).append(statistics.median(trips[20:]))
        while not s.done():
            proposals = s.ask(2)
            refs = [a.evaluate.remote({**extra, **p.params}) for a, p in zip(actors, proposals, strict=False)]
            s.idle()  # speciation while the actors evaluate, as the runner does
            for p, metrics in zip(proposals, ray.get(refs), strict=True):
                s.tell(Result(p.trial_id, p.params, metrics=metrics))
    finally:
        for a in actors:
            ray.kill(a)
    return clock


class _Evaluator:
    """A bare Ray actor (made remote in :func:`ray_floor`): rounded `evaluate_batch` fitness."""

    def __init__(self) -> None:
        torch.set_num_threads(1)

    def evaluate(self, config: dict[str, Any]) -> dict[str, float]:
        return _rounded(evaluate_batch(config))

    def nop(self) -> None:
        return None


METHODS = {
    "neat-python serial": lambda task, gens, seed: neat_python(task, gens, seed, 0),
    "neat-python serial with our FastGenome and FastSpeciesSet": lambda task, gens, seed: neat_python(
        task, gens, seed, 0, ours=True
    ),
    "neat-python ParallelEvaluator(2)": lambda task, gens, seed: neat_python(task, gens, seed, 2),
    "Crucible batched, in-process (no service)": crucible,
    "Crucible job on Ray, 2 workers": crucible_ray,
    "floor: the strategy on 2 bare Ray actors (no runner)": ray_floor,
}


def rates(task: str, clock: Clock) -> dict[str, float]:
    """Rates over generations 1..N-1 (generation 0 warms every method up)."""
    elapsed = clock.times[-1] - clock.times[0]
    out = {"gens": len(clock.times) - 1, "seconds": elapsed, "gens_per_s": (len(clock.times) - 1) / elapsed}
    out["best"] = clock.bests[-1]
    if task == "cartpole":
        out["steps_per_s"] = sum(clock.fitness_sums[1:]) * EPISODES / elapsed
    return out


def _same(a: list[float], b: list[float]) -> bool:
    """Equal fitness sums every generation (to 1e-9 relative: a job's sum is its mean x 150)."""
    return len(a) == len(b) and all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


def throughput(task: str, gens: int, seed: int, rounds: int = 1) -> dict[str, dict[str, float]]:
    """Every method on the same work, ``rounds`` times interleaved; per method the round of median rate."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in METHODS}
    for r in range(rounds):
        serial = None
        for name, method in METHODS.items():
            clock = method(task, gens + 1, seed)
            serial = serial or clock
            if clock is serial:
                SERIAL_EVAL.setdefault(task, []).append(statistics.median(clock.eval_seconds[1:]))
            out = rates(task, clock)
            out["same"] = float(_same(clock.fitness_sums, serial.fitness_sums))
            runs[name].append(out)
            print(f"{task} round {r} {name}: {json.dumps({k: round(v, 3) for k, v in out.items()})}", flush=True)
    median = {}
    for name, outs in runs.items():
        ranked = sorted(outs, key=lambda o: o["gens_per_s"])
        median[name] = dict(ranked[len(ranked) // 2], same=float(all(o["same"] for o in outs)))
        median[name]["all_rates"] = [o["gens_per_s"] for o in outs]
    return median


# -- report --------------------------------------------------------------------------------------


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


def versions() -> str:
    return (f"python {platform.python_version()}, neat-python {neat.__version__}, torch {torch.__version__}, "
            f"gymnasium {gym.__version__}, numpy {np.__version__}")  # fmt: skip


def quality_table(quality: dict[str, list[tuple[bool, int]]]) -> str:
    rows = ["| method | solved | mean generations | mean evaluations | median evaluations | generations by seed |",
            "|---|---|---|---|---|---|",
            "| NEAT paper (Stanley & Miikkulainen 2002), 100 runs | 100% | 32 | 4,755 | - | - |",
            "| neat-python XOR example (its docs) | - | ~66 | ~10,050 | - | - |"]  # fmt: skip
    labels = {"ours": "Crucible `neat`, defaults", "example": "neat-python 2.0 XOR example config, `Population.run`"}
    for method, runs in quality.items():
        solved = [g for ok, g in runs if ok]
        mean_g = statistics.fmean(solved) if solved else float("nan")
        med = statistics.median(g * 150 for g in solved) if solved else float("nan")
        by_seed = " ".join(str(g) if ok else f"({g})" for ok, g in runs)
        rows.append(f"| {labels[method]} | {len(solved)}/{len(runs)} | {mean_g:.1f} | {mean_g * 150:,.0f} | "
                    f"{med:,.0f} | {by_seed} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def throughput_table(task: str, results: dict[str, dict[str, float]]) -> str:
    base = results["neat-python ParallelEvaluator(2)"]["gens_per_s"]
    serial = results["neat-python serial"]["gens_per_s"]
    steps = task == "cartpole"
    head = "| method | generations/s | vs ParallelEvaluator(2) | vs serial |" + (" env steps/s |" if steps else "")
    rounds = max(len(r["all_rates"]) for r in results.values())
    head += " best fitness at the end | same populations as serial |" + (" rates by round |" if rounds > 1 else "")
    rows = [head, "|---" * (6 + steps + (rounds > 1)) + "|"]
    for name, r in results.items():
        row = f"| {name} | {r['gens_per_s']:.2f} | {r['gens_per_s'] / base:.2f}x | {r['gens_per_s'] / serial:.2f}x |"
        if steps:
            row += f" {r['steps_per_s']:,.0f} |"
        row += f" {r['best']:.3f} | {'yes' if r['same'] else 'no'} |"
        if rounds > 1:
            row += " " + " ".join(f"{x:.1f}" for x in r["all_rates"]) + " |"
        rows.append(row)
    return "\n".join(rows) + "\n"


def overhead_line(task: str, results: dict[str, dict[str, float]]) -> str:
    """What one generation costs through the Ray job beyond the same work in-process."""
    ray_ms = 1000 / results["Crucible job on Ray, 2 workers"]["gens_per_s"]
    local_ms = 1000 / results["Crucible batched, in-process (no service)"]["gens_per_s"]
    serial_ms = 1000 / results["neat-python serial"]["gens_per_s"]
    floor_ms = 1000 / results["floor: the strategy on 2 bare Ray actors (no runner)"]["gens_per_s"]
    return (f"Per generation: Crucible job on Ray {ray_ms:.1f} ms, the strategy on 2 bare Ray actors "
            f"{floor_ms:.1f} ms, the same strategy and evaluation in-process {local_ms:.1f} ms, "
            f"neat-python serial {serial_ms:.1f} ms; the job's wall time, worker start "
            f"included, was {JOB_WALL.get(task, float('nan')):.1f} s. "
            f"A round trip to the 2 bare actors with no work at all: {_median_ms(NOP_ROUND_TRIP, task)} ms; "
            f"neat-python's serial evaluation of one generation: {_median_ms(SERIAL_EVAL, task)} ms "
            "(medians).\n")  # fmt: skip


def _median_ms(values: dict[str, list[float]], task: str) -> str:
    return f"{1000 * statistics.median(values[task]):.2f}" if values.get(task) else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~1 minute: 4 seeds, fewer generations")
    parser.add_argument("--write", action="store_true", help="write the results file even with --quick")
    parser.add_argument("--no-write", action="store_true", help="never write the results file")
    parser.add_argument("--skip-quality", action="store_true", help="throughput only")
    args = parser.parse_args(argv)
    seeds = 4 if args.quick else 20
    gens = {"xor": 10, "cartpole": 3} if args.quick else {"xor": 60, "cartpole": 20}
    rounds = {"xor": 1 if args.quick else 5, "cartpole": 1}  # XOR rounds take ~1 s: repeat them against noise
    torch.set_num_threads(1)
    gc.freeze()  # the imports' objects never need collecting; keeps gen-2 GC pauses out of the timings
    start = time.perf_counter()
    quality = {} if args.skip_quality else xor_quality(seeds)
    thr = {task: throughput(task, n, seed=0, rounds=rounds[task]) for task, n in gens.items()}
    elapsed = time.perf_counter() - start
    text = ""
    if quality:
        text += f"### XOR: generations to solve ({seeds} seeds, 0..{seeds - 1})\n\n" + quality_table(quality) + "\n"
    for task in gens:
        what = f"150 genomes x {EPISODES} episodes" if task == "cartpole" else "150 genomes, 4 cases"
        what += f"; {gens[task]} generations after a warm-up one"
        if rounds[task] > 1:
            what += f"; {rounds[task]} rounds of all methods, interleaved: each method's median round"
        text += f"### Throughput: {task} ({what})\n\n"
        text += throughput_table(task, thr[task]) + "\n" + overhead_line(task, thr[task]) + "\n"
    print("\n" + text + f"benchmark wall time {elapsed:.0f} s")
    if args.no_write or (args.quick and not args.write):
        return 0
    old = RESULTS.read_text() if RESULTS.exists() else ""
    notes = old.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in old else "\n"
    defaults = json.dumps({k: v for k, v in NEAT_DEFAULTS.items() if k != "genome"}, sort_keys=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# NEAT: XOR quality and evaluation throughput\n\n"
        f"Generated by `python benchmarks/neat.py` on {datetime.date.today().isoformat()}.\n\n"
        f"- machine: {machine()}\n- versions: {versions()}\n"
        f"- our NEAT defaults (besides `genome`, see `search/_neat_settings.py`): `{defaults}`\n"
        "- XOR quality: `evaluate_batch` as the runner would call it (float32), at most "
        f"{MAX_GENERATIONS} generations; a run in parentheses did not solve XOR\n"
        "- throughput: `evaluate_batch` in float64 on CPU, one torch thread per process, every fitness "
        f"rounded to {DIGITS} decimals for every method so that they evolve the same populations (last "
        "column); generation 0 is a warm-up (for the Ray job it includes starting the worker actors), "
        "left out of the rates; the benchmark's own processes run `gc.freeze()` after their imports\n"
        '- "Crucible job on Ray, 2 workers": `service.runner.run(spec, progress=False, tracking=False)` of a '
        "`neat` JobSpec (task `function` = this file's rounding wrapper around `xor_fitness` / "
        "`cartpole_fitness`, `budget.parallel` 2) on `ray.init(num_cpus=2)`; timed at the runner's "
        "`on_round` hook, i.e. when a generation's last batch has been told to the strategy\n"
        f"- benchmark wall time: {elapsed:.0f} s\n\n" + text + "<!-- notes -->" + notes
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
