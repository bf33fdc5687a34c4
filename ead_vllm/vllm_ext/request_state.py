"""Per-row EAD state of runner V1's persistent batch: :class:`EADRowTable` and its view.

The table is fed by :class:`~ead_vllm.vllm_ext.v1_batch_state.EADBatchState`, a V1
logits processor whose ``apply`` does nothing: it exists to receive vLLM's
``BatchUpdate`` stream (rows added, removed, moved), which is the only place where
runner V1 exposes each row's ``SamplingParams`` (and so ``extra_args``) together
with a live reference to the row's output-token list. The generated-token position of a row is
``t = len(output_ids)`` at sampling time, read fresh every step, which stays
exact through everything the runner does to its batch:

* condense/reorder: ``moved`` entries carry the row (and its list reference)
  to its new index;
* preemption and resumption: the row is removed, then re-added with the
  request's retained (or, under async scheduling, restored) output list;
* chunked prefill: a partial-prefill row appends nothing, so it stays at the
  same ``t`` and its (discarded) sample reuses the final chunk's noise key;
* async scheduling: the runner appends a ``-1`` placeholder per in-flight
  sampled token, so the length already counts it;
* n > 1: vLLM fans out one child request per sample, each its own row (with
  ``seed + index`` when the parent was seeded).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ead_vllm.params import EADParams

if TYPE_CHECKING:
    from ead_vllm.vllm_ext.ead_route import RowSchedule

# vLLM treats temperatures below this as greedy (vllm.sampling_params._SAMPLING_EPS).
SAMPLING_EPS = 1e-5
_SEED_MASK = (1 << 63) - 1


@dataclass(slots=True, eq=False)
class EADRow:
    """One EAD row: its schedule, noise seed and vLLM's live output-token list."""

    params: EADParams
    seed: int
    output_ids: list[int]
    # top-k, top-p or min-p set: masks at T * tau_t before the kernel
    needs_mask: bool


@dataclass(frozen=True, slots=True)
class EADBatchView:
    """The EAD rows of the current batch, ascending by row index (numpy, host side)."""

    index: np.ndarray  # int64 row indices into the batch
    positions: np.ndarray  # int64 t per row
    seeds: np.ndarray  # int64
    tau_max: np.ndarray  # float32
    tau_min: np.ndarray
    decay: np.ndarray
    warmup: np.ndarray  # int64
    needs_mask: np.ndarray  # bool

    def schedule(self, device: torch.device) -> RowSchedule:
        """The rows' positions and schedule as [N] tensors on ``device``."""
        from ead_vllm.vllm_ext.ead_route import RowSchedule

        return RowSchedule(
            positions=torch.from_numpy(self.positions).to(device),
            tau_max=torch.from_numpy(self.tau_max).to(device),
            tau_min=torch.from_numpy(self.tau_min).to(device),
            decay=torch.from_numpy(self.decay).to(device),
            warmup=torch.from_numpy(self.warmup).to(device),
        )

    def taus(self, device: torch.device) -> torch.Tensor:
        """``tau_t`` of each row, [N] fp32, by the kernels' one definition (``ead_tau``)."""
        return self.schedule(device).taus()


@dataclass(frozen=True, slots=True)
class _Static:
    rows: tuple[EADRow, ...]
    index: np.ndarray
    seeds: np.ndarray
    tau_max: np.ndarray
    tau_min: np.ndarray
    decay: np.ndarray
    warmup: np.ndarray
    offset: np.ndarray
    needs_mask: np.ndarray


def request_seed(sampling_params: Any, rng: random.Random) -> int:
    """The 63-bit noise seed of a request.

    A request seed is used as is (so a seeded request samples the same tokens
    whatever else is in the batch). Without one, a fresh draw from ``rng``
    (the engine's own generator, seeded by the engine seed) is made each time
    the row enters the batch: independent across requests, and a resumed
    request only gets new noise for positions it has not sampled yet.
    """
    seed = getattr(sampling_params, "seed", None)
    if seed is None:
        return rng.getrandbits(63)
    return int(seed) & _SEED_MASK


