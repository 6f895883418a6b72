"""JobSpec loading and validation: every class of bad input names its field, echoes the value."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search.base import Mode
from search.space import Categorical, Float, Int
from service.errors import SpecError
from service.spec import Budget, JobSpec, Objective

ROOT = Path(__file__).resolve().parents[2]

GOOD = {
    "name": "t",
    "strategy": "bayes",
    "task": "digits",
    "model": "mlp",
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "budget": {"trials": 10, "parallel": 2, "max_wall_seconds": 60, "target": 0.99},
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "units": {"type": "int", "low": 16, "high": 256, "log": True},
        "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    },
    "fixed": {"epochs": 5},
    "pruning": {"kind": "median", "warmup_steps": 2},
    "resources": {"cpu": 1, "gpu": 0.5},
    "tracking": {"uri": "sqlite:///x.db", "experiment": "e"},
    "seed": 3,
}


def bad(path: str, value):
    """GOOD with one field (dotted path) replaced; value DELETE removes it."""
    d = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return d


def test_good_spec_loads_and_round_trips(tmp_path):
    spec = JobSpec.from_dict(GOOD)
    assert spec.space["lr"] == Float(1e-4, 1e-1, log=True)
    assert spec.space["units"] == Int(16, 256, log=True)
    assert spec.space["activation"] == Categorical(("relu", "tanh"))
    assert spec.mode is Mode.MAX and spec.budget.parallel == 2 and spec.resources.gpu == 0.5
    assert spec.trial_config({"lr": 0.01}) == {"epochs": 5, "lr": 0.01}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    assert JobSpec.from_yaml(path) == spec


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        # unknown keys, at every level
        ("colour", "red", "colour", "not a known field"),
        ("budget.trails", 5, "budget.trails", "not a known field"),
        ("space.lr.lo", 1, "space.lr.lo", "not a known field"),
        ("fixed.epochz", 3, "fixed.epochz", "not a hyperparameter of model 'mlp'"),
        ("space.speed", {"type": "float", "low": 0, "high": 1}, "space.speed", "not a hyperparameter"),
        # low >= high
        ("space.dropout", {"type": "float", "low": 0.4, "high": 0.1}, "space.dropout", "low < high"),
        ("space.units", {"type": "int", "low": 64, "high": 64}, "space.units", "low < high"),
        # empty choices
        ("space.activation", {"type": "categorical", "choices": []}, "space.activation.choices", "non-empty"),
        # a log range that includes 0
        ("space.lr", {"type": "float", "low": 0.0, "high": 0.1, "log": True}, "space.lr.low", "log"),
        # non-positive budgets
        ("budget.trials", 0, "budget.trials", "positive integer"),
        ("budget.parallel", -1, "budget.parallel", "positive integer"),
        ("budget.max_wall_seconds", 0, "budget.max_wall_seconds", "positive"),
        # parallel > trials
        ("budget.parallel", 11, "budget.parallel", "<= budget.trials (10)"),
        # unknown strategy / task / model / metric
        ("strategy", "grid", "strategy", "'bayes', 'random'"),
        ("task", "mnist", "task", "'digits'"),
        ("model", "resnet", "model", "'mlp'"),
        ("objective.metric", "f1", "objective.metric", "'val_accuracy'"),
        ("objective.mode", "up", "objective.mode", "'min' or 'max'"),
        # values a hyperparameter does not allow
        (
            "space.activation",
            {"type": "categorical", "choices": ["relu", "swish"]},
            "space.activation.choices[1]",
            "'leaky_relu'",
        ),
        ("space.dropout", {"type": "float", "low": 0.0, "high": 1.5}, "space.dropout.high", "[0, 1)"),
        ("fixed.epochs", 0, "fixed.epochs", "integer in [1"),
        ("space.units", {"type": "float", "low": 16, "high": 256}, "space.units.type", "'int'"),
        ("space.lr", {"type": "normal", "low": 0, "high": 1}, "space.lr.type", "'float', 'int', 'categorical'"),
        ("resources.gpu", -0.5, "resources.gpu", ">= 0"),
        ("resources.cpu", 0, "resources.cpu", "positive"),
        ("pruning.kind", "hyperband", "pruning.kind", "'median'"),
        ("seed", -1, "seed", "non-negative"),
    ],
)
def test_each_class_of_bad_input_names_field_and_value(path, value, field, says):
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(bad(path, value))
    matching = [i for i in info.value.issues if i.path == field]
    assert matching, f"no issue at {field}: {info.value}"
    text = str(matching[0])
    assert says in text
    assert repr(matching[0].value) in text  # the value is echoed


def test_all_problems_reported_at_once():
    d = bad("budget.trials", 0)
    d["task"] = "mnist"
    d["space"]["lr"]["low"] = -1.0
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(d)
    paths = {i.path for i in info.value.issues}
    assert {"budget.trials", "task", "space.lr.low"} <= paths
    assert "3 problem" in str(info.value) or len(info.value.issues) >= 3


def test_space_and_fixed_overlap_rejected():
    d = bad("fixed.lr", 0.1)
    with pytest.raises(SpecError, match="must not also be fixed"):
        JobSpec.from_dict(d)


def test_python_construction_validates_too():
    with pytest.raises(SpecError, match="budget.parallel"):
        JobSpec(name="x", task="xor", model="mlp", space={"lr": Float(1e-3, 1e-1)}, budget=Budget(trials=2, parallel=3))


def test_custom_function_spec():
    spec = JobSpec(
        name="f", objective=Objective(metric="loss", mode="min", function="pkg.mod:fn"), space={"x": Float(-1.0, 1.0)}
    )
    assert spec.task is None and spec.mode is Mode.MIN
    with pytest.raises(SpecError, match="objective.function"):
        JobSpec(
            name="f", objective=Objective(metric="loss", mode="min", function="no-colon"), space={"x": Float(-1.0, 1.0)}
        )
    with pytest.raises(SpecError, match="must be null when objective.function"):
        JobSpec(
            name="f", task="digits", objective=Objective(metric="loss", function="a.b:c"), space={"x": Float(-1.0, 1.0)}
        )


def test_example_specs_are_valid():
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples, "examples/ has no job specs"
    for path in examples:
        JobSpec.from_yaml(path)


def test_spec_imports_without_torch_ray_mlflow():
    code = (
        "import sys, service, service.spec, service.errors; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "data, path",
    [
        ({}, "name"),
        ({"name": "x", "task": []}, "task"),
        ({"name": "x", "model": {}}, "model"),
        ({"name": "x", "space": {"a": {"type": [1]}}}, "space.a.type"),
        ({"name": "x", "strategy": [1]}, "strategy"),
        ({"name": "x", "objective": {"mode": [], "metric": {}}}, "objective.mode"),
        ({"name": "x", "pruning": {"kind": {}}}, "pruning.kind"),
    ],
)
def test_values_of_the_wrong_type_are_spec_errors_not_crashes(data, path):
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(data)
    assert path in [issue.path for issue in info.value.issues]
