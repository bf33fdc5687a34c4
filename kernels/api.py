"""``ead_sample``: validation and backend dispatch for the fused EAD sampler."""

from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Literal, NamedTuple

import torch
from ead_vllm.kernels.schedule import effective_temperature

Backend = Literal["auto", "triton", "cpu", "torch"]
BACKENDS = ("auto", "triton", "cpu", "torch")

# 1 / T must stay finite in fp32 for the kernels; far below any useful temperature.
MIN_TEMPERATURE = 1e-20

_LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class EADSample(NamedTuple):
    """Result of :func:`ead_sample`; every field is a [B] tensor on the logits' device.

    * ``token_ids`` int64: the sampled token of each row.
    * ``logprobs`` fp32: its log-probability under the annealed distribution
      ``softmax(logits / temperatures)``.
    * ``base_logprobs`` fp32: its log-probability under ``softmax(logits / base_temperature)``;
      None when ``ead_sample`` was called with ``return_base_logprobs=False``.
    * ``temperatures`` fp32: the effective temperature ``base_temperature * tau_t``
      (``schedule.effective_temperature``, the same bits on every backend).
    * ``entropy`` fp32: entropy (nats) of the annealed distribution; None when
      ``ead_sample`` was called with ``return_entropy=False``.
    """

    token_ids: torch.Tensor
    logprobs: torch.Tensor
    base_logprobs: torch.Tensor | None
    temperatures: torch.Tensor
    entropy: torch.Tensor | None


