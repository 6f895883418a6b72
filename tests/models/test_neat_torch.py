"""Batched NEAT evaluation against neat-python's own FeedForwardNetwork."""

from __future__ import annotations

import json
import random
import time

import neat
import numpy as np
import pytest
import torch
from neat.graphs import feed_forward_layers

from models._neat_layout import Columns, lay_out
from models.neat_torch import (
    _ACT_CODE,
    _AGG_CODE,
    ACTIVATIONS,
    AGGREGATIONS,
    _problem,
    compile_genomes,
    evaluate_genomes,
    feed_forward_layers_fast,
    genome_to_dict,
)
from search._neat_genome import columns_to_dicts, genome_columns
from search._neat_settings import ACTIVATION_NAMES, AGGREGATION_NAMES
from search.neat import build_neat_config, resolve_neat_settings

EVERYTHING = {
    "pop_size": 40,
    "genome": {
        "num_hidden": 1,
        "initial_connection": "partial_direct 0.6",
        "activation_default": "random",
        "activation_options": list(ACTIVATION_NAMES),
        "activation_mutate_rate": 0.3,
        "aggregation_default": "random",
        "aggregation_options": list(AGGREGATION_NAMES),
        "aggregation_mutate_rate": 0.3,
        "node_add_prob": 0.6,
        "node_delete_prob": 0.1,
        "conn_add_prob": 0.8,
        "conn_delete_prob": 0.1,
        "enabled_mutate_rate": 0.2,
        "response_mutate_rate": 0.5,
        "response_mutate_power": 0.5,
    },
}


def mutated_population(settings: dict, task: str, seed: int, rounds: int) -> tuple[list, object]:
    """Genomes from a real neat-python population after `rounds` rounds of mutation."""
    config = build_neat_config(resolve_neat_settings(settings, task))
    state = random.getstate()
    random.seed(seed)
    try:
        genomes = list(neat.Population(config).population.values())
        for _ in range(rounds):
            for g in genomes:
                g.mutate(config.genome_config)
    finally:
        random.setstate(state)
    return genomes, config


def reference(genomes: list, config: object, X: np.ndarray) -> np.ndarray:
    out = []
    for g in genomes:
        net = neat.nn.FeedForwardNetwork.create(g, config)
        out.append([net.activate(list(map(float, x))) for x in X])
    return np.array(out)


@pytest.fixture(scope="module")
def wild():
    """A population using every activation and aggregation, hidden nodes and disabled links."""
    genomes, config = mutated_population(EVERYTHING, "xor", seed=3, rounds=8)
    return genomes, config


def test_supported_sets_match_neat_python_and_settings():
    assert set(ACTIVATIONS) == set(neat.activations.ActivationFunctionSet().functions) == set(ACTIVATION_NAMES)
    assert set(AGGREGATIONS) == set(neat.aggregations.AggregationFunctionSet().functions) == set(AGGREGATION_NAMES)


def test_population_covers_the_hard_cases(wild):
    genomes, config = wild
    dicts = [genome_to_dict(g, config) for g in genomes]
    assert sum(len(d["nodes"]) > 1 for d in dicts) > 30  # hidden nodes
    assert sum(not c[3] for d in dicts for c in d["connections"]) > 20  # disabled connections
    used = {(n["activation"], n["aggregation"]) for d in dicts for n in d["nodes"].values()}
    assert {a for a, _ in used} == set(ACTIVATION_NAMES)
    assert {a for _, a in used} == set(AGGREGATION_NAMES)
    # some nodes sit on no input->output path
    pruned = sum(len(g.get_pruned_copy(config.genome_config).nodes) < len(g.nodes) for g in genomes)
    assert pruned > 0


def test_matches_feed_forward_network_float64(wild):
    genomes, config = wild
    X = np.random.default_rng(0).normal(0.0, 1.5, size=(24, 2))
    ours = evaluate_genomes([genome_to_dict(g, config) for g in genomes], X, dtype=torch.float64).numpy()
    ref = reference(genomes, config, X)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_matches_feed_forward_network_float32(wild):
    genomes, config = wild
    X = np.random.default_rng(1).uniform(-1.0, 1.0, size=(16, 2))
    ours = evaluate_genomes([genome_to_dict(g, config) for g in genomes], X).numpy()
    ref = reference(genomes, config, X)
    assert ours.dtype == np.float32
    close = np.isclose(ours, ref, rtol=1e-3, atol=1e-3)
    assert close.mean() > 0.99  # float32 rounding can flip a clamp or a max far downstream


