"""PNG pictures of a NEAT job: fitness and species over generations, and the best network.

matplotlib only (graphviz is not a dependency): the network is laid out in layers by the
longest path from the inputs over enabled connections, inputs on the left, outputs on the
right. Every function draws on a fresh ``Figure`` (no pyplot state), so it is safe off the
main thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.plots import _figure


def fitness(stats: Sequence[Mapping[str, Any]], path: Path, threshold: float | None = None) -> Path:
    """Best and mean fitness (with a band of one standard deviation) against the generation.

    Args:
        stats: Per-generation statistics (``NeatStrategy.generation_stats()`` entries).
        path: Where to write the PNG.
        threshold: The fitness threshold that ends the search, drawn as a line (``None``: none).
    """
    gens = [int(s["generation"]) for s in stats]
    best = [float(s["best"]) for s in stats]
    mean = [float(s["mean"]) for s in stats]
    std = [float(s["std"]) for s in stats]
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    low = [m - d for m, d in zip(mean, std, strict=True)]
    high = [m + d for m, d in zip(mean, std, strict=True)]
    ax.fill_between(gens, low, high, alpha=0.2, color="C0", label="mean ± std")
    ax.plot(gens, mean, color="C0", label="mean")
    ax.plot(gens, best, color="C3", linewidth=2, label="best")
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    failed = [g for g, s in zip(gens, stats, strict=True) if s.get("failed")]
    if failed:
        ax.scatter(failed, [0.03] * len(failed), marker="x", color="k", label="generation with failed genomes",
                   transform=ax.get_xaxis_transform())  # fmt: skip
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title("Fitness over generations")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def species(stats: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Species sizes over generations, stacked (one band per species id, as neat-python's ``plot_species``)."""
    gens = [int(s["generation"]) for s in stats]
    bands: dict[int, list[int]] = {}
    for i, s in enumerate(stats):
        ids = s.get("species_ids") or list(range(len(s["species_sizes"])))  # states before species ids: by rank
        for sid, size in zip(ids, s["species_sizes"], strict=True):
            bands.setdefault(int(sid), [0] * len(stats))[i] = int(size)
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    if bands:
        ax.stackplot(gens, *[bands[k] for k in sorted(bands)], linewidth=0.3, edgecolor="white")
    ax.set_xlabel("generation")
    ax.set_ylabel("genomes per species")
    ax.set_title(f"Species sizes over generations ({len(bands)} species in all)")
    ax.margins(x=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _layers(genome: Mapping[str, Any]) -> dict[int, int]:
    """Column of each node: inputs 0, hidden nodes 1 + the deepest enabled source, outputs last."""
    inputs, outputs = [int(k) for k in genome["inputs"]], [int(k) for k in genome["outputs"]]
    incoming: dict[int, list[int]] = {}
    for src, dst, _, enabled in genome["connections"]:
        if enabled:
            incoming.setdefault(int(dst), []).append(int(src))
    depth: dict[int, int] = {k: 0 for k in inputs}

    def visit(node: int, path: frozenset[int]) -> int:
        if node not in depth:
            sources = [s for s in incoming.get(node, []) if s not in path and s not in outputs]
            depth[node] = 1 + max((visit(s, path | {node}) for s in sources), default=0)
        return depth[node]

    hidden = [int(k) for k in genome["nodes"] if int(k) not in outputs]
    for node in hidden:
        visit(node, frozenset())
    last = 1 + max((depth[k] for k in hidden), default=0)
    depth.update({k: last for k in outputs})
    return depth


def network(genome: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """The genome's network: enabled connections only, weight as line width and colour.

    Args:
        genome: A genome dict (``search._neat_genome.genome_to_dict``).
        path: Where to write the PNG.
        title: Figure title.
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    depth = _layers(genome)
    columns: dict[int, list[int]] = {}
    for node in sorted(depth):
        columns.setdefault(depth[node], []).append(node)
    pos = {}
    for col, nodes in columns.items():
        for row, node in enumerate(nodes):
            pos[node] = (col, (row + 0.5) / len(nodes))
    edges = [(int(s), int(d), float(w)) for s, d, w, on in genome["connections"] if on and int(s) in pos
             and int(d) in pos]  # fmt: skip
    biggest = max((abs(w) for _, _, w in edges), default=1.0) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-biggest, vmax=biggest)
    cmap = colormaps["coolwarm"]
    n_cols = max(columns) + 1
    fig = _figure(max(5.0, 2.2 * n_cols), max(3.5, 0.55 * max(len(v) for v in columns.values()) + 1.5))
    ax = fig.add_subplot()
    for src, dst, w in edges:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        width = 0.5 + 4.0 * abs(w) / biggest
        if src == dst:
            ax.add_patch(_loop(x0, y0, width, cmap(norm(w))))
            continue
        bend = "arc3,rad=0.08" if x1 <= x0 else "arc3,rad=0.0"
        arrow = {"arrowstyle": "-|>", "color": cmap(norm(w)), "linewidth": width, "alpha": 0.85,
                 "shrinkA": 11, "shrinkB": 11, "connectionstyle": bend}  # fmt: skip
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=arrow)
    inputs, outputs = set(genome["inputs"]), set(genome["outputs"])
    for node, (x, y) in pos.items():
        kind = "input" if node in inputs else "output" if node in outputs else "hidden"
        colour = {"input": "#9ecae1", "output": "#fdae6b", "hidden": "#d9d9d9"}[kind]
        ax.scatter([x], [y], s=520, color=colour, edgecolors="k", zorder=3)
        ax.text(x, y, str(node), ha="center", va="center", fontsize=8, zorder=4)
        gene = genome["nodes"].get(str(node))
        if gene is not None and gene.get("activation") not in (None, "sigmoid"):
            ax.text(x, y - 0.045, gene["activation"], ha="center", va="top", fontsize=6, zorder=4)
    sm = fig.colorbar(_mappable(cmap, norm), ax=ax, fraction=0.04, pad=0.02)
    sm.set_label("connection weight")
    n_hidden = len(pos) - len(inputs) - len(outputs)
    ax.set_title(title or f"genome {genome.get('key')}: {n_hidden} hidden nodes, {len(edges)} enabled connections")
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(n_cols), ["inputs"] + [f"hidden {i}" for i in range(1, n_cols - 1)] + ["outputs"])
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _loop(x: float, y: float, width: float, colour: Any) -> Any:
    from matplotlib.patches import Arc

    return Arc((x, y + 0.05), 0.15, 0.08, theta1=200, theta2=340, color=colour, linewidth=width)


def _mappable(cmap: Any, norm: Any) -> Any:
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array([])
    return sm
