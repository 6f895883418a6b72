"""A batch of genome dicts laid out for :func:`models.neat_torch.compile_genomes`, with array operations.

Per genome, Python only reads the enabled connections and the genes of the nodes that are
evaluated; which nodes those are (the ones an output needs), their layers (neat-python's
``feed_forward_layers``: longest path from the inputs, Kahn's order, so nodes on a cycle are
never ready) and every node's and link's place in the padded tensors are computed for the
whole batch at once with numpy. The layout is the same as laying each genome out on its own
(:func:`models.neat_torch.feed_forward_layers_fast`): nodes of a layer in key order, each
node's links in the genome's connection order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np


class Layout:
    """Per layer, flat arrays of its links and nodes; and each genome's output slots.

    Attributes:
        layers: Per layer ``(offset, P, K, links, nodes)``: ``links`` = ``(g, p, k, source
            slot, weight)`` arrays, ``nodes`` = ``(g, p, bias, response, activation code,
            aggregation code, fan-in)`` arrays, ``P`` the widest layer and ``K`` the largest
            fan-in in the batch.
        out_slots: ``(G, n_outputs)`` slot of each output (the zero slot if it is never ready).
        n_slots: Slots in all (inputs, the zero slot, then every layer).
    """

    def __init__(self, layers: list, out_slots: np.ndarray, n_slots: int) -> None:
        self.layers, self.out_slots, self.n_slots = layers, out_slots, n_slots


def lay_out(
    genomes: Sequence[Mapping[str, Any]] | Columns,
    inputs: list[int],
    act_code: Mapping[str, int],
    agg_code: Mapping[str, int],
    problem: Any,
) -> Layout:
    """Lay out ``genomes`` sharing ``inputs``: genome dicts (``genome_to_dict``) or :class:`Columns`.

    ``problem(genome, node, what)`` builds the ``ValueError`` for a node without a gene or
    with an activation or aggregation not in ``act_code`` / ``agg_code``.
    """
    source = genomes if isinstance(genomes, Columns) else _Dicts(genomes)
    G, n_in = len(genomes), len(inputs)
    link_g, src, dst, weight = source.links()
    outputs = source.output_keys()
    n_out = outputs.shape[1]
    out_g = np.repeat(np.arange(G), n_out)

    # Nodes: every (genome, key) named by a link or an output, as one integer code.
    low = min(int(src.min(initial=0)), int(dst.min(initial=0)), int(outputs.min(initial=0)), min(inputs, default=0))
    span = max(int(src.max(initial=0)), int(dst.max(initial=0)), int(outputs.max(initial=0))) - low + 1
    codes, where = np.unique(np.concatenate([link_g * span + (src - low), link_g * span + (dst - low),
                                             out_g * span + (outputs.ravel() - low)]), return_inverse=True)  # fmt: skip
    n_links_all = len(src)
    s_at, d_at, o_at = where[:n_links_all], where[n_links_all : 2 * n_links_all], where[2 * n_links_all :]
    node_g, node_key = codes // span, codes % span + low
    is_input = np.isin(node_key, np.asarray(inputs, dtype=np.int64))

    # Required: the outputs and, backwards along enabled links, every non-input source.
    required = np.zeros(len(codes), dtype=bool)
    required[o_at] = True
    while True:
        into = required[d_at] & ~is_input[s_at]
        grow = s_at[into][~required[s_at[into]]]
        if not grow.size:
            break
        required[grow] = True
    live = required[d_at]  # the links evaluated: into a required node (its sources are required or inputs)
    s_at, d_at, weight, link_g = s_at[live], d_at[live], weight[live], link_g[live]
    from_node = ~is_input[s_at]

    # Kahn's order in rounds: a node is ready once all its required sources are.
    waiting = np.bincount(d_at[from_node], minlength=len(codes))
    fan = np.bincount(d_at, minlength=len(codes))
    depth = np.full(len(codes), -1, dtype=np.int64)
    ready = required & ~is_input & (waiting == 0)
    depth[ready] = np.where(fan[ready] > 0, 1, 0)
    inner_s, inner_d = s_at[from_node], d_at[from_node]
    while ready.any():
        out_of = ready[inner_s]
        np.maximum.at(depth, inner_d[out_of], depth[inner_s[out_of]] + 1)
        waiting -= np.bincount(inner_d[out_of], minlength=len(codes))
        ready = required & ~is_input & (depth >= 0) & (waiting == 0) & _newly(inner_d[out_of], len(codes))
    laid = np.flatnonzero(required & ~is_input & (depth >= 0) & (waiting == 0))

    # Layers per genome start at 0 if it has a node with no links in, else at depth 1.
    first = np.ones(G, dtype=np.int64)
    np.minimum.at(first, node_g[laid], depth[laid])
    layer = depth[laid] - first[node_g[laid]]
    order = np.lexsort((node_key[laid], layer, node_g[laid]))  # by genome, layer, then key
    laid, layer = laid[order], layer[order]
    group = node_g[laid] * (layer.max(initial=0) + 1) + layer
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    p = np.arange(len(laid)) - np.repeat(starts, np.diff(np.r_[starts, len(laid)]))
    n_layers = int(layer.max(initial=-1)) + 1
    widths = np.zeros(n_layers, dtype=np.int64)
    np.maximum.at(widths, layer, p + 1)
    offsets = n_in + 1 + np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    slot = np.full(len(codes), n_in, dtype=np.int64)  # the zero slot: never ready
    slot[laid] = offsets[layer] + p
    input_index = {k: j for j, k in enumerate(inputs)}
    slot[is_input] = [input_index[int(k)] for k in node_key[is_input]]
    position = np.full(len(codes), -1, dtype=np.int64)
    position[laid] = p
    node_layer = np.full(len(codes), -1, dtype=np.int64)
    node_layer[laid] = layer

    # Links into laid nodes, each node's in the genome's order (a stable sort by target).
    into_laid = node_layer[d_at] >= 0
    s_at, d_at, weight, link_g = s_at[into_laid], d_at[into_laid], weight[into_laid], link_g[into_laid]
    by_target = np.argsort(d_at, kind="stable")
    s_at, d_at, weight, link_g = s_at[by_target], d_at[by_target], weight[by_target], link_g[by_target]
    starts = np.flatnonzero(np.r_[True, d_at[1:] != d_at[:-1]]) if len(d_at) else np.zeros(0, dtype=np.int64)
    k = np.arange(len(d_at)) - np.repeat(starts, np.diff(np.r_[starts, len(d_at)]))

    genes = source.genes(node_g[laid], node_key[laid], act_code, agg_code, problem)
    fan_in = fan[laid]
    layers = []
    link_layer = node_layer[d_at]
    for i in range(n_layers):
        at = layer == i
        li = link_layer == i
        K = int(k[li].max()) + 1 if li.any() else 0
        links = (link_g[li], position[d_at[li]], k[li], slot[s_at[li]], weight[li])
        nodes = (node_g[laid][at], p[at], *(column[at] for column in genes), fan_in[at])
        layers.append((int(offsets[i]), int(widths[i]), K, links, nodes))
    out_slots = slot[o_at].reshape(G, n_out)
    return Layout(layers, out_slots, int(n_in + 1 + widths.sum()))


class Columns:
    """A batch in ``search._neat_genome.genome_columns`` form, as arrays; a sequence of its genome dicts.

    Args:
        columns: The columns dict.
    """

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self.columns = columns
        self.keys = [int(k) for k in columns["keys"]]
        self.inputs = [int(k) for k in columns["inputs"]]
        self.outputs = [int(k) for k in columns["outputs"]]
        self._dicts: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dicts()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.dicts())

    def dicts(self) -> list[dict[str, Any]]:
        """The genome dicts (made on first use)."""
        if self._dicts is None:
            from search._neat_genome import columns_to_dicts

            self._dicts = columns_to_dicts(self.columns)
        return self._dicts

    def links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(genome index, in, out, weight)`` of every enabled connection, genome by genome in its order."""
        c = self.columns
        on = np.asarray(c["enabled"], dtype=bool)
        genome = np.repeat(np.arange(len(self.keys)), np.asarray(c["connection_counts"], dtype=np.int64))
        src = np.asarray(c["in"], dtype=np.int64)
        dst = np.asarray(c["out"], dtype=np.int64)
        weight = np.asarray(c["weight"], dtype=float)
        return genome[on], src[on], dst[on], weight[on]

    def output_keys(self) -> np.ndarray:
        """``(G, n_outputs)`` output node keys (one genome config: the same for every genome)."""
        return np.tile(np.asarray(self.outputs, dtype=np.int64), (len(self.keys), 1))

    def genes(
        self,
        node_g: np.ndarray,
        node_key: np.ndarray,
        act_code: Mapping[str, int],
        agg_code: Mapping[str, int],
        problem: Any,
    ) -> tuple[np.ndarray, ...]:
        """Bias, response, activation and aggregation codes of the nodes ``(node_g, node_key)`` (checked)."""
        c = self.columns
        counts = np.asarray(c["node_counts"], dtype=np.int64)
        have_g = np.repeat(np.arange(len(self.keys)), counts)
        have_key = np.asarray(c["node_keys"], dtype=np.int64)
        low = min(int(have_key.min(initial=0)), int(node_key.min(initial=0)))
        span = max(int(have_key.max(initial=0)), int(node_key.max(initial=0))) - low + 1
        have = have_g * span + (have_key - low)
        order = np.argsort(have, kind="stable")
        want = node_g * span + (node_key - low)
        at = np.searchsorted(have[order], want).clip(max=max(len(have) - 1, 0))
        found = have[order][at] == want if len(have) else np.zeros(len(want), dtype=bool)
        if not found.all():
            j = int(np.flatnonzero(~found)[0])
            raise problem(self[int(node_g[j])], int(node_key[j]), "gene")
        row = order[at]
        codes = []
        for name, table in (("activation", act_code), ("aggregation", agg_code)):
            lookup = np.asarray([table.get(f, -1) for f in c["functions"]] or [-1], dtype=np.int64)
            code = lookup[np.asarray(c[name], dtype=np.int64)[row]] if len(row) else np.zeros(0, dtype=np.int64)
            if (code < 0).any():
                j = int(np.flatnonzero(code < 0)[0])
                raise problem(self[int(node_g[j])], int(node_key[j]), name)
            codes.append(code)
        bias = np.asarray(c["bias"], dtype=float)[row]
        response = np.asarray(c["response"], dtype=float)[row]
        return bias, response, codes[0], codes[1]


