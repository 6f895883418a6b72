"""The annealing chain behind every annealing trainer: :class:`Annealer` (see ``models/anneal.py``).

Example:
    >>> from models.data import load_task
    >>> chain = Annealer({"trainer": "boltzmann", "units": 8}, load_task("xor"), seed=0)
    >>> chain.step(10, temperature=0.01)["steps"]
    10.0
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models._anneal_rules import SQUASH_C, cauchy_step, gaussian_step, metropolis, saturated_units, squash
from models.data import Task
from models.nets import build_mlp
from models.train import TrainingDiverged, _seeded, resolve_hparams

SQUASH_INTERVAL = 50
"""With ``squash=True``, saturated units are looked for (and squashed) every this many steps."""

STATE_VERSION = 1

_ACTIVATIONS = {
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.Hardtanh: "hardtanh",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.ELU: "elu",
}


class Annealer:
    """One annealing chain over an MLP's weights, vectorized over whole tensors on one device.

    All the network's parameters live in one flat tensor ``w`` (the current, accepted state);
    the network computes with a second flat tensor, the candidate, that its parameters view.
    One step at temperature ``T`` (``kT = boltzmann_k * T``):

    1. Draw a move for the weights chosen by ``granularity`` — all of them, one layer (a
       module's parameters, cycling through the layers step by step) or each weight with
       probability ``perturb_fraction``:

       - ``boltzmann``: Gaussian, standard deviation ``anneal_rho * sqrt(T)``;
       - ``cauchy``: ``x_c = anneal_rho * T * tan(u)``, ``u ~ U(-pi/2, pi/2)``;
       - ``hybrid``: ``dW = eta * (alpha * dW_prev - (1 - alpha) * lr * grad) + (1 - eta) * x_c``,
         with ``grad`` the cross-entropy gradient on a random minibatch of ``batch_size``
         (the whole training set when larger), ``dW_prev`` the change made by the previous
         step (zero after a rejection) and the granularity applied to ``x_c`` only.
         ``eta = 1`` (``hybrid_eta``) is backprop with momentum ``alpha`` (``hybrid_alpha``)
         and skips the test below; ``eta = 0`` is pure Cauchy and computes no gradient.

    2. Evaluate the candidate's energy on the fixed evaluation batch (one forward pass).
    3. Keep it when ``u < exp(-(E_new - E) / kT)``: always when it improves, with that
       probability when it worsens, never when its energy is NaN. The test runs on the
       device (no host synchronization per step).
    4. With ``squash=True``, every ``SQUASH_INTERVAL`` steps find hidden units whose
       pre-activations sit in the flat region of their activation on at least
       ``squash_threshold`` of the batch (tanh/sigmoid/hardtanh near their bounds, ReLUs
       dead or huge) and squash the parameters feeding them (the linear layer's incoming
       weights and bias, or the norm layer's gain and bias when one sits in between),
       ``w <- c * tanh(w / c)`` with ``c = SQUASH_C / sqrt(fan_in)``: large weights shrink
       more than small ones, which pulls the unit back to where it has a slope (network
       paralysis). Squashing is kept unconditionally, and the energy is measured again.

    ``step`` runs steps at a fixed temperature (the replica-exchange coordinator owns the
    temperatures); :func:`train_anneal` adds cooling. Randomness comes from one
    ``torch.Generator`` on the device (moves, tests, minibatches); evaluation subsets are
    drawn from ``(data_seed, draw)`` (:meth:`resample_eval`), so ``get_state``/``set_state``
    restore a chain bit for bit.

    Args:
        config: MLP hyperparameters with an annealing ``trainer``.
        task: The task (``models.data.load_task``).
        device: Where the chain lives.
        seed: Seed of the weight init and of the chain's moves.
        data_seed: Seed of the evaluation subset (when ``eval_batch_size`` is set); replicas
            that exchange temperatures share it, so their energies are comparable.

    Raises:
        ValueError: A bad hyperparameter, or ``trainer='backprop'``.

    Example:
        >>> from models.data import load_task
        >>> a = Annealer({"trainer": "cauchy", "units": 8, "T0": 0.1}, load_task("xor"), seed=0)
        >>> before = a.energy()
        >>> stats = a.step(100, temperature=1e-4)
        >>> stats["energy"] <= before
        True
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        task: Task,
        device: str | torch.device = "cpu",
        seed: int = 0,
        data_seed: int = 0,
    ) -> None:
        hp = resolve_hparams(config)
        if hp["trainer"] == "backprop":
            raise ValueError("`trainer` must be 'boltzmann', 'cauchy' or 'hybrid' for annealing, but got "
                             "trainer='backprop' (models.train.train_mlp trains with backprop).")  # fmt: skip
        self.hp, self.task, self.seed = hp, task, int(seed)
        self.trainer: str = hp["trainer"]
        self.device = device = torch.device(device)
        with _seeded(device, self.seed):
            self.model = build_mlp(task.n_features, task.n_classes, hp).to(device).eval()
        params = list(self.model.parameters())
        size = sum(p.numel() for p in params)
        self._w = torch.empty(size, device=device)  # current (accepted) weights
        self._cand = torch.empty(size, device=device)  # candidate: the network's parameters view it
        self._grad = torch.zeros(size, device=device)
        self._views: dict[int, torch.Tensor] = {}  # id(parameter) -> its view into self._w
        offset = 0
        for p in params:
            n = p.numel()
            self._w[offset : offset + n] = p.detach().flatten()
            self._views[id(p)] = self._w[offset : offset + n].view_as(p)
            p.data = self._cand[offset : offset + n].view_as(p)
            p.grad = self._grad[offset : offset + n].view_as(p)
            offset += n
        self._cand.copy_(self._w)
        self._layers = _layer_slices(self.model)
        self._squash_targets = self._find_squash_targets()
        self._dW = torch.zeros(size, device=device)
        self._gen = torch.Generator(device=device)
        self._gen.manual_seed(self.seed)
        self._data_seed = int(data_seed)
        self._eval_draw = 0
        self._X = torch.tensor(task.X_train, dtype=torch.float32, device=device)
        self._y = torch.tensor(task.y_train, dtype=torch.int64, device=device)
        self._splits = {
            name: (
                torch.tensor(X, dtype=torch.float32, device=device),
                torch.tensor(y, dtype=torch.int64, device=device),
            )
            for name, X, y in (("val", task.X_val, task.y_val), ("test", task.X_test, task.y_test))
        }
        self.t = 0
        """Steps taken."""
        self.n_forward = 0
        """Samples forwarded to evaluate energies and gradients (the optimization's work)."""
        self.n_backward = 0
        """Samples backpropagated (hybrid gradient steps)."""
        self._layer_next = 0
        self._always_accept = self.trainer == "hybrid" and hp["hybrid_eta"] == 1.0
        self._eval_index: torch.Tensor | None = None
        self._reset_stats()
        with torch.no_grad():
            self._draw_eval_batch(0)

    @property
    def n_params(self) -> int:
        """Number of annealed parameters."""
        return self._w.numel()

    # -- the evaluation batch and the energy --------------------------------------------------------

    def _draw_eval_batch(self, draw: int) -> None:
        size, n = self.hp["eval_batch_size"], len(self._y)
        self._eval_draw = draw
        if size == 0 or size >= n:
            self._eval_index = None
        else:
            generator = torch.Generator().manual_seed(self._data_seed * 1_000_003 + draw)
            self._eval_index = torch.randperm(n, generator=generator)[:size]
        self._use_eval_index()
        self._energy = self._eval_energy()

    def _use_eval_index(self) -> None:
        if self._eval_index is None:
            self._X_eval, self._y_eval = self._X, self._y
        else:
            index = self._eval_index.to(self.device)
            self._X_eval, self._y_eval = self._X[index], self._y[index]

    @torch.no_grad()
    def resample_eval(self, draw: int) -> None:
        """Switch to evaluation subset number ``draw`` and re-measure the current state on it.

        Subset ``draw`` is a function of ``(data_seed, draw)`` alone (subset 0 is the first),
        so chains that share ``data_seed`` and switch at the same points compare their
        energies on the same samples whatever their histories. A no-op when the batch is the
        whole training set or ``draw`` is the subset in use.
        """
        if self._eval_index is not None and draw != self._eval_draw:
            self._draw_eval_batch(int(draw))

    def _eval_energy(self) -> torch.Tensor:
        self.n_forward += len(self._y_eval)
        return F.cross_entropy(self.model(self._X_eval), self._y_eval)

    def energy(self) -> float:
        """The current state's loss on the fixed evaluation batch."""
        return float(self._energy)

    # -- moves -----------------------------------------------------------------------------------------

    def _perturbation(self, T: float) -> torch.Tensor:
        """A Gaussian (boltzmann) or Cauchy move over the weights ``granularity`` picks."""
        hp, size = self.hp, self._w.numel()
        if self.trainer == "boltzmann":
            draw, scale = gaussian_step, hp["anneal_rho"] * math.sqrt(T)
        else:
            draw, scale = cauchy_step, hp["anneal_rho"] * T
        if hp["granularity"] == "layer":
            start, end = self._layers[self._layer_next]
            self._layer_next = (self._layer_next + 1) % len(self._layers)
            move = torch.zeros(size, device=self.device)
            move[start:end] = draw(end - start, scale, self._gen, self.device)
            return move
        move = draw(size, scale, self._gen, self.device)
        if hp["granularity"] == "fraction":
            move.mul_(torch.rand(size, generator=self._gen, device=self.device) < hp["perturb_fraction"])
        return move

    def _minibatch_grad(self) -> torch.Tensor:
        """Cross-entropy gradient at the current weights on a random minibatch (flat)."""
        self._cand.copy_(self._w)
        n, size = len(self._y), self.hp["batch_size"]
        if size >= n:
            X, y = self._X, self._y
        else:
            index = torch.randint(n, (size,), generator=self._gen, device=self.device)
            X, y = self._X[index], self._y[index]
        self._grad.zero_()
        with torch.enable_grad():
            F.cross_entropy(self.model(X), y).backward()
        self.n_forward += len(y)
        self.n_backward += len(y)
        return self._grad

    def _hybrid_update(self, T: float) -> torch.Tensor:
        eta, alpha, lr = self.hp["hybrid_eta"], self.hp["hybrid_alpha"], self.hp["lr"]
        if eta == 0:  # pure Cauchy: no gradient at all
            return self._perturbation(T)
        grad = self._minibatch_grad()
        update = (self._dW * alpha).sub_(grad, alpha=(1.0 - alpha) * lr).mul_(eta)
        if eta < 1:
            update.add_(self._perturbation(T).mul_(1.0 - eta))
        return update

    # -- steps ---------------------------------------------------------------------------------------------

    def _reset_stats(self) -> None:
        self._accepted = torch.zeros((), dtype=torch.int64, device=self.device)
        self._e_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._e_sq = torch.zeros((), dtype=torch.float64, device=self.device)
        self._steps = 0

    def _take_stats(self) -> dict[str, float]:
        """Acceptance and energy statistics of the steps since the last call (one host sync)."""
        n = max(1, self._steps)
        accepted, e_sum, e_sq, energy = (float(v) for v in (self._accepted, self._e_sum, self._e_sq, self._energy))
        mean = e_sum / n
        stats = {
            "energy": energy,
            "accept_rate": accepted / n,
            "energy_mean": mean if self._steps else energy,
            "energy_var": max(0.0, e_sq / n - mean * mean) if self._steps else 0.0,
            "steps": float(self._steps),
        }
        self._reset_stats()
        return stats

    def _step(self, T: float) -> None:
        update = self._hybrid_update(T) if self.trainer == "hybrid" else self._perturbation(T)
        torch.add(self._w, update, out=self._cand)
        energy = self._eval_energy()
        if self._always_accept:  # hybrid with eta = 1: backprop with momentum, no test
            accept = torch.ones((), dtype=torch.bool, device=self.device)
        else:
            u = torch.rand((), generator=self._gen, device=self.device)
            accept = metropolis(energy - self._energy, self.hp["boltzmann_k"] * T, u)
        torch.where(accept, self._cand, self._w, out=self._w)
        self._energy = torch.where(accept, energy, self._energy)
        if self.trainer == "hybrid":
            self._dW = torch.where(accept, update, torch.zeros((), device=self.device))  # the change made
        self._accepted += accept
        self._e_sum += self._energy
        self._e_sq += self._energy.double() ** 2
        self._steps += 1
        self.t += 1
        if self.hp["squash"] and self.t % SQUASH_INTERVAL == 0:
            self._squash()

    @torch.no_grad()
    def _run(self, temperatures: Iterable[float]) -> None:
        """One step per temperature, statistics accumulated on the device."""
        for T in temperatures:
            self._step(T)
        self._cand.copy_(self._w)

    def step(self, n_steps: int, temperature: float) -> dict[str, float]:
        """Run ``n_steps`` steps at a fixed ``temperature`` (no cooling).

        Args:
            n_steps: Steps to take, ``>= 0``.
            temperature: ``T > 0``; moves scale with it and the test uses ``boltzmann_k * T``.

        Returns:
            ``energy`` (after the last step), ``accept_rate``, ``energy_mean`` and
            ``energy_var`` (of the current state over the steps), ``steps``,
            ``temperature`` and ``evaluations`` (samples forwarded so far, backward passes
            counted twice).

        Raises:
            ValueError: A bad ``n_steps`` or ``temperature``.
            TrainingDiverged: The energy is NaN or infinite.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
            raise ValueError(f"`n_steps` must be an int >= 0, but got n_steps={n_steps!r}.")
        if not isinstance(temperature, int | float) or not 0 < temperature < math.inf:
            raise ValueError(f"`temperature` must be a finite number > 0, but got temperature={temperature!r}.")
        self._run([float(temperature)] * n_steps)
        stats = self._take_stats()
        if not math.isfinite(stats["energy"]):
            raise TrainingDiverged(f"Annealing diverged at step {self.t}: energy is {stats['energy']}.")
        return {**stats, "temperature": float(temperature), "evaluations": float(self.evaluations)}

    @property
    def evaluations(self) -> int:
        """Work done so far in forward-sample equivalents: ``n_forward + 2 * n_backward``."""
        return self.n_forward + 2 * self.n_backward

    # -- squashing saturated units ------------------------------------------------------------------

    def _find_squash_targets(self) -> list[tuple[int, str, torch.Tensor, torch.Tensor, float]]:
        """Per hidden activation: its index, name, and the views of the weights and bias feeding it."""
        targets = []
        feeding: nn.Module | None = None
        for index, module in enumerate(self.model):
            if isinstance(module, nn.Linear):
                feeding = module
            elif isinstance(module, nn.LayerNorm | nn.BatchNorm1d) and module.weight is not None:
                feeding = module
            elif type(module) in _ACTIVATIONS and feeding is not None:
                w, b = self._views[id(feeding.weight)], self._views[id(feeding.bias)]
                fan_in = w.shape[1] if w.dim() == 2 else 1
                targets.append((index, _ACTIVATIONS[type(module)], w, b, SQUASH_C / math.sqrt(fan_in)))
                feeding = None
        return targets

    def _squash(self) -> torch.Tensor:
        """Squash the saturated units of the current state; returns their count (on the device)."""
        self._cand.copy_(self._w)
        marks = {index: i for i, (index, *_rest) in enumerate(self._squash_targets)}
        masks: list[torch.Tensor] = []
        x = self._X_eval
        for index, module in enumerate(self.model):
            if index in marks:
                _, name, *_rest = self._squash_targets[marks[index]]
                masks.append(saturated_units(x, name, self.hp["squash_threshold"]))
            x = module(x)
        self.n_forward += len(self._y_eval)
        count = torch.zeros((), dtype=torch.int64, device=self.device)
        for mask, (_, _, w, b, c) in zip(masks, self._squash_targets, strict=True):
            rows = mask.view(-1, *([1] * (w.dim() - 1)))
            w.copy_(torch.where(rows, squash(w, c), w))
            b.copy_(torch.where(mask, squash(b, c), b))
            count += mask.sum()
        self._cand.copy_(self._w)
        self._energy = self._eval_energy()
        return count

    @torch.no_grad()
    def squash_saturated(self) -> int:
        """Squash the saturated hidden units now (whatever ``squash`` says); returns how many."""
        return int(self._squash())

    def saturated(self) -> list[torch.Tensor]:
        """Per hidden layer, the bool mask of its saturated units on the evaluation batch."""
        with torch.no_grad():
            out, x = [], self._X_eval
            names = {index: name for index, name, *_rest in self._squash_targets}
            for index, module in enumerate(self.model):
                if index in names:
                    out.append(saturated_units(x, names[index], self.hp["squash_threshold"]))
                x = module(x)
        return out

    # -- state -----------------------------------------------------------------------------------------

    def get_state(self) -> bytes:
        """The chain as bytes: weights, buffers, momentum, energy, RNG states, counters."""
        state = {
            "version": STATE_VERSION,
            "trainer": self.trainer,
            "n_params": self._w.numel(),
            "weights": self._w.cpu().clone(),
            "buffers": {name: b.detach().cpu().clone() for name, b in self.model.named_buffers()},
            "momentum": self._dW.cpu().clone(),
            "energy": self._energy.cpu().clone(),
            "rng": self._gen.get_state(),
            "rng_device": self.device.type,
            "eval_draw": [self._data_seed, self._eval_draw],
            "eval_index": None if self._eval_index is None else self._eval_index.clone(),
            "counters": [self.t, self._layer_next, self.n_forward, self.n_backward, self.seed],
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    @torch.no_grad()
    def set_state(self, blob: bytes | str) -> None:
        """Restore :meth:`get_state` (bytes, or their base64 text).

        On the device type it was saved on the chain continues bit for bit; on another,
        the weights carry over and the move RNG is re-seeded from the seed and step count.

        Raises:
            ValueError: The state belongs to another trainer or network shape.
        """
        raw = base64.b64decode(blob) if isinstance(blob, str) else bytes(blob)
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        got = (state.get("version"), state.get("trainer"), state.get("n_params"))
        if got != (STATE_VERSION, self.trainer, self._w.numel()):
            raise ValueError(
                "`blob` must be an Annealer state of the same trainer and network, but got "
                f"(version, trainer, n_params)={got!r}, expected {(STATE_VERSION, self.trainer, self._w.numel())!r}."
            )
        self._w.copy_(state["weights"])
        self._cand.copy_(self._w)
        buffers = dict(self.model.named_buffers())
        for name, value in state["buffers"].items():
            buffers[name].copy_(value)
        self._dW.copy_(state["momentum"])
        self.t, self._layer_next, self.n_forward, self.n_backward, self.seed = state["counters"]
        if state["rng_device"] == self.device.type:
            self._gen.set_state(state["rng"])
        else:
            self._gen.manual_seed(self.seed * 1_000_003 + self.t)
        self._data_seed, self._eval_draw = state["eval_draw"]
        self._eval_index = state["eval_index"]
        self._use_eval_index()
        self._energy = state["energy"].to(self.device)
        self._reset_stats()

    # -- evaluation and export -------------------------------------------------------------------------

    @torch.no_grad()
    def loss_accuracy(self, split: str) -> tuple[float, float]:
        """Cross-entropy and accuracy of the current state on ``"train"``, ``"val"`` or ``"test"``."""
        X, y = (self._X, self._y) if split == "train" else self._splits[split]
        logits = self.model(X)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        return float(loss), float(accuracy)

    def evaluate(self) -> dict[str, float]:
        """``train_loss`` (whole training set), ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy``."""
        out: dict[str, float] = {"train_loss": self.loss_accuracy("train")[0]}
        for split in ("val", "test"):
            out[f"{split}_loss"], out[f"{split}_accuracy"] = self.loss_accuracy(split)
        return out

    def export_model(self) -> nn.Module:
        """A standalone copy of the network with the current weights, on the CPU, in eval mode."""
        with torch.random.fork_rng(devices=[]):
            model = build_mlp(self.task.n_features, self.task.n_classes, self.hp)
        model.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        return model.eval()


def _layer_slices(model: nn.Module) -> list[tuple[int, int]]:
    """``(start, end)`` of each module's own parameters in the flat weight vector (layer order)."""
    slices, offset = [], 0
    for module in model.modules():
        n = sum(p.numel() for p in module.parameters(recurse=False))
        if n:
            slices.append((offset, offset + n))
            offset += n
    return slices


def _layer_slices(model: nn.Module) -> list[tuple[int, int]]:
    """``(start, end)`` of each module's own parameters in the flat weight vector (layer order)."""
    slices, offset = [], 0
    for module in model.modules():
        n = sum(p.numel() for p in module.parameters(recurse=False))
        if n:
            slices.append((offset, offset + n))
            offset += n
    return slices
