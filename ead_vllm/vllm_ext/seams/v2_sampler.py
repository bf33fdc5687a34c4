"""Seam: runner V2's ``Sampler`` (``vllm/v1/worker/gpu/sample/sampler.py``).

Three shapes, each naming the versions it handles:

* **shape A0, vLLM 0.24.0-0.27.0** (no :data:`~.versions.V2_THINKING_BUDGET`):
  ``Sampler(max_num_reqs, vocab_size, device, req_states, logprobs_mode,
  num_speculative_tokens, use_fp64_gumbel)``, ``add_request(req_idx, prompt_len,
  sampling_params)``, ``sample(logits, expanded_idx_mapping, idx_mapping_np, pos,
  input_ids, expanded_local_pos, return_logprobs)`` (no ``idx_mapping``), no sampling
  masks (``return_sampling_mask``) and no processor chain: the stages are fixed
  attributes (logit bias, penalties, bad words), then temperature, min_p, top-k/top-p.
* **shape A, vLLM 0.28.0-0.30.0**: as A0, plus ``reasoning_config`` and
  ``return_sampling_mask`` (and from 0.29.0 ``enable_trace_replay`` before them,
  :data:`~.versions.V2_TRACE_REPLAY`, which ead-vllm passes on untouched), ``sample``
  takes ``idx_mapping`` after ``expanded_idx_mapping``, and the thinking budget is a
  fourth fixed stage after bad words.
* **shape B, vLLM 0.31.0 and later** (:data:`~.versions.V2_SAMPLER_VLLM_CONFIG`; the
  same in 0.31.0-0.34.0): ``Sampler(vllm_config, max_num_reqs,
  ..., custom_logits_processors)``, ``add_request(req_idx, sampling_params)``,
  ``sample(..., expanded_local_pos, seq_lens_upper_bound_np, return_logprobs)``, and
  ``self.logits_processors`` (bias, penalties, bad words, custom), each
  ``apply(logits, ctx)``, then the thinking budget, temperature, min_p, top-k/top-p.

Shape A0 also handles 0.24.0-0.26.0 (the same signatures). In every shape vLLM runs its
stages on a float32 copy of the logits (from 0.27.0 only when some row needs a stage),
except in 0.26.0, which runs them in place in the model's dtype
(:data:`~.versions.V2_LOGITS_IN_MODEL_DTYPE`): :func:`working_logits` makes the EAD
route's copy the same way, so non-EAD rows see vLLM's own arithmetic.

The EAD sampler override (:class:`~ead_vllm.vllm_ext.v2_sampler.EADSamplerV2`) reads
the constructor, ``add_request`` and ``sample`` arguments through :func:`current`'s
:class:`Shape` (by name, whatever the shape) and runs vLLM's pre-temperature stages
through :meth:`Shape.processors`. What comes after them (temperature, min_p,
top-k/top-p, vLLM's random sampler) is the seam :mod:`.v2_stock_sampling`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from ead_vllm.vllm_ext.seams import v2_logits_processor as lp_seam
from ead_vllm.vllm_ext.seams.signature import Expectation, attr
from ead_vllm.vllm_ext.seams.versions import (
    SUPPORTED,
    V2_LOGITS_IN_MODEL_DTYPE,
    V2_SAMPLER_VLLM_CONFIG,
    V2_SAMPLING_MASK,
    V2_THINKING_BUDGET,
    V2_TRACE_REPLAY,
    installed_release,
)

SAMPLER_MODULE = "vllm.v1.worker.gpu.sample.sampler"
STATES_MODULE = "vllm.v1.worker.gpu.sample.states"
#: the log-prob modes reported from the processed logits: vLLM's
#: ``vllm.config.model.PROCESSED_LOGPROBS_MODES`` from 0.27.0 on, the same two modes
#: spelled out before it
PROCESSED_LOGPROBS_MODES: tuple[str, ...] = ("processed_logits", "processed_logprobs")
SAMPLE_PARAMS_A0 = (
    "self",
    "logits",
    "expanded_idx_mapping",
    "idx_mapping_np",
    "pos",
    "input_ids",
    "expanded_local_pos",
    "return_logprobs",
)
SAMPLE_PARAMS_A = (*SAMPLE_PARAMS_A0[:3], "idx_mapping", *SAMPLE_PARAMS_A0[3:])
SAMPLE_PARAMS_B = (*SAMPLE_PARAMS_A[:-1], "seq_lens_upper_bound_np", "return_logprobs")
#: the stock constructor's parameters up to use_fp64_gumbel in shapes A0 and A
_INIT_PARAMS_A0 = (
    "self",
    "max_num_reqs",
    "vocab_size",
    "device",
    "req_states",
    "logprobs_mode",
    "num_speculative_tokens",
    "use_fp64_gumbel",
)


def sampler_class() -> type:
    """Runner V2's ``Sampler`` class (the EAD sampler subclasses it)."""
    return attr(SAMPLER_MODULE, "Sampler")


