"""E3 entropy-targeting temperature controller: Eq. (4) with the Eq. (5) annealing.

One global controller per training run: it is fed the *global* mean token
entropy of each step's rollouts (the caller all-reduces across data-parallel
ranks), measured under the temperature the controller returned for that step.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

_STATE_VERSION = 1
_CONFIG_KEYS = (
    "vocab_size",
    "init_temperature",
    "total_steps",
    "anneal_start",
    "eta",
    "warmup_steps",
    "min_temperature",
    "max_temperature",
)


def annealed_target(
    step: int, *, h_init: float, total_steps: int, anneal_start: int, eta: float
) -> float:
    """Target entropy at training ``step`` by Eq. (5) of the E3 paper.

    ``h_init`` until ``anneal_start``, then a cosine from ``h_init`` down to
    ``eta * h_init`` at ``total_steps``; progress is clamped to [0, 1], so
    steps past ``total_steps`` keep ``eta * h_init``. Same units as ``h_init``.
    """
    if step <= anneal_start:
        return h_init
    if total_steps <= anneal_start:
        return eta * h_init
    progress = min((step - anneal_start) / (total_steps - anneal_start), 1.0)
    return h_init * (eta + (1.0 - eta) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _entropy_value(value: Any) -> float:
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # 0-d tensor / numpy scalar
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"mean_entropy must be a finite number > 0, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(
            f"mean_entropy must be a finite number > 0 (nats, mean over the step's tokens), "
            f"got {value!r}"
        )
    return value


class EntropyTemperatureController:
    """Global sampling temperature that holds policy entropy at a (cosine-annealed) target.

    Eq. (4): ``tau_{s+1} = tau_s * (1 + tau_s * ln(alpha) / (ln|V| + ln ln|V|))``
    with ``alpha = H_target / H_s``, ``H_s`` the mean token entropy (nats)
    measured at step ``s`` under ``tau_s``, and ``|V| = vocab_size``. The result
    is clamped to ``[min_temperature, max_temperature]``.

    ``H_init`` is the mean of the entropies fed by the first ``warmup_steps``
    updates (the temperature stays at ``init_temperature`` until it is known;
    the update that completes the warm-up already applies Eq. (4)). The target
    for step ``s`` is :func:`annealed_target` (Eq. (5)) with ``t_anneal =
    anneal_start`` (default ``floor(0.6 * total_steps)``) and ``t_max =
    total_steps``; each update aims the new temperature at the target of the
    step it will be used for.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        init_temperature: float = 1.0,
        total_steps: int,
        anneal_start: int | None = None,
        eta: float = 0.9,
        warmup_steps: int = 1,
        min_temperature: float = 0.1,
        max_temperature: float = 2.0,
    ) -> None:
        self.vocab_size = _integer("vocab_size", vocab_size, 3)  # ln ln|V| > 0 needs |V| > e
        self.total_steps = _integer("total_steps", total_steps, 1)
        if anneal_start is None:
            anneal_start = math.floor(0.6 * self.total_steps)
        self.anneal_start = _integer("anneal_start", anneal_start, 0)
        if self.anneal_start > self.total_steps:
            raise ValueError(
                f"anneal_start ({self.anneal_start}) must be <= total_steps ({self.total_steps})"
            )
        self.warmup_steps = _integer("warmup_steps", warmup_steps, 1)
        self.eta = _real("eta", eta)
        if not 0.0 < self.eta <= 1.0:
            raise ValueError(f"eta must be in (0, 1] (1 disables annealing), got {eta!r}")
        self.init_temperature = _real("init_temperature", init_temperature)
        self.min_temperature = _real("min_temperature", min_temperature)
        self.max_temperature = _real("max_temperature", max_temperature)
        for name in ("init_temperature", "min_temperature", "max_temperature"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if not self.min_temperature <= self.init_temperature <= self.max_temperature:
            raise ValueError(
                "need min_temperature <= init_temperature <= max_temperature, got "
                f"{self.min_temperature} <= {self.init_temperature} <= {self.max_temperature}"
            )
        log_v = math.log(self.vocab_size)
        self._gain_denominator = log_v + math.log(log_v)
        self._step = 0
        self._temperature = self.init_temperature
        self._init_entropy_sum = 0.0
        self._last_entropy: float | None = None

    @property
    def step(self) -> int:
        """Index of the next training step, i.e. the number of updates so far."""
        return self._step

    @property
    def temperature(self) -> float:
        """The temperature to sample step :attr:`step` with."""
        return self._temperature

    @property
    def h_init(self) -> float | None:
        """Mean entropy of the warm-up steps (nats); ``None`` until the warm-up is done."""
        if self._step < self.warmup_steps:
            return None
        return self._init_entropy_sum / self.warmup_steps

    @property
    def target_entropy(self) -> float | None:
        """Target entropy (nats) of step :attr:`step`; ``None`` during the warm-up."""
        return None if self.h_init is None else self.target_at(self._step)

    def target_at(self, step: int) -> float:
        """Eq. (5) target entropy at training ``step`` (needs the warm-up to be done)."""
        h_init = self.h_init
        if h_init is None:
            raise RuntimeError("the target entropy is unknown until the warm-up steps are fed")
        return annealed_target(
            step,
            h_init=h_init,
            total_steps=self.total_steps,
            anneal_start=self.anneal_start,
            eta=self.eta,
        )

    def update(self, mean_entropy: Any) -> float:
        """Feed step :attr:`step`'s global mean token entropy; return the next temperature.

        ``mean_entropy`` (nats, > 0, finite) must be measured under
        :attr:`temperature`. Raises ``ValueError`` for NaN, inf, zero or
        negative entropy, naming the value fed.
        """
        entropy = _entropy_value(mean_entropy)
        self._last_entropy = entropy
        if self._step < self.warmup_steps:
            self._init_entropy_sum += entropy
        self._step += 1
        if self._step >= self.warmup_steps:
            alpha = self.target_at(self._step) / entropy
            tau = self._temperature
            tau = tau * (1.0 + tau * math.log(alpha) / self._gain_denominator)
            self._temperature = min(max(tau, self.min_temperature), self.max_temperature)
        return self._temperature

    def metrics(self) -> dict[str, float]:
        """Scalars for logging: temperature, target and last entropy (when known), step."""
        out = {"temperature": self._temperature, "step": float(self._step)}
        if self.target_entropy is not None:
            out["target_entropy"] = self.target_entropy
        if self._last_entropy is not None:
            out["entropy"] = self._last_entropy
        return out

    def config(self) -> dict[str, Any]:
        """The constructor arguments (``anneal_start`` resolved)."""
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python (JSON and ``torch.save`` friendly) state; exact round trip."""
        return {
            "version": _STATE_VERSION,
            "config": self.config(),
            "step": self._step,
            "temperature": self._temperature,
            "init_entropy_sum": self._init_entropy_sum,
            "last_entropy": self._last_entropy,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the configuration must match this controller's."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported controller state version {state.get('version')!r}")
        saved = state["config"]
        mismatched = [k for k in _CONFIG_KEYS if saved.get(k) != getattr(self, k)]
        if mismatched:
            diffs = ", ".join(
                f"{k}: saved {saved.get(k)!r} != {getattr(self, k)!r}" for k in mismatched
            )
            raise ValueError(f"controller state has a different configuration ({diffs})")
        step = _integer("step", state["step"], 0)
        temperature = _real("temperature", state["temperature"])
        init_sum = _real("init_entropy_sum", state["init_entropy_sum"])
        last = state["last_entropy"]
        self._step = step
        self._temperature = temperature
        self._init_entropy_sum = init_sum
        self._last_entropy = None if last is None else _real("last_entropy", last)
