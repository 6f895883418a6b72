"""Custom trial functions: ``fn(config, report) -> dict of metrics``."""

from __future__ import annotations

import random


def noisy_quadratic(config: dict, report) -> dict:
    """A toy objective that 'trains' for 5 epochs, reporting its loss each one."""
    rng = random.Random(hash((config["x"], config["y"])))
    loss = float("inf")
    for epoch in range(1, 6):
        loss = config["scale"] * ((config["x"] - 1) ** 2 + (config["y"] + 2) ** 2) + rng.random() / epoch
        report(epoch=epoch, loss=loss)
    return {"loss": loss}