def needs_mask(sampling_params: Any, vocab_size: int) -> bool:
    """True if the request sets top-k, top-p or min-p (the masks vLLM applies after temperature)."""
    top_k = int(sampling_params.top_k or 0)
    return (
        0 < top_k < vocab_size
        or float(sampling_params.top_p) < 1.0
        or float(sampling_params.min_p or 0.0) > 0.0
    )


def make_row(
    sampling_params: Any,
    output_ids: list[int],
    rng: random.Random,
    vocab_size: int,
    defaults: EADParams | None = None,
) -> EADRow | None:
    """The :class:`EADRow` of a request entering the batch, or ``None`` for a non-EAD row.

    Greedy requests (temperature below vLLM's epsilon) are never EAD rows:
    the schedule cannot change an argmax. ``defaults``: the engine's EAD defaults.
    """
    if sampling_params is None or float(sampling_params.temperature) < SAMPLING_EPS:
        return None
    params = EADParams.from_extra_args(sampling_params.extra_args, defaults)
    if params is None:
        return None
    return EADRow(
        params=params,
        seed=request_seed(sampling_params, rng),
        output_ids=output_ids,
        needs_mask=needs_mask(sampling_params, vocab_size),
    )


class EADRowTable:
    """Row index -> :class:`EADRow`, kept in step with vLLM's ``BatchUpdate``s."""

    def __init__(
        self, vocab_size: int, seed: int | None, defaults: EADParams | None = None
    ) -> None:
        self.vocab_size = vocab_size
        #: the engine's EAD defaults (requests without ead_* keys), if any
        self.defaults = defaults
        self.rows: dict[int, EADRow] = {}
        self.batch_size = 0
        self._rng = random.Random(seed)
        self._static: _Static | None = None

    def update(self, batch_update: Any) -> bool:
        """Apply one ``BatchUpdate`` (removed, added, moved); True if EAD rows changed."""
        if batch_update is None:
            return False
        from ead_vllm.vllm_ext.seams.v1_logits_processor import process_dict_updates

        self.batch_size = batch_update.batch_size
        changed = process_dict_updates()(
            self.rows,
            batch_update,
            lambda params, _prompt, output_ids: make_row(
                params, output_ids, self._rng, self.vocab_size, self.defaults
            ),
        )
        if changed:
            self._static = None
        return changed

    def _build_static(self) -> _Static:
        items = sorted(self.rows.items())
        rows = tuple(row for _, row in items)
        return _Static(
            rows=rows,
            index=np.fromiter((i for i, _ in items), dtype=np.int64, count=len(items)),
            seeds=np.fromiter((r.seed for r in rows), dtype=np.int64, count=len(rows)),
            tau_max=np.array([r.params.tau_max for r in rows], dtype=np.float32),
            tau_min=np.array([r.params.tau_min for r in rows], dtype=np.float32),
            decay=np.array([r.params.decay for r in rows], dtype=np.float32),
            warmup=np.array([r.params.warmup for r in rows], dtype=np.int64),
            offset=np.array([r.params.offset for r in rows], dtype=np.int64),
            needs_mask=np.array([r.needs_mask for r in rows], dtype=bool),
        )

    def view(self) -> EADBatchView | None:
        """The EAD rows with their current positions, or ``None`` when there are none."""
        if not self.rows:
            return None
        if self._static is None:
            self._static = self._build_static()
        s = self._static
        # t = the tokens this request generated so far, plus its ead_offset
        positions = s.offset + np.fromiter(
            (len(r.output_ids) for r in s.rows), dtype=np.int64, count=len(s.rows)
        )
        return EADBatchView(
            index=s.index,
            positions=positions,
            seeds=s.seeds,
            tau_max=s.tau_max,
            tau_min=s.tau_min,
            decay=s.decay,
            warmup=s.warmup,
            needs_mask=s.needs_mask,
        )
