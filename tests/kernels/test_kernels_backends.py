"""Every backend against the torch reference, plus the properties the kernels promise.

The triton backend runs here under the Triton interpreter (``TRITON_INTERPRET=1``
while the kernel module is imported and during each test), on CPU tensors: it checks the
kernel's arithmetic, masking, splitting and reduction, not GPU compilation or
GPU speed. The interpreter runs each program in Python (tens of ms), so
triton cases use small batches.

Tolerances: logprobs, base_logprobs and entropy within 1e-4 of the reference on
the same input (fp32, and also bf16/fp16, because every backend upcasts those
logits exactly to fp32); temperatures within 1e-6 relative (the backends'
fp32 ``exp`` may differ in the last bit). Tokens agree on at least 99.9% of
rows. Statistical tests: fixed seeds, alpha = 1e-3.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from ead_vllm.kernels import EADSample, ead_sample
from statistics_support import (
    ALPHA,
    PHASES,
    SCHEDULE,
    chi_square_pvalue,
    phase_logits,
    phase_temperature,
)


def _import_interpreted_triton_kernels() -> bool:
    """Import the Triton kernels, decorated for the interpreter; False without triton.

    ``triton.jit`` reads TRITON_INTERPRET when it decorates; the root conftest sets it
    for the session before anything imports triton (see there why), so the kernels
    are always the interpreted ones here.
    """
    try:
        mod = importlib.import_module("ead_vllm.kernels.triton_sampler")
    except ImportError:
        return False
    assert type(mod.ead_stream_kernel).__name__ == "InterpretedFunction", "TRITON_INTERPRET unset"
    return True


HAS_TRITON = _import_interpreted_triton_kernels()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
TRITON = pytest.param("triton", marks=needs_triton)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # interpreter NaN math


BACKENDS = ["cpu", TRITON, "torch"]
KERNELS = ["cpu", TRITON]  # the backends whose batch invariance is promised
TOL = 1e-4
PARAMS = dict(tau_max=1.5, tau_min=0.3, decay=400.0, warmup=10, base_temperature=0.8)


def rows(b: int, *, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        positions=torch.randint(0, 2000, (b,), generator=g),
        seeds=torch.randint(-(2**62), 2**62, (b,), generator=g),
    )


def logits_like(kind: str, b: int, v: int, *, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(b, v, generator=g) * 3
    if kind == "peaked":  # LLM-like: a bulk far below a few strong tokens
        x = torch.randn(b, v, generator=g) * 2.5
        top = torch.randint(0, v, (b, 5), generator=g)
        return x.scatter_(1, top, 14 + 6 * torch.rand(b, 5, generator=g))
    if kind == "flat":
        return torch.rand(b, v, generator=g) * 0.01
    raise ValueError(kind)


def run(backend: str, logits: torch.Tensor, **kw) -> EADSample:
    args = {**PARAMS, **kw}
    if "positions" not in args:
        args.update(rows(logits.shape[0]))
    return ead_sample(logits, backend=backend, **args)


def reference_logprobs(logits: torch.Tensor, out: EADSample):
    """Reference log-softmaxes at the backend's own tokens (tokens may differ at near-ties)."""
    x = logits.float()
    base = torch.full((x.shape[0], 1), PARAMS["base_temperature"])
    logp = torch.log_softmax(x / out.temperatures[:, None], -1)
    base_logp = torch.log_softmax(x / base, -1)
    tok = out.token_ids[:, None]
    return logp.gather(1, tok)[:, 0], base_logp.gather(1, tok)[:, 0]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def assert_bit_identical(a: EADSample, b: EADSample) -> None:
    for name, x, y in zip(EADSample._fields, a, b, strict=True):
        assert torch.equal(bits(x), bits(y)), name


# ------------------------------------------------------------- agreement


def _size(backend: str) -> tuple[int, int]:
    return (12, 2500) if backend == "triton" else (1500, 3000)