@functools.cache
def _stock_signature(method: str) -> inspect.Signature:
    # read once per process: sample() binds its arguments every step
    return inspect.signature(attr(SAMPLER_MODULE, "Sampler", method))


def _sampler(method: str) -> Callable[[], Any]:
    return lambda: attr(SAMPLER_MODULE, "Sampler", method)


@dataclasses.dataclass(frozen=True)
class SampleCall:
    """One ``Sampler.sample`` call's arguments, the same fields in every shape."""

    logits: torch.Tensor
    expanded_idx_mapping: torch.Tensor
    idx_mapping: torch.Tensor | None  # None in shape A0
    idx_mapping_np: Any
    pos: torch.Tensor
    input_ids: torch.Tensor
    expanded_local_pos: torch.Tensor
    seq_lens_upper_bound_np: Any  # None in shape A
    return_logprobs: bool

    def context(self) -> Any:
        """The step's ``LogitsContext`` (vLLM's, or the 0.24-0.30 stand-in)."""
        return lp_seam.LogitsContext(
            expanded_idx_mapping=self.expanded_idx_mapping,
            idx_mapping=self.idx_mapping,
            idx_mapping_np=self.idx_mapping_np,
            expanded_local_pos=self.expanded_local_pos,
            input_ids=self.input_ids,
            pos=self.pos,
            seq_lens_upper_bound_np=self.seq_lens_upper_bound_np,
        )


