from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train on one intra-op thread, as a worker should on a shared machine.

    The models are tiny: a second thread gains nothing, and when other processes compete
    for the cores, spinning OpenMP threads slow training down many times over.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
