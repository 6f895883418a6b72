"""PNG plots of a finished job: convergence, objective against each parameter, series against a step."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from search.base import Mode, Status
from search.space import Categorical, Dimension, Float, Int
from service.events import TrialRecord


def _figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas, without pyplot's global state (safe off the main thread)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def warm_up() -> None:
    """Import matplotlib and load its fonts now, so the end of a job does not wait for them."""
    fig = _figure(1, 1)
    fig.add_subplot().plot([0, 1], [0, 1], label="x")
    fig.savefig(io.BytesIO(), format="png")


def convergence(trials: list[TrialRecord], metric: str, mode: Mode, path: Path) -> Path:
    """Best objective so far against trial number (in finishing order), with every trial's value."""
    done = sorted((t for t in trials if t.finished is not None), key=lambda t: t.finished or 0.0)
    points: dict[Status, tuple[list[int], list[float]]] = {Status.OK: ([], []), Status.PRUNED: ([], [])}
    best_x, best_y, failed_x = [], [], []
    best: float | None = None
    for i, t in enumerate(done, start=1):
        if t.value is not None and math.isfinite(t.value) and t.status in points:
            points[t.status][0].append(i)
            points[t.status][1].append(t.value)
            if t.status is Status.OK and (best is None or mode.better(t.value, best)):
                best = t.value
        elif t.status is Status.FAILED:
            failed_x.append(i)
        if best is not None:
            best_x.append(i)
            best_y.append(best)
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    ax.scatter(*points[Status.OK], s=18, alpha=0.7, label="trial")
    if points[Status.PRUNED][0]:
        ax.scatter(*points[Status.PRUNED], s=18, alpha=0.5, marker="v", color="0.5", label="pruned (last report)")
    ax.step(best_x, best_y, where="post", color="C3", linewidth=2, label="best so far")
    if failed_x:
        # failed trials have no value: mark them along the bottom edge
        ax.scatter(
            failed_x, [0.03] * len(failed_x), marker="x", color="k", label="failed", transform=ax.get_xaxis_transform()
        )
    ax.set_xlabel("trial (finishing order)")
    ax.set_ylabel(metric)
    ax.set_title(f"Convergence ({mode.value} {metric})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def objective_vs_params(trials: list[TrialRecord], space: dict[str, Dimension], metric: str, path: Path) -> Path:
    """One panel per searched parameter: the objective of each finished trial against its value."""
    names = list(space)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = _figure(4.2 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    good = [t for t in trials if t.value is not None and math.isfinite(t.value) and t.status is not Status.FAILED]
    for ax, name in zip(axes.flat, names, strict=False):
        dim = space[name]
        ys = [t.value for t in good]
        if isinstance(dim, Categorical):
            labels = [str(c) for c in dim.choices]
            xs = [labels.index(str(t.params.get(name))) for t in good]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        else:
            xs = [t.params.get(name) for t in good]
            if isinstance(dim, Float | Int) and dim.log:
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.scatter(xs, ys, s=16, alpha=0.7)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"{metric} against each parameter")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def lines(
    series: dict[str, tuple[list[float], list[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
    log_y: bool = False,
) -> Path:
    """One line with markers per named series of ``(xs, ys)`` (e.g. a replica's temperature by round).

    Non-finite ``ys`` are left out (a gap in the line's markers, not a drop to zero).
    """
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for label, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, linewidth=1.5, label=label)
    if log_y:
        ax.set_yscale("log")
    if all(float(x).is_integer() for xs, _ in series.values() for x in xs):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no ticks between them
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
