"""Built-in classification tasks as plain numpy arrays.

Every task is split once, stratified and seeded, into 60% train, 20% validation and 20% test,
and its features are standardized with the training set's mean and standard deviation. The
arrays stay numpy (read-only) so a service can ``ray.put`` a task once and share it between
trials; trainers copy them onto their device.

Example:
    >>> task = load_task("wine", seed=0)
    >>> task.n_features, task.n_classes, task.X_train.dtype.name, task.y_train.dtype.name
    (13, 3, 'float32', 'int64')
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split

from models.catalog import TASKS

XOR_SAMPLES = 400
"""Number of points in the XOR task."""

XOR_NOISE = 0.35
"""Standard deviation of the Gaussian noise around XOR's four corner points."""


@dataclass(frozen=True, eq=False)
class Task:
    """A classification task split into train, validation and test sets.

    Attributes:
        name: Task name from ``models.catalog.TASKS``.
        X_train: Training features, float32, shape ``(n_train, n_features)``.
        y_train: Training labels, int64 in ``[0, n_classes)``.
        X_val: Validation features (used for early stopping and search).
        y_val: Validation labels.
        X_test: Test features, never seen by training or search.
        y_test: Test labels.
        n_features: Number of input features.
        n_classes: Number of classes.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_features: int
    n_classes: int

    def __repr__(self) -> str:
        return (
            f"Task(name={self.name!r}, n_features={self.n_features}, n_classes={self.n_classes}, "
            f"n_train={len(self.y_train)}, n_val={len(self.y_val)}, n_test={len(self.y_test)})"
        )


def load_task(name: str, seed: int = 0) -> Task:
    """Load a built-in task with a seeded, stratified 60/20/20 split.

    The scikit-learn tasks come from the datasets bundled with scikit-learn (nothing is
    downloaded). ``xor`` is generated: points scattered around the four corners
    ``(+-1, +-1)`` with Gaussian noise, labelled 1 when the corner's coordinates differ in
    sign; ``seed`` drives both the points and the split. Results are cached, and the
    arrays are read-only.

    Args:
        name: One of ``models.catalog.TASKS`` (``digits``, ``wine``, ``breast_cancer``, ``xor``).
        seed: Seed of the split (and of the XOR points).

    Returns:
        The task, features float32 and standardized with training-set statistics,
        labels int64.

    Raises:
        ValueError: ``name`` is not a built-in task.

    Example:
        >>> load_task("xor").X_train.shape
        (240, 2)
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; `name` must be one of {', '.join(map(repr, TASKS))}.")
    return _load(name, int(seed))


@lru_cache(maxsize=32)
def _load(name: str, seed: int) -> Task:
    X, y = _raw(name, seed)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=0.6, stratify=y, random_state=seed)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0  # constant features (digits' blank border pixels) stay 0

    def features(a: np.ndarray) -> np.ndarray:
        return _frozen(((a - mean) / std).astype(np.float32))

    def labels(a: np.ndarray) -> np.ndarray:
        return _frozen(a.astype(np.int64))

    return Task(
        name=name,
        X_train=features(X_train),
        y_train=labels(y_train),
        X_val=features(X_val),
        y_val=labels(y_val),
        X_test=features(X_test),
        y_test=labels(y_test),
        n_features=int(X.shape[1]),
        n_classes=int(np.unique(y).size),
    )


def _raw(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if name == "xor":
        return _xor(seed)
    loader = {"digits": load_digits, "wine": load_wine, "breast_cancer": load_breast_cancer}[name]
    X, y = loader(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y)


def _xor(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 2, size=(XOR_SAMPLES, 2)) * 2 - 1
    X = corners + rng.normal(0.0, XOR_NOISE, size=(XOR_SAMPLES, 2))
    y = (corners[:, 0] != corners[:, 1]).astype(np.int64)
    return X, y


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a
