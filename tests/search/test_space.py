"""Space <-> scikit-optimize translation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search.space import Categorical, Float, Int, from_skopt, to_skopt, to_skopt_point

SPACE = {
    "lr": Float(1e-4, 1e-1, log=True),
    "dropout": Float(0.0, 0.5),
    "units": Int(16, 256, log=True),
    "layers": Int(1, 4),
    "act": Categorical(("relu", "tanh")),
    "batch": Categorical((32, 64, 128)),
}


def test_to_skopt_maps_types_and_priors():
    from skopt.space import Categorical as SkCat
    from skopt.space import Integer, Real

    dims = to_skopt(SPACE)
    assert [d.name for d in dims] == list(SPACE)
    assert isinstance(dims[0], Real) and dims[0].prior == "log-uniform"
    assert isinstance(dims[1], Real) and dims[1].prior == "uniform"
    assert isinstance(dims[2], Integer) and dims[2].prior == "log-uniform"
    assert isinstance(dims[3], Integer) and dims[3].prior == "uniform"
    assert isinstance(dims[4], SkCat) and list(dims[4].categories) == ["relu", "tanh"]


def test_from_skopt_gives_plain_python_values():
    from skopt.space import Space

    points = Space(to_skopt(SPACE)).rvs(n_samples=20, random_state=0)
    for point in points:
        params = from_skopt(SPACE, point)
        assert type(params["lr"]) is float and type(params["dropout"]) is float
        assert type(params["units"]) is int and type(params["layers"]) is int
        assert type(params["act"]) is str and type(params["batch"]) is int
        json.dumps(params, allow_nan=False)
        assert to_skopt_point(SPACE, params) == [params[k] for k in SPACE]


def test_from_skopt_numpy_scalars_and_bool_choices():
    space = {"flag": Categorical((1, True, "1")), "n": Int(0, 3)}
    assert from_skopt(space, [np.True_, np.int64(2)]) == {"flag": True, "n": 2}
    assert type(from_skopt(space, [np.int64(1), np.float64(2.0)])["flag"]) is int


def test_bad_points_name_the_argument():
    with pytest.raises(ValueError, match="point"):
        from_skopt(SPACE, [0.1])
    with pytest.raises(ValueError, match="missing"):
        to_skopt_point(SPACE, {"lr": 0.01})
    with pytest.raises(ValueError, match="value"):
        from_skopt({"act": Categorical(("relu",))}, ["elu"])
