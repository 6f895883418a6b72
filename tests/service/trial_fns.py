"""Trial functions used by the runner tests (imported by Ray workers as ``trial_fns``)."""

from __future__ import annotations

import math
import os
import time


def quadratic(config, report):
    """Loss (x - 0.3)^2, reported over a few 'epochs'."""
    loss = (config["x"] - 0.3) ** 2
    for epoch in range(1, config.get("epochs", 3) + 1):
        time.sleep(config.get("sleep", 0.0))
        report(epoch=epoch, loss=loss + 1.0 / epoch)
    return {"loss": loss, "x": config["x"]}


def faulty(config, report):
    """Raises for x < 0.2, returns NaN for 0.2 <= x < 0.4, kills its worker for 0.4 <= x < 0.5."""
    x = config["x"]
    if x < 0.2:
        raise ValueError(f"bad x={x:.3f}")
    if x < 0.4:
        return {"loss": math.nan}
    if x < 0.5:
        os._exit(1)  # the worker process dies mid-trial
    return {"loss": x}


def slow_bad(config, report):
    """Trials with large x are clearly bad at every epoch; all take 12 epochs of 50 ms."""
    for epoch in range(1, 13):
        time.sleep(0.05)
        report(epoch=epoch, loss=config["x"] * 10 + 1.0 / epoch)
    return {"loss": config["x"] * 10}


def forever(config, report):
    """Reports every 50 ms for a long time (for wall-clock limits)."""
    for epoch in range(1, 10_000):
        time.sleep(0.05)
        report(epoch=epoch, loss=1.0)
    return {"loss": 1.0}


def dies_once(config, report):
    """Kills its worker on the first attempt of each trial (a marker file remembers), then succeeds."""
    marker = os.path.join(config["marker_dir"], f"{config['x']:.12f}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return {"loss": config["x"]}


def sleepy(config, report):
    """Sleeps ``config['sleep']`` seconds in a few reported steps; loss is x."""
    steps = config.get("epochs", 2)
    for epoch in range(1, steps + 1):
        time.sleep(config["sleep"] / steps)
        report(epoch=epoch, loss=config["x"])
    return {"loss": config["x"]}


def pid_then_sleep(config, report):
    """Writes its worker's PID to ``pid_dir/<x>`` on the first attempt, then sleeps; returns loss x."""
    path = os.path.join(config["pid_dir"], f"{config['x']:.12f}")
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    for epoch in range(1, 4):
        time.sleep(config["sleep"] if first else 0.05)
        report(epoch=epoch, loss=config["x"])
    return {"loss": config["x"]}


def with_context(config, report, context):
    """Reads its TrialContext; counts the trials this worker ran for this job in the worker's cache."""
    key = ("count", context.job)
    count = (context.cache.pop(key) or 0) + 1
    context.cache.put(key, count)
    return {
        "loss": config["x"],
        "cpus": context.cpus,
        "on_cpu": float(context.device == "cpu"),
        "seed": float(context.seed),
        "runs_here": float(count),
        "stopped": float(context.should_stop()),
    }


def shared_identity(config, report, context):
    """What ``context.shared`` holds and which object it is (the same one while the worker caches it)."""
    context.cache.put(("held", id(context.shared)), context.shared)  # alive: a new copy cannot reuse its id
    return {"value": float(context.shared["v"]), "shared_id": float(id(context.shared))}
