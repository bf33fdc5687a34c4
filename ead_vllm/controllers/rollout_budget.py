"""E3 dynamic rollout budget: Algorithm 1 with the G_min/G_max curriculum, bounds enforced.

Difficulty: each prompt's cumulative mean reward over all epochs, ranked (in
descending order of reward, ties sharing their average rank) at the end of
every epoch; a larger rank is a harder prompt, and a prompt that had no
reward recorded by then counts as the hardest. Unlike the authors' code, no
prompt ever gets more than ``n_max`` or fewer than ``n_min`` samples.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

PromptId = str | int

_STATE_VERSION = 1
_CONFIG_KEYS = ("default_n", "n_min_limit", "n_max_limit", "widen_per_epoch", "seed")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_prompt_id(prompt_id: Any) -> PromptId:
    if isinstance(prompt_id, str):
        return prompt_id
    if isinstance(prompt_id, numbers.Integral) and not isinstance(prompt_id, bool):
        return int(prompt_id)
    raise TypeError(f"prompt ids must be str or int, got {type(prompt_id).__name__} {prompt_id!r}")


def fractional_ranks(means: dict[PromptId, float]) -> dict[PromptId, float]:
    """Rank prompts by mean reward, descending: the best gets 1, ties share their average rank."""
    order = sorted(means.values(), reverse=True)
    first: dict[float, int] = {}
    last: dict[float, int] = {}
    for position, value in enumerate(order, start=1):
        first.setdefault(value, position)
        last[value] = position
    return {pid: (first[m] + last[m]) / 2.0 for pid, m in means.items()}


def allocate_budget(
    difficulty: Sequence[float], tie_keys: Sequence[Any], *, default_n: int, n_min: int, n_max: int
) -> list[int]:
    """Algorithm 1 of the E3 paper with both bounds enforced.

    ``difficulty`` (> 0, larger is harder) per batch entry; ``tie_keys`` order
    equally difficult entries in the greedy step. Returns one count per entry
    with ``sum == len * default_n``, each within ``[n_min, n_max]``, and a
    strictly harder entry never below an easier one. Step 4's proportional
    share is water-filled: entries whose share would pass ``n_max`` are capped
    and their excess is shared among the rest in proportion to difficulty.
    """
    size = len(difficulty)
    if len(tie_keys) != size:
        raise ValueError(f"{len(tie_keys)} tie keys for {size} entries")
    if not all(math.isfinite(k) and k > 0 for k in difficulty):
        raise ValueError("every difficulty must be a finite number > 0")
    if not n_min <= default_n <= n_max:
        raise ValueError(f"need n_min <= default_n <= n_max, got {n_min}, {default_n}, {n_max}")
    counts = [n_min] * size
    spare = size * (default_n - n_min)
    room = n_max - n_min
    capped: set[int] = set()
    shares: dict[int, int] = {}
    while spare > 0:
        free = [i for i in range(size) if i not in capped]
        budget = spare - room * len(capped)
        total = math.fsum(difficulty[i] for i in free)
        shares = {i: math.floor(budget * difficulty[i] / total) for i in free}
        over = [i for i in free if shares[i] > room]
        if not over:
            break
        capped.update(over)
    for i in range(size):
        counts[i] += room if i in capped else shares.get(i, 0)

    left = size * default_n - sum(counts)
    order = sorted(range(size), key=lambda i: (-difficulty[i], tie_keys[i], i))
    while left > 0:
        for i in order:
            if left == 0:
                break
            if counts[i] < n_max:
                counts[i] += 1
                left -= 1
    return counts


class RolloutBudgetAllocator:
    """Per-prompt rollout counts for a batch, harder prompts getting more (E3 Algorithm 1).

    ``n_min = n_max = default_n`` in the first epoch; each :meth:`end_epoch`
    lowers ``n_min`` and raises ``n_max`` by ``widen_per_epoch`` until
    ``n_min_limit`` / ``n_max_limit``, and re-ranks prompts by cumulative mean
    reward. A sample counts as solved when its reward is above
    ``success_threshold`` (for the logging statistics only).
    """

    def __init__(
        self,
        default_n: int,
        *,
        n_min_limit: int,
        n_max_limit: int,
        widen_per_epoch: int = 2,
        seed: int = 0,
        success_threshold: float = 0.5,
    ) -> None:
        self.default_n = _check_int("default_n", default_n, 1)
        self.n_min_limit = _check_int("n_min_limit", n_min_limit, 1)
        self.n_max_limit = _check_int("n_max_limit", n_max_limit, 1)
        if not self.n_min_limit <= self.default_n <= self.n_max_limit:
            raise ValueError(
                "need n_min_limit <= default_n <= n_max_limit, got "
                f"{self.n_min_limit} <= {self.default_n} <= {self.n_max_limit}"
            )
        self.widen_per_epoch = _check_int("widen_per_epoch", widen_per_epoch, 0)
        self.seed = _check_int("seed", seed, -(2**63))
        if isinstance(success_threshold, bool) or not isinstance(success_threshold, numbers.Real):
            raise TypeError(f"success_threshold must be a real number, got {success_threshold!r}")
        self.success_threshold = float(success_threshold)
        self._epoch = 0
        self._n_min = self.default_n
        self._n_max = self.default_n
        self._calls = 0
        self._totals: dict[PromptId, list[float]] = {}  # id -> [sample count, reward sum]
        self._ranks: dict[PromptId, float] = {}
        self._window = self._empty_window()

    @staticmethod
    def _empty_window() -> dict[str, float]:
        return {
            "prompts": 0,
            "all_wrong": 0,
            "all_correct": 0,
            "samples": 0,
            "reward_sum": 0.0,
            "allocated_prompts": 0,
            "alloc_max": 0,
            "alloc_min": 0,
            "at_n_max": 0,
            "at_n_min": 0,
        }

    @property
    def n_min(self) -> int:
        """Fewest samples any prompt gets in the current epoch."""
        return self._n_min

    @property
    def n_max(self) -> int:
        """Most samples any prompt gets in the current epoch."""
        return self._n_max

    @property
    def epoch(self) -> int:
        """Number of :meth:`end_epoch` calls so far."""
        return self._epoch

    def record(self, prompt_id: PromptId, rewards: Iterable[Any]) -> None:
        """Add one prompt's sample rewards (finite reals) to its cumulative statistics."""
        pid = _check_prompt_id(prompt_id)
        if hasattr(rewards, "tolist"):
            rewards = rewards.tolist()  # tensors and arrays
        values: list[float] = []
        for r in rewards:
            if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r):
                raise ValueError(f"rewards of prompt {pid!r} must be finite numbers, got {r!r}")
            values.append(float(r))
        if not values:
            raise ValueError(f"no rewards given for prompt {pid!r}")
        entry = self._totals.setdefault(pid, [0, 0.0])
        entry[0] += len(values)
        entry[1] += math.fsum(values)
        solved = sum(v > self.success_threshold for v in values)
        w = self._window
        w["prompts"] += 1
        w["all_wrong"] += solved == 0
        w["all_correct"] += solved == len(values)
        w["samples"] += len(values)
        w["reward_sum"] += math.fsum(values)

    def end_epoch(self) -> None:
        """Close a pass over the dataset: widen [n_min, n_max] and re-rank the prompts."""
        self._epoch += 1
        self._n_min = max(self._n_min - self.widen_per_epoch, self.n_min_limit)
        self._n_max = min(self._n_max + self.widen_per_epoch, self.n_max_limit)
        self._ranks = fractional_ranks({pid: s / n for pid, (n, s) in self._totals.items()})

    def difficulty(self, prompt_id: PromptId) -> float:
        """Normalised difficulty ``k`` in (0, 1] (rank / (ranked prompts + 1)); unseen gives 1."""
        pid = _check_prompt_id(prompt_id)
        unseen = len(self._ranks) + 1.0
        return self._ranks.get(pid, unseen) / unseen

    def _tie_key(self, pid: PromptId) -> bytes:
        # seeded and per call, so equally ranked prompts take turns at the spare
        # samples, independent of where they sit in the batch
        text = f"{self.seed}|{self._calls}|{type(pid).__name__}|{pid}"
        return hashlib.blake2b(text.encode(), digest_size=8).digest()

    def allocate(self, prompt_ids: Sequence[PromptId]) -> list[int]:
        """Sample counts for a batch, one per entry, in batch order.

        Guarantees ``sum == len(prompt_ids) * default_n``, every count within
        ``[n_min, n_max]``, and a harder prompt never gets fewer than an
        easier one. Permuting the batch permutes the result.
        """
        pids = [_check_prompt_id(p) for p in prompt_ids]
        unseen = len(self._ranks) + 1.0
        counts = allocate_budget(
            [self._ranks.get(p, unseen) for p in pids],
            [self._tie_key(p) for p in pids],
            default_n=self.default_n,
            n_min=self._n_min,
            n_max=self._n_max,
        )
        self._calls += 1
        if counts:
            w = self._window
            first = w["allocated_prompts"] == 0
            w["allocated_prompts"] += len(counts)
            w["alloc_max"] = max(counts) if first else max(w["alloc_max"], max(counts))
            w["alloc_min"] = min(counts) if first else min(w["alloc_min"], min(counts))
            w["at_n_max"] += sum(c == self._n_max for c in counts)
            w["at_n_min"] += sum(c == self._n_min for c in counts)
        return counts

    def stats(self, reset: bool = True) -> dict[str, float]:
        """Logging scalars since the last reset.

        ``frac_all_wrong`` / ``frac_all_correct`` / ``frac_mixed``: share of
        recorded prompts with no / only / some solved samples; ``mean_reward``
        per sample; ``alloc_min`` / ``alloc_max`` and ``frac_at_n_min`` /
        ``frac_at_n_max`` over allocated prompts; plus the current ``n_min``,
        ``n_max``, ``epoch`` and ``prompts_seen`` (all epochs).
        """
        w = self._window
        prompts = w["prompts"]
        allocated = w["allocated_prompts"]
        out = {
            "n_min": float(self._n_min),
            "n_max": float(self._n_max),
            "epoch": float(self._epoch),
            "prompts_seen": float(len(self._totals)),
            "prompts_recorded": float(prompts),
        }
        if prompts:
            out["frac_all_wrong"] = w["all_wrong"] / prompts
            out["frac_all_correct"] = w["all_correct"] / prompts
            out["frac_mixed"] = 1.0 - (w["all_wrong"] + w["all_correct"]) / prompts
            out["mean_reward"] = w["reward_sum"] / w["samples"]
        if allocated:
            out["alloc_min"] = float(w["alloc_min"])
            out["alloc_max"] = float(w["alloc_max"])
            out["frac_at_n_min"] = w["at_n_min"] / allocated
            out["frac_at_n_max"] = w["at_n_max"] / allocated
        if reset:
            self._window = self._empty_window()
        return out

    def config(self) -> dict[str, Any]:
        """The constructor arguments."""
        return {key: getattr(self, key) for key in (*_CONFIG_KEYS, "success_threshold")}

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (lists, not dicts keyed by prompt id, so JSON keeps int ids)."""
        return {
            "version": _STATE_VERSION,
            "config": self.config(),
            "epoch": self._epoch,
            "n_min": self._n_min,
            "n_max": self._n_max,
            "calls": self._calls,
            "totals": [[pid, int(n), s] for pid, (n, s) in self._totals.items()],
            "ranks": [[pid, r] for pid, r in self._ranks.items()],
            "window": dict(self._window),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the configuration must match this allocator's."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported allocator state version {state.get('version')!r}")
        saved = state["config"]
        mine = self.config()
        mismatched = [k for k in mine if saved.get(k) != mine[k]]
        if mismatched:
            diffs = ", ".join(f"{k}: saved {saved.get(k)!r} != {mine[k]!r}" for k in mismatched)
            raise ValueError(f"allocator state has a different configuration ({diffs})")
        self._epoch = _check_int("epoch", state["epoch"], 0)
        self._n_min = _check_int("n_min", state["n_min"], self.n_min_limit)
        self._n_max = _check_int("n_max", state["n_max"], self.default_n)
        self._calls = _check_int("calls", state["calls"], 0)
        self._totals = {_check_prompt_id(pid): [int(n), float(s)] for pid, n, s in state["totals"]}
        self._ranks = {_check_prompt_id(pid): float(r) for pid, r in state["ranks"]}
        window = self._empty_window()
        window.update(state["window"])
        self._window = window
