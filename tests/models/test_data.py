from __future__ import annotations

import numpy as np
import pytest

from models.catalog import TASKS
from models.data import XOR_SAMPLES, Task, load_task

SIZES = {
    "digits": (1797, 64, 10),
    "wine": (178, 13, 3),
    "breast_cancer": (569, 30, 2),
    "xor": (XOR_SAMPLES, 2, 2),
}


def splits(task: Task) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(task.X_train, task.y_train), (task.X_val, task.y_val), (task.X_test, task.y_test)]


def test_every_catalog_task_is_loadable() -> None:
    assert set(SIZES) == set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_dtypes_and_split(name: str) -> None:
    n, d, k = SIZES[name]
    task = load_task(name)
    assert (task.name, task.n_features, task.n_classes) == (name, d, k)
    total = 0
    for (X, y), share in zip(splits(task), (0.6, 0.2, 0.2), strict=True):
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.shape == (len(y), d)
        assert abs(len(y) - share * n) <= 2
        assert set(np.unique(y)) == set(range(k))  # every class in every split
        assert not X.flags.writeable and not y.flags.writeable
        total += len(y)
    assert total == n


@pytest.mark.parametrize("name", sorted(TASKS))
def test_split_is_stratified(name: str) -> None:
    task = load_task(name)
    shares = [np.bincount(y, minlength=task.n_classes) / len(y) for _, y in splits(task)]
    for share in shares[1:]:
        np.testing.assert_allclose(share, shares[0], atol=0.06)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_features_standardized_with_train_statistics(name: str) -> None:
    task = load_task(name)
    std = task.X_train.std(axis=0)
    varying = std > 0
    np.testing.assert_allclose(task.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-4)
    # Validation and test use the training statistics, so they are only roughly standardized.
    assert not np.allclose(task.X_val.mean(axis=0)[varying], 0.0, atol=1e-5)
    assert np.all(np.isfinite(task.X_test))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint(name: str) -> None:
    task = load_task(name)
    rows = [{r.tobytes() for r in X} for X, _ in splits(task)]
    assert not rows[0] & rows[2] and not rows[1] & rows[2] and not rows[0] & rows[1]


def test_seed_fixes_the_split() -> None:
    a, b, c = load_task("wine", seed=3), load_task("wine", seed=3), load_task("wine", seed=4)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert a.X_train.shape == c.X_train.shape
    assert not np.array_equal(a.X_train, c.X_train)


def test_xor_points_follow_the_xor_rule_and_the_seed() -> None:
    task = load_task("xor", seed=0)
    # Standardization keeps the signs of roughly centred data; noise flips only a few points.
    X = np.concatenate([task.X_train, task.X_val, task.X_test])
    y = np.concatenate([task.y_train, task.y_val, task.y_test])
    rule = (np.sign(X[:, 0]) != np.sign(X[:, 1])).astype(np.int64)
    assert 0.85 < np.mean(rule == y) < 1.0
    assert not np.array_equal(task.X_train, load_task("xor", seed=1).X_train)


def test_unknown_task_names_itself_and_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'mnist'") as info:
        load_task("mnist")
    for name in TASKS:
        assert repr(name) in str(info.value)