@pytest.mark.parametrize("kind", ["normal", "peaked", "flat"])
@pytest.mark.parametrize("backend", KERNELS)
def test_agrees_with_reference(backend, kind):
    b, v = _size(backend)
    logits = logits_like(kind, b, v)
    kw = rows(b, seed=1)
    out = run(backend, logits, **kw)
    ref = run("torch", logits, **kw)
    agree = (out.token_ids == ref.token_ids).float().mean().item()
    assert agree >= 0.999
    assert torch.allclose(out.temperatures, ref.temperatures, rtol=1e-6, atol=0)
    lp, blp = reference_logprobs(logits, out)
    assert (out.logprobs - lp).abs().max().item() < TOL
    assert (out.base_logprobs - blp).abs().max().item() < TOL
    assert (out.entropy - ref.entropy).abs().max().item() < TOL
    assert out.token_ids.dtype == torch.int64
    assert all(t.dtype == torch.float32 for t in out[1:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", KERNELS)
def test_low_precision_logits(backend, dtype):
    b, v = (6, 1500) if backend == "triton" else (300, 1500)
    exact = logits_like("normal", b, v, seed=3)
    low = exact.to(dtype)
    kw = rows(b, seed=3)
    out = run(backend, low, **kw)
    ref = run("torch", low, **kw)
    assert (out.token_ids == ref.token_ids).float().mean().item() >= 0.99
    lp, blp = reference_logprobs(low, out)
    assert (out.logprobs - lp).abs().max().item() < TOL
    assert (out.base_logprobs - blp).abs().max().item() < TOL
    assert (out.entropy - ref.entropy).abs().max().item() < TOL
    # Against the unrounded fp32 logits the gap is the input rounding itself:
    # |d log p| <= 2 max|dx| / T.
    lp32, _ = reference_logprobs(exact, out)
    bound = 2 * (low.float() - exact).abs().amax(-1) / out.temperatures
    assert bool(((out.logprobs - lp32).abs() <= bound + TOL).all())


@needs_triton
def test_triton_several_tiles_per_program():
    # Production splits give one tile per program below V = 262,144; force
    # several so the online max rescaling across tiles runs (max in a late
    # tile, a fully masked tile, the max token in the split's last tile).
    from ead_vllm.kernels import triton_sampler
    from ead_vllm.kernels.reference import ead_sample_reference

    b, v = 6, 9000  # three tiles of 4,096: two programs of two tiles and one
    logits = logits_like("peaked", b, v, seed=12)
    logits[0, :4096] = float("-inf")
    logits[1, 8191] = 40.0
    logits[2] = torch.linspace(-30, 30, v)  # rising: every tile raises the max
    logits[3, 4096:8192] = float("-inf")
    kw = rows(b, seed=12)
    temps = torch.linspace(0.3, 2.0, b)
    base = torch.full((b,), PARAMS["base_temperature"])
    args = (logits, kw["positions"], kw["seeds"], temps, base)
    assert triton_sampler.split_config(v, 2)[:2] == (2, 2)
    out = triton_sampler.ead_sample_triton(*args, max_splits=2)
    ref = ead_sample_reference(*args)
    assert torch.equal(out[0], ref[0])
    for i, name in ((1, "logprobs"), (2, "base_logprobs"), (3, "entropy")):
        assert (out[i] - ref[i]).abs().max().item() < TOL, name


def test_largest_vocabulary_cpu():
    b, v = 3, 262144
    logits = logits_like("peaked", b, v, seed=13)
    kw = rows(b, seed=13)
    out, ref = run("cpu", logits, **kw), run("torch", logits, **kw)
    assert torch.equal(out.token_ids, ref.token_ids)
    assert (out.logprobs - ref.logprobs).abs().max().item() < TOL
    assert (out.entropy - ref.entropy).abs().max().item() < TOL


# ------------------------------------------------------------- distribution


@pytest.mark.parametrize("backend", KERNELS)
def test_chi_square_each_phase(backend):
    # One batch holds all three phases: before warm-up, mid-anneal, at the floor.
    # The interpreter runs ~20 programs a second: the triton sample is small
    # (every expected count is still >= 13); its tokens also equal the
    # reference's, whose own test draws 20,000 per phase.
    n, vocab = (100, 4) if backend == "triton" else (20000, 8)
    logits, positions = [], []
    for position in PHASES.values():
        logits.append(phase_logits(position, vocab).expand(n, vocab))
        positions.append(torch.full((n,), position))
    logits, positions = torch.cat(logits), torch.cat(positions)
    seeds = torch.arange(logits.shape[0]) * 7 + 1
    out = ead_sample(logits, positions=positions, seeds=seeds, backend=backend, **SCHEDULE)
    for i, position in enumerate(PHASES.values()):
        tokens = out.token_ids[i * n : (i + 1) * n]
        assert chi_square_pvalue(tokens, logits[i * n], phase_temperature(position)) > ALPHA


# ------------------------------------------------------------- batch invariance


@pytest.mark.parametrize("backend", KERNELS)
def test_batch_invariance(backend):
    b, v = (5, 2051) if backend == "triton" else (40, 20011)  # odd V: rows start unaligned
    logits = logits_like("peaked", b, v, seed=5)
    logits[1, :100] = float("-inf")
    kw = {"positions": torch.arange(b) * 97, "seeds": torch.arange(b) * 3 - 7}
    tau_max = torch.linspace(0.5, 2.0, b)
    full = run(backend, logits, tau_max=tau_max, **kw)

    perm = torch.randperm(b, generator=torch.Generator().manual_seed(0))
    shuffled = run(
        backend, logits[perm], tau_max=tau_max[perm], **{k: t[perm] for k, t in kw.items()}
    )
    assert_bit_identical(EADSample(*(t[perm] for t in full)), shuffled)

    for i in (0, b - 1):  # alone, and inside a batch of strangers
        alone = run(
            backend,
            logits[i : i + 1],
            tau_max=tau_max[i : i + 1],
            positions=kw["positions"][i : i + 1],
            seeds=kw["seeds"][i : i + 1],
        )
        assert_bit_identical(EADSample(*(t[i : i + 1] for t in full)), alone)
        others = logits_like("normal", 3, v, seed=9)
        mixed = torch.cat([others[:2], logits[i : i + 1], others[2:]])
        got = run(
            backend,
            mixed,
            tau_max=torch.cat([torch.ones(2), tau_max[i : i + 1], torch.ones(1)]),
            positions=torch.cat(
                [torch.tensor([1, 2]), kw["positions"][i : i + 1], torch.tensor([3])]
            ),
            seeds=torch.cat([torch.tensor([5, 6]), kw["seeds"][i : i + 1], torch.tensor([7])]),
        )
        assert_bit_identical(
            EADSample(*(t[i : i + 1] for t in full)), EADSample(*(t[2:3] for t in got))
        )


# ------------------------------------------------------------- masking and bad rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_tokens_are_never_sampled(backend):
    b, v = (16, 1100) if backend == "triton" else (2000, 1100)
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(b, v, generator=g) * 2
    allowed = torch.rand(b, v, generator=g) < 0.05
    allowed[:, 0] = False
    allowed[torch.arange(b), torch.randint(1, v, (b,), generator=g)] = True
    logits[~allowed] = float("-inf")
    logits[0, :] = float("-inf")
    logits[0, 777] = -50.0  # the single allowed token of row 0, far below 0
    allowed[0] = False
    allowed[0, 777] = True
    out = run(backend, logits)
    assert bool(allowed[torch.arange(b), out.token_ids].all())
    assert out.token_ids[0].item() == 777
    assert out.logprobs[0].item() == 0.0 and abs(out.entropy[0].item()) < 1e-6
    assert bool(torch.isfinite(out.logprobs).all() & torch.isfinite(out.entropy).all())


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_rows_get_token_zero_and_nan(backend):
    v = 1500
    logits = logits_like("normal", 6, v, seed=2)
    logits[1] = float("-inf")
    logits[2, 1234] = float("nan")
    logits[3, 17] = float("inf")
    logits[4] = float("nan")
    kw = rows(6, seed=4)
    out = run(backend, logits, **kw)
    bad = torch.tensor([False, True, True, True, True, False])
    assert out.token_ids[bad].tolist() == [0, 0, 0, 0]
    for t in (out.logprobs, out.base_logprobs, out.entropy):
        assert bool(torch.isnan(t[bad]).all()) and bool(torch.isfinite(t[~bad]).all())
    assert bool(torch.isfinite(out.temperatures).all())
    good = run(backend, logits[~bad], **{k: t[~bad] for k, t in kw.items()})
    assert_bit_identical(EADSample(*(t[~bad] for t in out)), good)


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_parameters_stay_finite(backend):
    b, v = 4, 1300
    g = torch.Generator().manual_seed(8)
    logits = (torch.rand(b, v, generator=g) * 2 - 1) * 1e4
    logits[1] = logits[1].sign() * 1e4  # ties at +-1e4
    out = run(
        backend,
        logits,
        positions=torch.tensor([0, 10**9, 10**9, 5 * 10**8]),
        seeds=torch.tensor([1, 2, 3, 4]),
        tau_max=torch.tensor([100.0, 1.0, 1.0, 1.0]),
        tau_min=1e-3,
        decay=1.0,
        warmup=0,
        base_temperature=1.0,
    )
    assert bool(((out.token_ids >= 0) & (out.token_ids < v)).all())
    for t in out[1:]:
        assert bool(torch.isfinite(t).all())
    assert bool((out.logprobs <= 1e-6).all() & (out.entropy >= -1e-6).all())
    assert out.temperatures[1:].tolist() == pytest.approx([1e-3] * 3)
    assert out.temperatures[0].item() == pytest.approx(100.0)
    # At T = 1e-3 with logit gaps of order 1, the draw is the argmax.
    assert out.token_ids[2].item() == logits[2].argmax().item()


# ------------------------------------------------------------- layout and shapes


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_logits(backend):
    b, v = 5, 1200
    big = logits_like("normal", 2 * b, v + 37, seed=6)
    view = big[::2, 5 : 5 + v]  # row stride 2 * (v + 37), unaligned start
    col = logits_like("normal", v, b, seed=7).t()  # column stride b
    kw = rows(b, seed=6)
    for strided in (view, col):
        assert not strided.is_contiguous()
        assert_bit_identical(run(backend, strided, **kw), run(backend, strided.contiguous(), **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_shapes(backend):
    one = run(backend, torch.tensor([[3.0]]))
    assert one.token_ids.tolist() == [0] and one.logprobs.tolist() == [0.0]
    empty = run(
        backend,
        torch.empty(0, 10),
        positions=torch.empty(0, dtype=torch.int64),
        seeds=torch.empty(0, dtype=torch.int64),
    )
    assert all(t.shape == (0,) for t in empty)


def test_auto_picks_the_cpu_kernel_on_cpu():
    logits = logits_like("normal", 8, 500)
    assert_bit_identical(run("auto", logits), run("cpu", logits))


# ------------------------------------------------------------- validation


def _kw(**over):
    kw = dict(
        positions=torch.arange(2), seeds=torch.arange(2), tau_max=1.0, tau_min=0.5, decay=10.0
    )
    kw.update(over)
    return kw


@pytest.mark.parametrize(
    ("logits", "over", "match"),
    [
        (torch.zeros(3), {}, "logits must be 2-D"),
        (torch.zeros(2, 4, dtype=torch.float64), {}, "logits must be float32"),
        (torch.zeros(2, 4, dtype=torch.int32), {}, "logits must be float32"),
        (torch.zeros(2, 0), {}, "V = 0"),
        (torch.zeros(2, 4), {"positions": torch.arange(3)}, "positions must have shape"),
        (
            torch.zeros(2, 4),
            {"positions": torch.tensor([0.0, 1.0])},
            "positions must have an integer",
        ),
        (torch.zeros(2, 4), {"positions": torch.tensor([0, -1])}, "positions must be >= 0"),
        (torch.zeros(2, 4), {"seeds": torch.arange(2).reshape(2, 1)}, "seeds must have shape"),
        (torch.zeros(2, 4), {"tau_min": 0.0}, "tau_min must be finite and > 0"),
        (torch.zeros(2, 4), {"tau_max": -1.0}, "tau_max must be finite and > 0"),
        (torch.zeros(2, 4), {"decay": float("nan")}, "decay must be finite and > 0"),
        (torch.zeros(2, 4), {"decay": torch.tensor([1.0, 0.0])}, "decay must be finite and > 0"),
        (torch.zeros(2, 4), {"base_temperature": 0.0}, "base_temperature must be finite"),
        (torch.zeros(2, 4), {"base_temperature": 1e-30}, "smallest effective temperature"),
        (torch.zeros(2, 4), {"tau_max": torch.ones(3)}, "tau_max must have shape"),
        (torch.zeros(2, 4), {"warmup": -1}, "warmup must be >= 0"),
        (torch.zeros(2, 4), {"warmup": 2.5}, "warmup must be an integer"),
        (torch.zeros(2, 4), {"tau_max": torch.ones(2, device="meta")}, "tau_max is on meta"),
        (torch.zeros(2, 4), {"backend": "gpu"}, "backend must be one of"),
    ],
)
def test_invalid_inputs_raise_value_error(logits, over, match):
    with pytest.raises(ValueError, match=match):
        ead_sample(logits, **_kw(**over))


def test_type_errors():
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        ead_sample([[1.0, 2.0]], **_kw())
    with pytest.raises(TypeError, match="positions must be a"):
        ead_sample(torch.zeros(2, 4), **_kw(positions=[0, 1]))
    with pytest.raises(TypeError, match="tau_min must be a number"):
        ead_sample(torch.zeros(2, 4), **_kw(tau_min="0.5"))


def test_backend_device_mismatch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend 'triton' needs GPU tensors"):
        ead_sample(torch.zeros(2, 4), backend="triton", **_kw())


def test_validate_false_skips_value_checks_only():
    out = ead_sample(torch.zeros(2, 4), validate=False, **_kw(positions=torch.tensor([0, 1])))
    assert out.token_ids.shape == (2,)
    with pytest.raises(ValueError, match="positions must have shape"):
        ead_sample(torch.zeros(2, 4), validate=False, **_kw(positions=torch.arange(3)))


def test_numpy_integer_scalars_are_accepted():
    out = ead_sample(torch.zeros(2, 4), **_kw(warmup=np.int64(3), decay=np.float32(5.0)))
    assert out.temperatures.tolist() == [1.0, 1.0]


# ------------------------------------------------------------- one tau_t, optional outputs


@pytest.mark.parametrize("backend", BACKENDS)
def test_temperatures_are_ead_tau_bit_for_bit(backend):
    # Every backend samples at the temperature schedule.ead_tau gives, to the bit.
    from ead_vllm.kernels import ead_tau

    b = 9
    positions = torch.tensor([0, 5, 9, 10, 11, 100, 1000, 10**6, 10**9])
    tau_max = torch.linspace(0.5, 3.0, b)
    out = run(
        backend,
        logits_like("normal", b, 700),
        positions=positions,
        seeds=torch.arange(b),
        tau_max=tau_max,
    )
    tau = ead_tau(
        positions,
        tau_max=tau_max,
        tau_min=PARAMS["tau_min"],
        decay=PARAMS["decay"],
        warmup=PARAMS["warmup"],
    )
    want = torch.tensor(PARAMS["base_temperature"], dtype=torch.float32) * tau
    assert torch.equal(bits(out.temperatures), bits(want))
    ref = run(
        "torch",
        logits_like("normal", b, 700),
        positions=positions,
        seeds=torch.arange(b),
        tau_max=tau_max,
    )
    assert torch.equal(bits(out.temperatures), bits(ref.temperatures))


@pytest.mark.parametrize("backend", BACKENDS)
def test_optional_outputs_are_none_and_change_nothing_else(backend):
    b, v = (6, 3000) if backend == "triton" else (200, 3000)
    logits = logits_like("peaked", b, v, seed=21)
    kw = rows(b, seed=21)
    full = run(backend, logits, **kw)
    for base, ent in ((False, False), (False, True), (True, False)):
        part = run(backend, logits, return_base_logprobs=base, return_entropy=ent, **kw)
        assert (part.base_logprobs is None) == (not base)
        assert (part.entropy is None) == (not ent)
        for name in ("token_ids", "logprobs", "temperatures"):
            assert torch.equal(bits(getattr(part, name)), bits(getattr(full, name))), name
        if base:
            assert torch.equal(bits(part.base_logprobs), bits(full.base_logprobs))
        if ent:
            assert torch.equal(bits(part.entropy), bits(full.entropy))


@pytest.mark.parametrize("kind", ["peaked", "normal"])
def test_triton_agrees_at_a_production_vocabulary(kind):
    # V = 151,936 (Qwen2.5): 38 slices per row and a 594-block race. The
    # interpreter is slow, so a handful of rows here; the agreement over many
    # rows is in docs/kernels.md.
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    b, v = 4, 151936
    logits = logits_like(kind, b, v, seed=31)
    kw = rows(b, seed=31)
    out = run("triton", logits, **kw)
    ref = run("torch", logits, **kw)
    assert torch.equal(out.token_ids, ref.token_ids)
    assert (out.logprobs - ref.logprobs).abs().max().item() < TOL
    assert (out.entropy - ref.entropy).abs().max().item() < TOL


# ------------------------------------------------------------- prepare


def test_prepare_cpu_is_idempotent_and_validates():
    import time

    from ead_vllm.kernels import prepare

    assert prepare("cpu", torch.float32, 151936) == "cpu"
    t0 = time.perf_counter()
    assert prepare(torch.device("cpu"), torch.bfloat16, 32000) == "cpu"
    assert time.perf_counter() - t0 < 0.05
    # No working Triton GPU backend here: nothing to compile for a CUDA device.
    if not torch.cuda.is_available():
        assert prepare("cuda", torch.bfloat16, 151936) == "torch"
    with pytest.raises(ValueError, match="dtype"):
        prepare("cpu", torch.float64, 10)
    with pytest.raises(ValueError, match="vocab_size"):
        prepare("cpu", torch.float32, 0)
    with pytest.raises(TypeError, match="vocab_size"):
        prepare("cpu", torch.float32, 10.0)


@needs_triton
def test_prepare_triton_launches_every_variant_once():
    # Under the interpreter the "compile" is a run; the point is the variant
    # list and the idempotence.
    from ead_vllm.kernels import triton_sampler

    triton_sampler._warmed.cache_clear()
    triton_sampler.prepare_triton(torch.device("cpu"), torch.bfloat16, 3000)
    info = triton_sampler._warmed.cache_info()
    triton_sampler.prepare_triton("cpu", torch.bfloat16, 3000)
    assert triton_sampler._warmed.cache_info().hits == info.hits + 1