def test_json_round_trip_and_mixed_sizes():
    small, small_cfg = mutated_population({}, "xor", seed=1, rounds=1)
    big, big_cfg = mutated_population(EVERYTHING, "xor", seed=2, rounds=12)
    genomes = small[:5] + big[:5]
    dicts = [genome_to_dict(g, small_cfg) for g in genomes]
    assert json.loads(json.dumps(dicts)) == dicts
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    batch = compile_genomes(json.loads(json.dumps(dicts)), dtype=torch.float64)
    assert batch.keys == [g.key for g in genomes]
    np.testing.assert_allclose(batch.activate(X).numpy(), reference(genomes, big_cfg, X), rtol=1e-9, atol=1e-9)


def test_multiple_outputs_and_per_genome_inputs():
    genomes, config = mutated_population({"genome": {"node_add_prob": 0.5}}, "wine", seed=4, rounds=4)
    genomes = genomes[:12]
    X = np.random.default_rng(2).normal(size=(len(genomes), 5, 13))  # each genome its own rows
    ours = compile_genomes([genome_to_dict(g, config) for g in genomes], dtype=torch.float64).activate(X).numpy()
    assert ours.shape == (12, 5, 3)
    for i, g in enumerate(genomes):
        np.testing.assert_allclose(ours[i], reference([g], config, X[i])[0], rtol=1e-9, atol=1e-9)


def test_own_layering_equals_neat_python(wild):
    genomes, config = wild
    gc = config.genome_config
    for g in genomes:
        links = [c.key for c in g.connections.values() if c.enabled]
        expected, _ = feed_forward_layers(gc.input_keys, gc.output_keys, links)
        assert feed_forward_layers_fast(gc.input_keys, gc.output_keys, links) == expected


def test_cycle_and_unconnected_output_read_zero_like_neat_python():
    node = {"bias": 0.5, "response": 1.0, "activation": "identity", "aggregation": "sum"}
    cyclic = {"key": 1, "inputs": [-1], "outputs": [0, 1], "nodes": {"0": node, "1": node, "2": node, "3": node},
              "connections": [[-1, 2, 1.0, True], [2, 3, 1.0, True], [3, 2, 1.0, True], [3, 0, 1.0, True]]}  # fmt: skip
    out = evaluate_genomes([cyclic], [[2.0]]).tolist()
    assert out == [[[0.0, 0.5]]]  # output 0 waits on a cycle forever; output 1 is a "bias neuron"


def test_bad_genomes_fail_clearly():
    node = {"bias": 0.0, "response": 1.0, "activation": "sigmoid", "aggregation": "sum"}
    good = {"key": 1, "inputs": [-1], "outputs": [0], "nodes": {"0": node}, "connections": [[-1, 0, 1.0, True]]}
    weird = json.loads(json.dumps(good)) | {"key": 2}
    weird["nodes"]["0"]["activation"] = "swish"
    with pytest.raises(ValueError, match=r"genome 2, node 0: `activation` must be one of .*'swish'"):
        compile_genomes([good, weird])
    other = dict(good, key=3, inputs=[-1, -2])
    with pytest.raises(ValueError, match="genome 3"):
        compile_genomes([good, other])
    with pytest.raises(ValueError, match=r"shape \(B, 1\)"):
        compile_genomes([good]).activate([[1.0, 2.0]])
    with pytest.raises(ValueError, match="empty"):
        compile_genomes([])


def test_device_argument():
    genomes, config = mutated_population({}, "xor", seed=5, rounds=3)
    dicts = [genome_to_dict(g, config) for g in genomes[:20]]
    X = [[0.0, 1.0], [1.0, 1.0]]
    cpu = compile_genomes(dicts, device=torch.device("cpu"))
    assert cpu.device.type == "cpu" and cpu.activate(X).device.type == "cpu"
    if torch.cuda.is_available():  # the same code path on the GPU
        gpu = compile_genomes(dicts, device="cuda")
        np.testing.assert_allclose(gpu.activate(X).cpu().numpy(), cpu.activate(X).numpy(), rtol=1e-5, atol=1e-6)


def test_speed_150_xor_genomes(capsys):
    genomes, config = mutated_population({}, "xor", seed=6, rounds=5)
    dicts = [genome_to_dict(g, config) for g in genomes]
    X = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    compile_genomes(dicts).activate(X)  # warm up
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        compile_genomes(dicts).activate(X)
        times.append(time.perf_counter() - t0)
    best = min(times)
    with capsys.disabled():
        print(f"\n150 XOR genomes, compile + evaluate: {1e3 * best:.2f} ms (best of 7)")
    assert best < 0.05  # loose: typically ~1.5 ms on one CPU thread


