"""NEAT genomes -> padded tensors, evaluated all at once on any device.

A batch of feed-forward genomes is compiled once (plain Python, per generation) into a
:class:`GenomeBatch`: every node gets a *slot* in one value tensor of shape
``(genomes, samples, slots)``. Slots ``0 .. n_in-1`` hold the inputs, slot ``n_in`` is a
constant zero (the target of padded links), then come the nodes layer by layer. Layers are
neat-python's own :func:`neat.graphs.feed_forward_layers`, aligned across genomes: layer ``l``
of every genome is evaluated together, padded to the widest layer ``P`` and the largest
fan-in ``K`` of that layer in the batch. One layer is then a handful of tensor operations
over all genomes and all samples::

    gathered = V.gather(slots of each node's inputs)      # (G, B, P, K)
    z = aggregate(gathered * weights)                     # (G, B, P)
    V[..., layer slots] = activation(bias + response * z)

There is no Python loop over genomes in :meth:`GenomeBatch.activate` (only over layers), and
the same code runs on CPU and CUDA. The outputs equal neat-python's
``neat.nn.FeedForwardNetwork`` (exactly up to float rounding; use ``dtype=torch.float64`` for
~1e-12 agreement). Nodes not on any input->output path and disabled connections are skipped
exactly as neat-python skips them; an output node that cannot be computed (a cycle in a
non-feed-forward genome) reads 0.0, as in neat-python.

Supported: every activation and aggregation neat-python 2 registers by default
(:data:`ACTIVATIONS`, :data:`AGGREGATIONS`); a custom one (``config.genome_config.add_activation``)
fails at compile time with the allowed names. NaN inputs are not guaranteed to propagate the
way Python's ``max``/``min`` clamps treat them.

The genome format that crosses machines is plain JSON data, see :func:`genome_to_dict`; a
NEAT job sends a batch as columns (``search._neat_genome.genome_columns``: the same data, a
flat list per field), which :func:`compile_genomes` lays out without a Python loop per gene.

Example:
    >>> genome = {"key": 1, "inputs": [-1, -2], "outputs": [0],
    ...           "nodes": {"0": {"bias": 0.0, "response": 1.0, "activation": "identity", "aggregation": "sum"}},
    ...           "connections": [[-1, 0, 2.0, True], [-2, 0, -1.0, True]]}
    >>> batch = compile_genomes([genome])
    >>> batch.activate([[1.0, 1.0], [0.0, 3.0]]).tolist()
    [[[1.0], [-3.0]]]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models._neat_layout import Columns, lay_out
from search._neat_genome import genome_to_dict, is_columns  # torch-free: the coordinator needn't import torch

Tensor = torch.Tensor

_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


def _clamp60(z: Tensor, scale: float) -> Tensor:
    return torch.clamp(z * scale, -60.0, 60.0)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": lambda z: torch.sigmoid(_clamp60(z, 5.0)),
    "tanh": lambda z: torch.tanh(_clamp60(z, 2.5)),
    "sin": lambda z: torch.sin(_clamp60(z, 5.0)),
    "gauss": lambda z: torch.exp(-5.0 * torch.clamp(z, -3.4, 3.4) ** 2),
    "relu": lambda z: torch.where(z > 0.0, z, torch.zeros_like(z)),
    "elu": lambda z: torch.where(z > 0.0, z, torch.exp(z) - 1.0),
    "lelu": lambda z: torch.where(z > 0.0, z, 0.005 * z),
    "selu": lambda z: torch.where(z > 0.0, _SELU_LAMBDA * z, _SELU_LAMBDA * _SELU_ALPHA * (torch.exp(z) - 1.0)),
    "softplus": lambda z: 0.2 * torch.log(1.0 + torch.exp(_clamp60(z, 5.0))),
    "identity": lambda z: z,
    "clamped": lambda z: torch.clamp(z, -1.0, 1.0),
    "inv": lambda z: torch.where(z == 0.0, torch.zeros_like(z), 1.0 / z),
    "log": lambda z: torch.log(torch.clamp(z, min=1e-7)),
    "exp": lambda z: torch.exp(torch.clamp(z, -60.0, 60.0)),
    "abs": torch.abs,
    "hat": lambda z: torch.clamp(1.0 - torch.abs(z), min=0.0),
    "square": lambda z: z * z,
    "cube": lambda z: z * z * z,
}
"""neat-python's activation functions (same clamps and scales), by name."""


def _masked(prod: Tensor, mask: Tensor, fill: float) -> Tensor:
    return torch.where(mask, prod, torch.full_like(prod, fill))


def _or_zero(value: Tensor, count: Tensor) -> Tensor:
    return torch.where(count > 0, value, torch.zeros_like(value))