class Shape:
    """What differs between runner-V2 ``Sampler`` versions (subclasses: A0, A and B)."""

    name: str
    add_request_params: tuple[str, ...]
    sample_params: tuple[str, ...]

    def fits(self, version: str) -> bool:
        """True when this shape is the one written for vLLM ``version``."""
        raise NotImplementedError

    @property
    def versions(self) -> tuple[str, ...]:
        """The supported releases this shape handles."""
        return tuple(v for v in SUPPORTED if self.fits(v))

    def init_params(self, version: str) -> tuple[str, ...]:
        """The stock constructor's parameters in vLLM release ``version``."""
        raise NotImplementedError

    def expected(self, version: str) -> tuple[Expectation, ...]:
        """The signatures this shape was written against, for vLLM release ``version``."""
        return (
            Expectation(
                f"{SAMPLER_MODULE}.Sampler.__init__",
                _sampler("__init__"),
                self.init_params(version),
            ),
            Expectation(
                f"{SAMPLER_MODULE}.Sampler.add_request",
                _sampler("add_request"),
                self.add_request_params,
            ),
            Expectation(f"{SAMPLER_MODULE}.Sampler.sample", _sampler("sample"), self.sample_params),
            Expectation(
                f"{SAMPLER_MODULE}.Sampler.apply_staged_writes",
                _sampler("apply_staged_writes"),
                ("self",),
            ),
            Expectation(
                f"{STATES_MODULE}.SamplingStates.apply_temperature",
                lambda: attr(STATES_MODULE, "SamplingStates", "apply_temperature"),
                ("self", "logits", "expanded_idx_mapping", "idx_mapping_np"),
            ),
            *self._stage_expectations(),
        )

    def _stage_expectations(self) -> tuple[Expectation, ...]:
        return ()

    # -- construction ---------------------------------------------------------------

    @staticmethod
    def _bind(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = _stock_signature(method).bind(None, *args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def init_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The stock constructor's arguments by name (``vllm_config`` is None in A0 and A)."""
        arguments = self._bind("__init__", args, kwargs)
        arguments.setdefault("vllm_config", None)
        return arguments

    # -- per request ----------------------------------------------------------------

    def add_request_arguments(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[int, Any]:
        """``(req_idx, sampling_params)`` of an ``add_request`` call."""
        arguments = self._bind("add_request", args, kwargs)
        return arguments["req_idx"], arguments["sampling_params"]

    def call_add_request(
        self, sampler: Any, req_idx: int, prompt_len: int, sampling_params: Any
    ) -> None:
        """Call ``sampler.add_request`` as runner V2 of these versions calls it."""
        if "prompt_len" in self.add_request_params:
            sampler.add_request(req_idx, prompt_len, sampling_params)
        else:
            sampler.add_request(req_idx, sampling_params)

    # -- per step -------------------------------------------------------------------

    def sample_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SampleCall:
        """The ``sample`` call's arguments by name (``idx_mapping`` None in A0,
        ``seq_lens_upper_bound_np`` None in A0 and A)."""
        arguments = self._bind("sample", args, kwargs)
        arguments.pop("self")
        arguments.setdefault("idx_mapping", None)
        arguments.setdefault("seq_lens_upper_bound_np", None)
        return SampleCall(**arguments)

    def call_sample(
        self, sampler: Any, logits: torch.Tensor, ctx: Any, return_logprobs: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Call ``sampler.sample`` as ``Sampler.__call__`` of these versions calls it.

        ``ctx`` is a ``LogitsContext`` (or the 0.24-0.30 stand-in) holding the step's
        batch layout; its fields carry the names of ``sample``'s parameters.
        """
        layout = [getattr(ctx, name) for name in self.sample_params[2:-1]]
        return sampler.sample(logits, *layout, return_logprobs=return_logprobs)

    def processors(self, sampler: Any, logits: torch.Tensor, call: SampleCall) -> torch.Tensor:
        """vLLM's stages before temperature, in vLLM's order: logit bias, penalties, bad
        words, custom processors (B only), thinking budget (A and B). ``logits`` must be
        vLLM's float32 copy; it is changed in place where vLLM changes it in place."""
        raise NotImplementedError


_STAGES = "vllm.v1.worker.gpu.sample"


class ShapeA0(Shape):
    """vLLM 0.24.0-0.27.0: as A, without the thinking budget, ``idx_mapping`` and sampling
    masks."""

    name = "A0"
    add_request_params = ("self", "req_idx", "prompt_len", "sampling_params")
    sample_params = SAMPLE_PARAMS_A0

    def fits(self, version: str) -> bool:
        return not V2_THINKING_BUDGET.holds(version)

    def init_params(self, version: str) -> tuple[str, ...]:
        return _INIT_PARAMS_A0

    def _stage_expectations(self) -> tuple[Expectation, ...]:
        return (
            Expectation(
                f"{_STAGES}.logit_bias.LogitBiasState.apply_logit_bias",
                lambda: attr(f"{_STAGES}.logit_bias", "LogitBiasState", "apply_logit_bias"),
                ("self", "logits", "expanded_idx_mapping", "idx_mapping_np", "pos"),
            ),
            Expectation(
                f"{_STAGES}.penalties.PenaltiesState.apply_penalties",
                lambda: attr(f"{_STAGES}.penalties", "PenaltiesState", "apply_penalties"),
                (
                    "self",
                    "logits",
                    "expanded_idx_mapping",
                    "idx_mapping_np",
                    "input_ids",
                    "expanded_local_pos",
                ),
            ),
            Expectation(
                f"{_STAGES}.bad_words.BadWordsState.apply_bad_words",
                lambda: attr(f"{_STAGES}.bad_words", "BadWordsState", "apply_bad_words"),
                (
                    "self",
                    "logits",
                    "expanded_idx_mapping",
                    "idx_mapping_np",
                    "input_ids",
                    "expanded_local_pos",
                ),
            ),
        )

    def processors(self, sampler: Any, logits: torch.Tensor, call: SampleCall) -> torch.Tensor:
        rows, rows_np = call.expanded_idx_mapping, call.idx_mapping_np
        sampler.logit_bias_state.apply_logit_bias(logits, rows, rows_np, call.pos)
        sampler.penalties_state.apply_penalties(
            logits, rows, rows_np, call.input_ids, call.expanded_local_pos
        )
        sampler.bad_words_state.apply_bad_words(
            logits, rows, rows_np, call.input_ids, call.expanded_local_pos
        )
        return logits


class ShapeA(ShapeA0):
    """vLLM 0.28.0-0.30.0: no ``vllm_config``, no processor chain, a thinking budget."""

    name = "A"
    sample_params = SAMPLE_PARAMS_A

    def fits(self, version: str) -> bool:
        return V2_THINKING_BUDGET.holds(version) and not V2_SAMPLER_VLLM_CONFIG.holds(version)

    def init_params(self, version: str) -> tuple[str, ...]:
        replay = ("enable_trace_replay",) if V2_TRACE_REPLAY.holds(version) else ()
        return (*_INIT_PARAMS_A0, *replay, "reasoning_config", "return_sampling_mask")

    def _stage_expectations(self) -> tuple[Expectation, ...]:
        return (
            *super()._stage_expectations(),
            Expectation(
                f"{_STAGES}.thinking_budget.ThinkingBudgetState.apply",
                lambda: attr(f"{_STAGES}.thinking_budget", "ThinkingBudgetState", "apply"),
                (
                    "self",
                    "logits",
                    "expanded_idx_mapping",
                    "idx_mapping",
                    "idx_mapping_np",
                    "input_ids",
                    "expanded_local_pos",
                ),
            ),
        )

    def processors(self, sampler: Any, logits: torch.Tensor, call: SampleCall) -> torch.Tensor:
        logits = super().processors(sampler, logits, call)
        sampler.thinking_budget_state.apply(
            logits,
            call.expanded_idx_mapping,
            call.idx_mapping,
            call.idx_mapping_np,
            call.input_ids,
            call.expanded_local_pos,
        )
        return logits


class ShapeB(Shape):
    """vLLM 0.31.0 and later: ``vllm_config`` first, a processor chain."""

    name = "B"
    add_request_params = ("self", "req_idx", "sampling_params")
    sample_params = SAMPLE_PARAMS_B

    def fits(self, version: str) -> bool:
        return V2_SAMPLER_VLLM_CONFIG.holds(version)

    def init_params(self, version: str) -> tuple[str, ...]:
        return (
            "self",
            "vllm_config",
            *_INIT_PARAMS_A0[1:],
            "enable_trace_replay",
            "return_sampling_mask",
            "custom_logits_processors",
        )

    def _stage_expectations(self) -> tuple[Expectation, ...]:
        sample = _STAGES
        stages = (
            ("logit_bias", "LogitBiasState"),
            ("penalties", "PenaltiesState"),
            ("bad_words", "BadWordsState"),
            ("thinking_budget", "ThinkingBudgetState"),
        )
        return tuple(
            Expectation(
                f"{sample}.{module}.{cls}.apply",
                functools.partial(attr, f"{sample}.{module}", cls, "apply"),
                ("self", "logits", "ctx"),
            )
            for module, cls in stages
        )

    def processors(self, sampler: Any, logits: torch.Tensor, call: SampleCall) -> torch.Tensor:
        ctx = call.context()
        for proc in sampler.logits_processors:
            logits = proc.apply(logits, ctx)
        sampler.thinking_budget_state.apply(logits, ctx)
        return logits


SHAPES: tuple[Shape, ...] = (ShapeA0(), ShapeA(), ShapeB())


def shape_for(version: str) -> Shape:
    """The shape written for vLLM ``version`` (a release such as ``"0.30.0"``)."""
    return next(shape for shape in SHAPES if shape.fits(version))


@functools.cache
def current() -> Shape:
    """The shape of the installed vLLM (the start-up gate has checked its signatures)."""
    return shape_for(installed_release())


@functools.cache
def _stages_in_model_dtype() -> bool:
    return V2_LOGITS_IN_MODEL_DTYPE.holds(installed_release())


def working_logits(logits: torch.Tensor) -> torch.Tensor:
    """The copy of a step's ``logits`` that vLLM's stages run on, as vLLM makes it: float32,
    or on vLLM 0.26.0 the model's own dtype (the raw logits stay untouched for raw
    log-probs either way)."""
    dtype = logits.dtype if _stages_in_model_dtype() else torch.float32
    return torch.empty_like(logits, dtype=dtype).copy_(logits)


def returns_sampling_mask(sampler: Any) -> bool:
    """True when ``sampler`` (runner V2's ``Sampler``, as vLLM built it) returns sampling
    masks, which vLLM computes from every row's processed logits (none before 0.28.0,
    :data:`~.versions.V2_SAMPLING_MASK`)."""
    return V2_SAMPLING_MASK.holds(installed_release()) and bool(sampler.return_sampling_mask)