def test_batch_layout_equals_each_genome_laid_out_alone(wild):
    genomes, config = wild
    gc = config.genome_config
    dicts = [genome_to_dict(g, config) for g in genomes]
    layout = lay_out(dicts, list(gc.input_keys), _ACT_CODE, _AGG_CODE, _problem)
    for g, genome in enumerate(genomes):
        links = [c.key for c in genome.connections.values() if c.enabled]
        alone = feed_forward_layers_fast(gc.input_keys, gc.output_keys, links)
        for i, (_, _, _, _, nodes) in enumerate(layout.layers):
            mine = nodes[0] == g
            expected = sorted(alone[i]) if i < len(alone) else []
            assert nodes[1][mine].tolist() == list(range(len(expected)))  # positions 0..n-1
            assert nodes[2][mine].tolist() == [genome.nodes[k].bias for k in expected]  # in key order
            fan_in = [sum(1 for c in links if c[1] == k) for k in expected]
            assert nodes[6][mine].tolist() == fan_in


def test_all_links_disabled_reads_the_bias_like_neat_python():
    genomes, config = mutated_population({}, "xor", seed=6, rounds=2)
    for g in genomes[:4]:
        for c in g.connections.values():
            c.enabled = False
    X = np.array([[0.0, 1.0], [1.0, 1.0]])
    ours = evaluate_genomes([genome_to_dict(g, config) for g in genomes[:4]], X, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, reference(genomes[:4], config, X), rtol=1e-12, atol=1e-12)


def _same_layout(a, b) -> None:
    assert a.n_slots == b.n_slots and np.array_equal(a.out_slots, b.out_slots) and len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert la[:3] == lb[:3]
        for xa, xb in zip((*la[3], *la[4]), (*lb[3], *lb[4]), strict=True):
            assert np.array_equal(xa, xb) and xa.dtype.kind == xb.dtype.kind


def test_columns_lay_out_and_evaluate_exactly_like_dicts(wild):
    genomes, config = wild
    dicts = [genome_to_dict(g, config) for g in genomes]
    cols = genome_columns(genomes, config)
    assert json.loads(json.dumps(cols)) == cols and columns_to_dicts(cols) == dicts
    inputs = list(config.genome_config.input_keys)
    _same_layout(lay_out(Columns(cols), inputs, _ACT_CODE, _AGG_CODE, _problem),
                 lay_out(dicts, inputs, _ACT_CODE, _AGG_CODE, _problem))  # fmt: skip
    X = np.random.default_rng(4).normal(0.0, 1.5, size=(12, 2))
    for dtype in (torch.float32, torch.float64):
        by_cols, by_dicts = compile_genomes(cols, dtype=dtype), compile_genomes(dicts, dtype=dtype)
        assert by_cols.keys == by_dicts.keys == [g.key for g in genomes]
        assert torch.equal(by_cols.activate(X), by_dicts.activate(X))
    assert by_cols.genomes == dicts and len(by_cols) == len(genomes)


def test_columns_with_all_links_disabled_or_a_lone_genome():
    genomes, config = mutated_population({}, "xor", seed=6, rounds=2)
    for c in genomes[0].connections.values():
        c.enabled = False
    X = np.array([[0.0, 1.0], [1.0, 1.0]])
    for batch in (genomes[:3], genomes[:1], genomes[1:2]):
        ours = evaluate_genomes(genome_columns(batch, config), X, dtype=torch.float64).numpy()
        np.testing.assert_allclose(ours, reference(batch, config, X), rtol=1e-12, atol=1e-12)


def test_bad_columns_fail_clearly_naming_the_genome():
    genomes, config = mutated_population({"genome": {"num_hidden": 1}}, "xor", seed=2, rounds=1)
    cols = genome_columns(genomes[:3], config)
    lost = json.loads(json.dumps(cols))
    n0 = lost["node_counts"][0]
    hidden = next(j for j in range(n0, n0 + lost["node_counts"][1]) if lost["node_keys"][j] > 0)
    for field in ("node_keys", "bias", "response", "activation", "aggregation"):
        del lost[field][hidden]  # genome 1 loses its hidden node's gene; its links still use it
    lost["node_counts"][1] -= 1
    key = genomes[1].key
    with pytest.raises(ValueError, match=rf"genome {key}: node \d+ is used by a connection but has no node gene"):
        compile_genomes(lost)
    weird = json.loads(json.dumps(cols))
    weird["functions"][weird["activation"][0]] = "swish"
    with pytest.raises(ValueError, match=rf"genome {genomes[0].key}, node \d+: `activation` must be one of .*'swish'"):
        compile_genomes(weird)