def _agg_sum(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    return prod.sum(-1)  # padded links read the zero slot with weight 0


def _agg_product(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    return _masked(prod, mask, 1.0).prod(-1)


def _agg_max(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    return _or_zero(_masked(prod, mask, -math.inf).amax(-1), count)


def _agg_min(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    return _or_zero(_masked(prod, mask, math.inf).amin(-1), count)


def _agg_maxabs(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    # Python's max(x, key=abs) keeps the first of equal magnitudes; torch.argmax does too.
    first = _masked(prod.abs(), mask, -1.0).argmax(-1, keepdim=True)
    return _or_zero(prod.gather(-1, first).squeeze(-1), count)


def _agg_median(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    ordered = _masked(prod, mask, math.inf).sort(-1).values
    n = count.expand_as(ordered[..., 0]).long()
    lo = ((n - 1).clamp(min=0) // 2).unsqueeze(-1)
    hi = (n // 2).unsqueeze(-1)
    middle = (ordered.gather(-1, lo) + ordered.gather(-1, hi)).squeeze(-1) / 2.0
    return _or_zero(middle, count)


def _agg_mean(prod: Tensor, mask: Tensor, count: Tensor) -> Tensor:
    return _or_zero(prod.sum(-1) / count.clamp(min=1), count)


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "sum": _agg_sum,
    "product": _agg_product,
    "max": _agg_max,
    "min": _agg_min,
    "maxabs": _agg_maxabs,
    "median": _agg_median,
    "mean": _agg_mean,
}
"""neat-python's aggregation functions, by name: ``fn(products, mask, count) -> values``."""

_ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
_AGG_CODE = {name: i for i, name in enumerate(AGGREGATIONS)}
_ACT_NAMES = list(ACTIVATIONS)
_AGG_NAMES = list(AGGREGATIONS)


@dataclass(frozen=True)
class _Layer:
    offset: int
    width: int
    fan_in: int
    idx: Tensor  # (G, 1, P*K) slots read by each link (padding: the zero slot)
    weight: Tensor  # (G, 1, P, K) (padding: 0)
    mask: Tensor  # (G, 1, P, K) True for real links
    count: Tensor  # (G, 1, P) number of real links
    bias: Tensor  # (G, 1, P)
    response: Tensor | None  # (G, 1, P); None when every response is 1.0
    act: Tensor  # (G, 1, P) activation codes
    acts: tuple[str, ...]  # activations present among real nodes
    agg: Tensor  # (G, 1, P) aggregation codes
    aggs: tuple[str, ...]


def feed_forward_layers_fast(
    inputs: Sequence[int], outputs: Sequence[int], links: Sequence[tuple[int, int]]
) -> list[set[int]]:
    """The layers of :func:`neat.graphs.feed_forward_layers`, in O(nodes + links).

    neat-python adds a node once all its inputs are available, so a node's layer is its
    longest path from the inputs; required nodes without incoming connections ("bias
    neurons") form a first layer of their own. Nodes off every input->output path, and
    nodes on or after a cycle, are left out, as there. (neat-python's own version is
    quadratic in the connections; this one gives the same sets, see the tests.)
    """
    fan: dict[int, list[tuple[int, Any]]] = {}
    for i, o in links:
        fan.setdefault(o, []).append((i, None))
    return _layers(set(inputs), outputs, fan)


def _layers(input_set: set[int], outputs: Sequence[int], fan: Mapping[int, list[tuple[int, Any]]]) -> list[set[int]]:
    """:func:`feed_forward_layers_fast` on ``fan``: node -> its ``(source, ...)`` links."""
    required = set(outputs)
    stack = list(outputs)
    while stack:
        for i, _ in fan.get(stack.pop(), ()):
            if i not in input_set and i not in required:
                required.add(i)
                stack.append(i)
    children: dict[int, list[int]] = {}
    waiting: dict[int, int] = {}
    for n in required:
        for i, _ in fan.get(n, ()):
            if i in required:
                children.setdefault(i, []).append(n)
                waiting[n] = waiting.get(n, 0) + 1
    order = [n for n in required if n not in waiting]
    depth = {n: (1 if n in fan else 0) for n in order}
    for n in order:  # Kahn's algorithm; `order` grows while it is walked
        for c in children.get(n, ()):
            depth[c] = max(depth.get(c, 1), depth[n] + 1)
            waiting[c] -= 1
            if not waiting[c]:
                order.append(c)
    if not depth:
        return []
    first = 0 if min(depth.values()) == 0 else 1
    layers: list[set[int]] = [set() for _ in range(max(depth.values()) + 1 - first)]
    for n, d in depth.items():
        layers[d - first].add(n)
    return layers


def _problem(genome: Mapping[str, Any], node: int, what: str) -> ValueError:
    """The error for a node of ``genome`` without a gene (``what="gene"``) or with an unknown function."""
    key = genome.get("key")
    if what == "gene":
        return ValueError(f"genome {key!r}: node {node} is used by a connection but has no node gene.")
    nodes = genome["nodes"]
    gene = nodes.get(str(node), nodes.get(node))
    names = _ACT_NAMES if what == "activation" else _AGG_NAMES
    return ValueError(f"genome {key!r}, node {node}: `{what}` must be one of {names}, but got {gene[what]!r}.")


class GenomeBatch:
    """A batch of compiled genomes; :meth:`activate` evaluates all of them on all inputs.

    Build it with :func:`compile_genomes`.

    Attributes:
        genomes: The genome dicts, in batch order.
        keys: Their genome keys, in batch order.
        n_inputs: Inputs per network.
        n_outputs: Outputs per network.
        device: Where the tensors live.
        dtype: Floating dtype of the evaluation.
    """

    def __init__(
        self,
        genomes: list[Mapping[str, Any]],
        n_inputs: int,
        n_outputs: int,
        layers: list[_Layer],
        out_idx: Tensor,
        n_slots: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self._genomes = genomes
        self.keys = genomes.keys if isinstance(genomes, Columns) else [int(g["key"]) for g in genomes]
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.device = device
        self.dtype = dtype
        self._layers = layers
        self._out_idx = out_idx
        self._n_slots = n_slots

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def genomes(self) -> list[Mapping[str, Any]]:
        """The genome dicts, in batch order (from a batch sent as columns: made on first use)."""
        genomes = self._genomes
        return genomes.dicts() if isinstance(genomes, Columns) else genomes

    @property
    def depth(self) -> int:
        """Number of (padded) layers evaluated per call."""
        return len(self._layers)

    def activate(self, x: Tensor | np.ndarray | Sequence[Sequence[float]]) -> Tensor:
        """Outputs of every network on every input row.

        Args:
            x: Inputs shared by all networks, shape ``(B, n_inputs)``, or one set per network,
                shape ``(G, B, n_inputs)`` (G = ``len(self)``, e.g. each genome's own
                environment states).

        Returns:
            Tensor ``(G, B, n_outputs)`` on :attr:`device`, in :attr:`dtype`.

        Raises:
            ValueError: When ``x`` has the wrong shape.
        """
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()  # torch warns on read-only arrays (models.data freezes its arrays)
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        G = len(self.keys)
        if x.dim() == 2 and x.shape[1] == self.n_inputs:
            x = x.unsqueeze(0).expand(G, -1, -1)
        if x.dim() != 3 or x.shape[0] != G or x.shape[2] != self.n_inputs:
            raise ValueError(
                f"`x` must have shape (B, {self.n_inputs}) or ({G}, B, {self.n_inputs}), but got {tuple(x.shape)}."
            )
        B = x.shape[1]
        values = x.new_zeros((G, B, self._n_slots))
        values[:, :, : self.n_inputs] = x
        for layer in self._layers:
            P, K = layer.width, layer.fan_in
            if K:
                read = values.gather(2, layer.idx.expand(G, B, P * K)).view(G, B, P, K)
                z = _aggregate(layer, read * layer.weight)
            else:
                z = values.new_zeros((G, B, P))
            pre = layer.bias + (z if layer.response is None else layer.response * z)
            values[:, :, layer.offset : layer.offset + P] = _activate(layer, pre)
        return values.gather(2, self._out_idx.expand(G, B, self.n_outputs))


def _aggregate(layer: _Layer, prod: Tensor) -> Tensor:
    """Each node's aggregation over its links (one function per name present in the layer)."""
    out = AGGREGATIONS[layer.aggs[0]](prod, layer.mask, layer.count)
    for name in layer.aggs[1:]:
        out = torch.where(layer.agg == _AGG_CODE[name], AGGREGATIONS[name](prod, layer.mask, layer.count), out)
    return out


def _activate(layer: _Layer, pre: Tensor) -> Tensor:
    """Each node's activation (one function per name present in the layer)."""
    out = ACTIVATIONS[layer.acts[0]](pre)
    for name in layer.acts[1:]:
        out = torch.where(layer.act == _ACT_CODE[name], ACTIVATIONS[name](pre), out)
    return out


def compile_genomes(
    genomes: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> GenomeBatch:
    """Lay out a batch of genome dicts as padded tensors on ``device``.

    Args:
        genomes: Dicts from :func:`genome_to_dict` (or their JSON round trip), all with the
            same ``inputs`` and the same number of ``outputs``; or a batch as columns
            (``search._neat_genome.genome_columns``, what a NEAT job sends its workers).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a ``torch.device``.
        dtype: Floating dtype (``torch.float32``; ``torch.float64`` to match neat-python to ~1e-12).

    Returns:
        The compiled batch.

    Raises:
        ValueError: Genomes with different inputs/outputs, an unsupported activation or
            aggregation, or a connection to a node without a gene (the message names the genome).
    """
    device = torch.device(device)
    genomes = Columns(genomes) if is_columns(genomes) else list(genomes)
    if not len(genomes):
        raise ValueError("`genomes` must hold at least one genome, but got an empty batch.")
    if isinstance(genomes, Columns):
        inputs, n_out = genomes.inputs, len(genomes.outputs)  # one genome config: shared by construction
    else:
        inputs = [int(k) for k in genomes[0]["inputs"]]
        n_out = len(genomes[0]["outputs"])
        for g in genomes:
            if [int(k) for k in g["inputs"]] != inputs or len(g["outputs"]) != n_out:
                raise ValueError(
                    f"every genome must have inputs={inputs} and {n_out} outputs, but genome {g.get('key')!r} has "
                    f"inputs={list(g['inputs'])}, outputs={list(g['outputs'])}."
                )
    G, n_in, zero = len(genomes), len(inputs), len(inputs)
    layout = lay_out(genomes, inputs, _ACT_CODE, _AGG_CODE, _problem)
    layers = [
        _make_layer(offset, P, K, G, zero, links, nodes, device, dtype) for offset, P, K, links, nodes in layout.layers
    ]
    out = torch.as_tensor(layout.out_slots, dtype=torch.int64).unsqueeze(1).to(device)
    return GenomeBatch(genomes, n_in, n_out, layers, out, layout.n_slots, device, dtype)


def _make_layer(
    offset: int,
    P: int,
    K: int,
    G: int,
    zero: int,
    links: tuple[list, ...],
    nodes: tuple[list, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> _Layer:
    """One layer's padded tensors, from flat lists of its links and nodes (few numpy/torch calls)."""
    lg, lp, lk, ls, lw = links
    ng, np_, nb, nr, na, nagg, nc = nodes
    acts = tuple(_ACT_NAMES[c] for c in np.unique(na).tolist())
    aggs = tuple(_AGG_NAMES[c] for c in np.unique(nagg).tolist())
    floats = np.zeros((2, G, P))
    floats[1] = 1.0
    floats[:, ng, np_] = (nb, nr)
    ft = torch.from_numpy(floats).to(device=device, dtype=dtype).unsqueeze(2)  # (2, G, 1, P)
    unit_response = bool(np.all(np.asarray(nr) == 1.0))
    ints = np.zeros((3, G, P), dtype=np.int64)
    ints[1], ints[2] = _ACT_CODE["identity"], _AGG_CODE["sum"]
    ints[:, ng, np_] = (nc, na, nagg)
    it = torch.from_numpy(ints).to(device).unsqueeze(2)  # (3, G, 1, P): count, act, agg
    idx = np.full((G, P * K), zero, dtype=np.int64)
    weight = np.zeros((G, P * K))
    if K:
        flat = np.asarray(lp) * K + np.asarray(lk)
        idx[lg, flat] = ls
        weight[lg, flat] = lw
    return _Layer(
        offset=offset,
        width=P,
        fan_in=K,
        idx=torch.from_numpy(idx).to(device).unsqueeze(1),
        weight=torch.from_numpy(weight).to(device=device, dtype=dtype).view(G, 1, P, K),
        mask=torch.arange(K, device=device) < it[0].unsqueeze(-1),
        count=it[0],
        bias=ft[0],
        response=None if unit_response else ft[1],
        act=it[1],
        acts=acts,
        agg=it[2],
        aggs=aggs,
    )


def evaluate_genomes(
    genomes: Sequence[Mapping[str, Any]],
    x: Tensor | np.ndarray | Sequence[Sequence[float]],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Compile and activate in one call: outputs ``(G, B, n_outputs)``.

    Example:
        >>> g = {"key": 3, "inputs": [-1], "outputs": [0], "connections": [],
        ...      "nodes": {"0": {"bias": 0.0, "response": 1.0, "activation": "sigmoid", "aggregation": "sum"}}}
        >>> evaluate_genomes([g], [[5.0]]).tolist()
        [[[0.5]]]
    """
    return compile_genomes(genomes, device=device, dtype=dtype).activate(x)


__all__ = [
    "ACTIVATIONS",
    "AGGREGATIONS",
    "GenomeBatch",
    "compile_genomes",
    "evaluate_genomes",
    "feed_forward_layers_fast",
    "genome_to_dict",
]
