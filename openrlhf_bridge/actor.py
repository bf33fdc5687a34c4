"""Per-position temperature and entropy measurement on OpenRLHF's ``Actor``.

OpenRLHF's ``Actor.forward`` divides the logits by one scalar
``self.temperature``. :class:`PolicyTemperature` attaches to an ``Actor``
instance (the policy's or the reference model's) and takes that job over:
the logits row that predicts generated token ``t`` is divided by
``base_temperature * tau_t`` (``tau_t = 1`` without the positional EAD
correction), the same effective temperature the EAD sampler used, so the
log-probs (and OpenRLHF's entropy) describe the rollout policy. Optionally it
accumulates the entropy of that distribution over the action tokens.

It works with two forward hooks instead of a copy of ``Actor.forward``: a
pre-hook on the ``Actor`` reads ``action_mask``/``attention_mask`` and builds
the per-row temperatures, a hook on ``actor.model`` (the HF model or its
DeepSpeed engine) divides the logits it returns, in place where OpenRLHF
would divide them by its scalar temperature (no [tokens, V] copy beyond
stock's; ``benchmarks/bridge_memory.py`` measures it).

With ``--ead.correction positional``, a late token's logits are divided by
``T * tau_t``, so their gradients are scaled by ``1 / tau_t`` relative to
training at ``T`` (10x at ``tau_t = 0.1``); :func:`action_tau_range` gives the
range of ``tau_t`` over a batch, logged with the step's metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from ead_vllm.params import EADParams
from ead_vllm.schedules import ead_temperature

_ENTROPY_CHUNK = 256  # rows per softmax: 256 x 152k fp32 is ~150 MB


def span_positions(action_mask: torch.Tensor) -> torch.Tensor:
    """Generated-token position ``t`` of each action column (int64, same shape).

    ``t`` counts the action tokens before it in the same contiguous span, so
    it restarts at every span: a single-turn response is one span; in a
    multi-turn rollout each turn is a separate vLLM request, whose own ``t``
    also restarts. Non-action columns get 0.
    """
    mask = action_mask.bool()
    columns = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    previous = torch.nn.functional.pad(mask[..., :-1], (1, 0), value=False)
    starts = mask & ~previous
    last_start = torch.where(starts, columns, torch.full_like(columns, -1)).cummax(dim=-1).values
    return torch.where(mask, columns - last_start, torch.zeros_like(columns))


def row_temperatures(
    action_mask: torch.Tensor,
    seq_len: int,
    *,
    base_temperature: float,
    ead: EADParams | None,
) -> torch.Tensor:
    """Effective temperature of every logits row, float32 [B, seq_len].

    OpenRLHF's layout: logits row ``p`` predicts token ``p + 1``, i.e. log-prob
    column ``p``; ``action_mask`` [B, A] covers the last ``A`` of the
    ``seq_len - 1`` log-prob columns. Rows of action tokens get
    ``base_temperature * tau_t`` (``tau_t = 1`` when ``ead`` is None), all
    other rows ``base_temperature``.
    """
    batch, actions = action_mask.shape
    if actions > seq_len - 1:
        raise ValueError(f"action_mask has {actions} columns for {seq_len} tokens")
    tau = torch.ones(batch, seq_len, dtype=torch.float32, device=action_mask.device)
    if ead is not None:
        t = span_positions(action_mask).to(torch.float32)
        scheduled = ead_temperature(
            t, tau_max=ead.tau_max, tau_min=ead.tau_min, decay=ead.decay, warmup=ead.warmup
        )
        start = seq_len - 1 - actions
        tau[:, start : seq_len - 1] = torch.where(action_mask.bool(), scheduled, 1.0)
    return tau * float(base_temperature)


def action_rows(action_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Bool [B, seq_len]: logits rows that predict an action token."""
    rows = torch.zeros(action_mask.shape[0], seq_len, dtype=torch.bool, device=action_mask.device)
    rows[:, seq_len - 1 - action_mask.shape[1] : seq_len - 1] = action_mask.bool()
    return rows


def masked_entropy_sum(logits: torch.Tensor, rows: torch.Tensor) -> tuple[float, int]:
    """Entropy of ``softmax(logits)`` summed over the rows selected by ``rows``.

    ``logits`` [..., V], ``rows`` bool of the leading shape. Works in chunks of
    rows, so the selected logits are never copied out at once. Returns
    (sum in nats, number of rows).
    """
    index = rows.nonzero(as_tuple=True)
    count = int(index[0].numel())
    total = 0.0
    for start in range(0, count, _ENTROPY_CHUNK):
        part = tuple(i[start : start + _ENTROPY_CHUNK] for i in index)
        log_p = torch.log_softmax(logits[part].float(), dim=-1)
        total += float(-(log_p.exp() * log_p).sum(dim=-1).double().sum())
    return total, count


def _pack(
    rows: torch.Tensor, attention_mask: torch.Tensor, ring_attn_group: Any, pad: Any
) -> torch.Tensor:
    # The same layout as OpenRLHF's unpad_and_slice_tensor: non-padding positions of the
    # flattened batch, in order, then padded and sliced for this ring-attention rank.
    packed = rows.reshape(-1)[attention_mask.reshape(-1).bool()].unsqueeze(0)
    if ring_attn_group is not None:
        from openrlhf.models.ring_attn_utils import get_tensor_in_current_ring_attn_rank

        packed, _ = get_tensor_in_current_ring_attn_rank(packed, ring_attn_group, pad)
    return packed


_OUTSIDE = object()  # _pending while no Actor.forward is running