def _newly(targets: np.ndarray, n: int) -> np.ndarray:
    """A mask of the nodes that just lost a wait (the candidates to become ready now)."""
    mask = np.zeros(n, dtype=bool)
    mask[targets] = True
    return mask


class _Dicts:
    """A batch of genome dicts, read the way :func:`lay_out` reads :class:`Columns`."""

    def __init__(self, genomes: Sequence[Mapping[str, Any]]) -> None:
        self.genomes = genomes

    def links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(genome index, in, out, weight)`` of every enabled connection, genome by genome in its order."""
        enabled = [[c for c in g["connections"] if c[3]] for g in self.genomes]
        n_links = np.fromiter(map(len, enabled), dtype=np.int64, count=len(enabled))
        flat = list(chain.from_iterable(enabled))
        src = np.fromiter((int(c[0]) for c in flat), dtype=np.int64, count=len(flat))
        dst = np.fromiter((int(c[1]) for c in flat), dtype=np.int64, count=len(flat))
        weight = np.fromiter((float(c[2]) for c in flat), dtype=float, count=len(flat))
        return np.repeat(np.arange(len(enabled)), n_links), src, dst, weight

    def output_keys(self) -> np.ndarray:
        """``(G, n_outputs)`` output node keys."""
        outputs = [[int(o) for o in g["outputs"]] for g in self.genomes]
        return np.asarray(outputs, dtype=np.int64).reshape(len(outputs), -1)

    def genes(
        self,
        node_g: np.ndarray,
        node_key: np.ndarray,
        act_code: Mapping[str, int],
        agg_code: Mapping[str, int],
        problem: Any,
    ) -> tuple[np.ndarray, ...]:
        """Bias, response, activation and aggregation codes of the nodes ``(node_g, node_key)`` (checked)."""
        genomes = self.genomes
        bias, response, act, agg = [], [], [], []
        for g, key in zip(node_g.tolist(), node_key.tolist(), strict=True):
            nodes = genomes[g]["nodes"]
            gene = nodes.get(str(key))
            if gene is None:
                gene = nodes.get(key)
            if gene is None:
                raise problem(genomes[g], key, "gene")
            a, b = act_code.get(gene["activation"]), agg_code.get(gene["aggregation"])
            if a is None:
                raise problem(genomes[g], key, "activation")
            if b is None:
                raise problem(genomes[g], key, "aggregation")
            bias.append(gene["bias"])
            response.append(gene["response"])
            act.append(a)
            agg.append(b)
        return (
            np.asarray(bias, dtype=float),
            np.asarray(response, dtype=float),
            np.asarray(act, dtype=np.int64),
            np.asarray(agg, dtype=np.int64),
        )