def ead_sample(
    logits: torch.Tensor,
    *,
    positions: torch.Tensor,
    seeds: torch.Tensor,
    tau_max: float | torch.Tensor,
    tau_min: float | torch.Tensor,
    decay: float | torch.Tensor,
    warmup: int | torch.Tensor = 0,
    base_temperature: float | torch.Tensor = 1.0,
    backend: Backend = "auto",
    validate: bool = True,
    return_base_logprobs: bool = True,
    return_entropy: bool = True,
) -> EADSample:
    """Sample one token per row with the EAD temperature, in one pass over the vocabulary.

    Row ``b`` is sampled from ``softmax(logits[b] / T_b)`` with
    ``T_b = base_temperature * tau(positions[b])`` and
    ``tau(t) = 1`` for ``t < warmup`` else ``max(1 + tau_max - exp(t / decay), tau_min)``
    (``ead_vllm.kernels.ead_tau``, computed once here in fp32 torch; every
    backend samples at exactly these temperatures, bit for bit).

    Args:
        logits: [B, V] fp32, bf16 or fp16, any strides (upcast to fp32 inside).
        positions: [B] integer tensor, the ``t`` of each row (tokens generated so
            far), >= 0.
        seeds: [B] integer tensor. The noise is a counter-based hash of
            (seed, position, token id), so a row's token depends only on its own
            logits, parameters, seed and position: the same whatever else is in
            the batch, on every backend.
        tau_max, tau_min, decay, base_temperature: > 0, finite; Python numbers or
            tensors of shape [] or [B].
        warmup: >= 0; int or integer tensor of shape [] or [B].
        backend: ``"triton"`` (GPU, or CPU tensors with ``TRITON_INTERPRET=1``),
            ``"cpu"`` (numba kernel, CPU tensors), ``"torch"`` (plain reference,
            any device), ``"auto"`` (triton for GPU tensors when a Triton GPU
            backend works, else torch; cpu for CPU tensors).
        validate: check values (non-negative positions, positive parameters).
            On GPU tensors the value checks synchronise with the device; pass
            False on hot paths whose inputs are known good. Shapes, dtypes and
            devices are always checked.
        return_base_logprobs, return_entropy: compute ``base_logprobs`` /
            ``entropy``; when False the field is None. Without
            ``base_logprobs`` every backend skips the base-temperature
            log-sum-exp; without ``entropy`` the Triton and torch backends skip
            the entropy sum, while the CPU kernel accumulates it anyway (one
            multiply-add per logit, cheaper than a second compiled variant). The
            vLLM glue passes False for both.

    Returns:
        :class:`EADSample`.

    Degenerate rows: a row containing a NaN or +inf, or whose entries are all
    -inf, has no valid distribution. It gets ``token_ids = 0`` and NaN
    ``logprobs``, ``base_logprobs`` and ``entropy`` (``temperatures`` is still
    filled), on every backend, without raising. Any other -inf entries are
    masked tokens and are never sampled.

    Raises:
        TypeError: an argument is not a tensor / number where one is required.
        ValueError: bad shape, dtype, device, value (naming the argument), or a
            backend that cannot run on these tensors.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [B, V], got shape {tuple(logits.shape)}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise ValueError(f"logits must be float32, bfloat16 or float16, got {logits.dtype}")
    n_rows, vocab = logits.shape
    if vocab == 0 or vocab >= 2**31:
        raise ValueError(f"logits must have 1 <= V < 2**31 columns, got V = {vocab}")
    dev = logits.device

    positions = _int_rows("positions", positions, n_rows, dev, scalar_ok=False)
    seeds = _int_rows("seeds", seeds, n_rows, dev, scalar_ok=False)
    warmup_t = _int_rows("warmup", warmup, n_rows, dev, scalar_ok=True)
    params = {
        name: _float_rows(name, value, n_rows, dev)
        for name, value in (
            ("tau_max", tau_max),
            ("tau_min", tau_min),
            ("decay", decay),
            ("base_temperature", base_temperature),
        )
    }
    if validate:
        _check_values(positions, warmup_t, params)

    name = _resolve_backend(backend, dev)
    temperatures = effective_temperature(
        positions,
        tau_max=params["tau_max"],
        tau_min=params["tau_min"],
        decay=params["decay"],
        warmup=warmup_t,
        base_temperature=params["base_temperature"],
    )
    args = (logits, positions, seeds, temperatures, params["base_temperature"])
    flags = {"need_base": bool(return_base_logprobs), "need_entropy": bool(return_entropy)}
    if name == "torch":
        from ead_vllm.kernels.reference import ead_sample_reference as run
    elif name == "cpu":
        from ead_vllm.kernels.cpu_sampler import ead_sample_cpu as run
    else:
        from ead_vllm.kernels.triton_sampler import ead_sample_triton as run
    token_ids, logprobs, base_logprobs, entropy = run(*args, **flags)
    return EADSample(token_ids, logprobs, base_logprobs, temperatures, entropy)


# ------------------------------------------------------------------ backends


def triton_interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks Triton to run kernels on the host."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def triton_gpu_available() -> bool:
    """Whether Triton has a working GPU backend here (not just an importable package).

    ``import triton`` succeeds on CPU-only machines (other packages pull it in),
    so this asks the active driver for its compile target instead.
    """
    if not torch.cuda.is_available():
        return False
    try:
        from triton.runtime import driver

        target = driver.active.get_current_target()
    except Exception:
        return False
    return getattr(target, "backend", None) in ("cuda", "hip")


def _resolve_backend(backend: str, dev: torch.device) -> str:
    if backend == "torch":
        return "torch"
    if backend == "cpu":
        if dev.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, logits are on {dev}")
        return "cpu"
    if backend == "triton":
        if dev.type == "cpu" and not triton_interpreting():
            raise ValueError(
                "backend 'triton' needs GPU tensors (or TRITON_INTERPRET=1 for CPU tensors)"
            )
        if dev.type != "cpu" and not (triton_interpreting() or triton_gpu_available()):
            raise ValueError(f"backend 'triton' has no working Triton GPU backend for {dev}")
        return "triton"
    # auto
    if dev.type == "cpu":
        return "cpu" if _numba_available() else "torch"
    return "triton" if triton_gpu_available() else "torch"


@functools.cache
def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- validation


def _as_tensor(name: str, value, dev: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.device != dev:
            raise ValueError(f"{name} is on {value.device}, logits are on {dev}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")
    return torch.tensor(value, device=dev)


def _rows(name: str, t: torch.Tensor, n_rows: int, scalar_ok: bool) -> torch.Tensor:
    if t.ndim == 0 and scalar_ok:
        return t.expand(n_rows)
    if t.shape != (n_rows,):
        want = "[] or [B]" if scalar_ok else "[B]"
        raise ValueError(f"{name} must have shape {want} with B = {n_rows}, got {tuple(t.shape)}")
    return t


def _int_rows(name: str, value, n_rows: int, dev: torch.device, scalar_ok: bool) -> torch.Tensor:
    if not scalar_ok and not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a [B] integer torch.Tensor, got {type(value).__name__}")
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    t = _as_tensor(name, value, dev)
    if t.dtype not in _INT_DTYPES:
        raise ValueError(f"{name} must have an integer dtype, got {t.dtype}")
    return _rows(name, t, n_rows, scalar_ok).to(torch.int64).contiguous()


def _float_rows(name: str, value, n_rows: int, dev: torch.device) -> torch.Tensor:
    t = _as_tensor(name, value, dev)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    if not isinstance(value, torch.Tensor) and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return _rows(name, t, n_rows, scalar_ok=True).to(torch.float32).contiguous()


def _check_values(
    positions: torch.Tensor, warmup: torch.Tensor, params: dict[str, torch.Tensor]
) -> None:
    if positions.numel() == 0:
        return
    if bool((positions < 0).any()):
        raise ValueError("positions must be >= 0 (tokens generated so far)")
    if bool((warmup < 0).any()):
        raise ValueError("warmup must be >= 0")
    for name, t in params.items():
        if not bool((torch.isfinite(t) & (t > 0)).all()):
            raise ValueError(f"{name} must be finite and > 0 (in fp32)")
    low = params["base_temperature"] * torch.clamp(params["tau_min"], max=1.0)
    if bool((low < MIN_TEMPERATURE).any()):
        raise ValueError(
            f"base_temperature * min(tau_min, 1) must be >= {MIN_TEMPERATURE:g} "
            "(the smallest effective temperature)"
        )


# ------------------------------------------------------------------ warm-up


def prepare(device: torch.device | str, dtype: torch.dtype, vocab_size: int) -> str:
    """Compile and load the kernel variants ``ead_sample(backend="auto")`` uses for these logits.

    Call once at engine start-up so that the first EAD request does not wait
    for a compiler. ``device``: where the logits live; ``dtype``: their dtype
    (fp32/bf16/fp16); ``vocab_size``: V. On a CUDA device with a working
    Triton backend it launches each Triton variant (all four
    ``return_base_logprobs`` x ``return_entropy`` flag pairs) once on a
    [1, V] input; on CPU it compiles the numba kernel or loads it from numba's
    on-disk cache (``cache=True``; one fp32 signature serves every dtype).
    A second call with the same arguments returns at once.

    Returns the backend that was prepared: ``"triton"``, ``"cpu"`` or ``"torch"``
    (nothing to compile).
    """
    dev = torch.device(device)
    if dtype not in _LOGIT_DTYPES:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if not 1 <= vocab_size < 2**31:
        raise ValueError(f"vocab_size must be in [1, 2**31), got {vocab_size}")
    name = _resolve_backend("auto", dev)
    if name == "cpu":
        _prepare_cpu()
    elif name == "triton":
        from ead_vllm.kernels.triton_sampler import prepare_triton

        prepare_triton(dev, dtype, int(vocab_size))
    return name


@functools.cache
def _prepare_cpu() -> None:
    from ead_vllm.kernels.cpu_sampler import prepare_cpu

    prepare_cpu()