class PolicyTemperature:
    """Bridge-owned temperature of one OpenRLHF ``Actor`` (policy or reference).

    After :meth:`attach`, ``actor.temperature`` is 1 and the hooks apply
    :meth:`set_state`'s ``base_temperature`` (times ``tau_t`` with EAD params)
    to every forward that has an ``action_mask``. Inside :meth:`measuring`,
    each such forward also adds the entropy of the scaled distribution over
    its action tokens to a running (sum, count), read by :meth:`pop_entropy`.
    """

    def __init__(self, actor: torch.nn.Module, *, base_temperature: float = 1.0) -> None:
        self.actor = actor
        self.base_temperature = float(base_temperature)
        self.ead: EADParams | None = None
        self._measure = False
        self._entropy_sum = 0.0
        self._entropy_tokens = 0.0
        self._pending: Any = _OUTSIDE
        self._handles: list[Any] = []

    @classmethod
    def attach(cls, actor: torch.nn.Module, *, base_temperature: float) -> PolicyTemperature:
        """Install the hooks on ``actor`` (an OpenRLHF ``Actor``) and return the handle."""
        self = cls(actor, base_temperature=base_temperature)
        actor.temperature = 1.0  # the hook applies the whole temperature from now on
        self._handles = [
            actor.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            actor.register_forward_hook(self._after_forward, always_call=True),
            actor.model.register_forward_hook(self._scale_logits),
        ]
        return self

    def detach(self) -> None:
        """Remove the hooks (``actor.temperature`` is set back to the base temperature)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.actor.temperature = self.base_temperature

    def set_state(self, base_temperature: float, ead: Mapping[str, Any] | None) -> None:
        """Temperature (and flat ``ead_*`` params, or None) for the following forwards."""
        self.base_temperature = float(base_temperature)
        self.ead = EADParams.from_extra_args(ead) if ead else None

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Accumulate action-token entropy for the forwards run inside this block."""
        self._measure = True
        try:
            yield
        finally:
            self._measure = False

    def pop_entropy(self) -> tuple[float, float]:
        """(sum of entropies, number of action tokens) since the last call; resets both."""
        out = (self._entropy_sum, self._entropy_tokens)
        self._entropy_sum = 0.0
        self._entropy_tokens = 0.0
        return out

    def _before_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        names = ("sequences", "action_mask", "attention_mask")
        values = dict(zip(names, args, strict=False))
        values.update({k: kwargs[k] for k in names if k in kwargs})
        sequences, action_mask = values.get("sequences"), values.get("action_mask")
        if sequences is None or action_mask is None:
            self._pending = None  # no action tokens: only the base temperature applies
            return
        device = sequences.device
        seq_len = sequences.shape[1]
        action_mask = action_mask.to(device)
        scale = row_temperatures(
            action_mask, seq_len, base_temperature=self.base_temperature, ead=self.ead
        )
        rows = action_rows(action_mask, seq_len) if self._measure else None
        if getattr(module, "packing_samples", False):
            attention_mask = values["attention_mask"].to(device)
            group = kwargs.get("ring_attn_group")
            scale = _pack(scale, attention_mask, group, 1.0)
            if rows is not None:
                rows = _pack(rows.float(), attention_mask, group, 0.0) > 0.5
        self._pending = (scale, rows)

    def _after_forward(self, module: Any, args: tuple, output: Any) -> None:
        self._pending = _OUTSIDE

    @staticmethod
    def divide(logits: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        """fp32 ``logits / scale``, in place when ``logits`` is fp32 already.

        Exactly OpenRLHF's two steps with the per-row temperature: ``Actor.forward``
        casts the logits to fp32 (a no-op on fp32 logits, and on ours, which come
        first) and divides them in place by its scalar temperature (1 while
        attached). No [tokens, V] tensor exists here beyond stock OpenRLHF's: the only
        copy is the fp32 cast of low-precision logits, which stock makes too, and fp32
        logits are divided in place, as stock divides them whenever its temperature
        is not 1.
        """
        logits = logits.to(torch.float32)
        return logits.div_(scale)

    def _scale_logits(self, module: Any, args: tuple, output: Any) -> Any:
        if self._pending is _OUTSIDE:
            return output  # the model called outside Actor.forward: not ours to scale
        logits = output["logits"]
        if self._pending is None:
            scale: torch.Tensor | float = self.base_temperature
            rows = None
        else:
            scale, rows = self._pending
            scale = scale.to(logits.device).unsqueeze(-1)
        logits = self.divide(logits, scale)
        output["logits"] = logits
        if rows is not None:
            with torch.no_grad():
                total, count = masked_entropy_sum(logits, rows.to(logits.device))
            self._entropy_sum += total
            self._entropy_tokens += count
        return output


def action_tau_range(action_masks: Iterable[torch.Tensor], ead: EADParams) -> tuple[float, float]:
    """(min, max) of ``tau_t`` over every action token of ``action_masks`` (each [B, A]).

    What the positional correction divides those tokens' logits by (times the
    base temperature); the logit gradients of a token scale by ``1 / tau_t``.
    (1.0, 1.0) when there is no action token.
    """
    low, high = math.inf, -math.inf
    for mask in action_masks:
        positions = span_positions(mask)[mask.bool()].to(torch.float32)
        if positions.numel():
            tau = ead_temperature(
                positions,
                tau_max=ead.tau_max,
                tau_min=ead.tau_min,
                decay=ead.decay,
                warmup=ead.warmup,
            )
            low, high = min(low, float(tau.min())), max(high, float(tau.max()))
    return (1.0, 1.0) if low > high else (low, high)
