"""Runner-V2 integration, exercised with vLLM's real V2 classes on CPU.

vLLM disables Triton on CPU, so runner V2 itself (and the Triton stages of its
sampler: temperature, min_p, top-k/top-p, Gumbel sampling, log-prob and
bookkeeping kernels) cannot run here. Covered: vLLM's real ``RequestState``,
``SamplingStates``, processor chain and ``LogitsContext`` feeding
:class:`EADLogitsProcessorV2` and :class:`EADSamplerV2` (``add_request``,
staged writes, the annealing stage, the route choice, the fused route end to
end through ``Sampler.sample`` with the numba kernel and, under
``TRITON_INTERPRET=1``, the Triton kernel), and the ``load_model`` patch. Not covered
(GPU only): the unfused route's composition with vLLM's Triton stages, and
``Sampler.__call__`` around our ``sample``.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace

import ead_vllm.kernels as ead_kernels
import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError

from ead_vllm.params import EADParams
from ead_vllm.vllm_ext.seams import v2_sampler as v2_seam

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_sources]

EAD = {"ead_tau_max": 1.5, "ead_tau_min": 0.3, "ead_decay": 8.0, "ead_warmup": 1}
SCHEDULE = EADParams(tau_max=1.5, tau_min=0.3, decay=8.0, warmup=1)
MAX_REQS = 8


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    """vLLM's V2 request state and our V2 sampler, on CPU."""
    mp = pytest.MonkeyPatch()
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.worker.gpu.states import RequestState
    from vllm_engine_support import cpu_v2_buffers, engine_model_dir

    from ead_vllm.vllm_ext.seams.versions import installed_release
    from ead_vllm.vllm_ext.v2_sampler import EADSamplerV2

    # CPU has no pinned memory: vLLM's explicit-copy buffers (a CPU stand-in on 0.29)
    cpu_v2_buffers(mp)
    shape = v2_seam.current()  # this vLLM's Sampler signatures (0.27-0.30 differ)

    model = engine_model_dir(tmp_path_factory.mktemp("v2-model"))
    config = EngineArgs(model=str(model), dtype="float32", max_model_len=128).create_engine_config()
    vocab = config.model_config.get_vocab_size()

    def make(logprobs_mode="processed_logprobs", sampler_cls=EADSamplerV2):
        states = RequestState(
            max_num_reqs=MAX_REQS,
            max_model_len=128,
            max_num_batched_tokens=256,
            num_speculative_steps=0,
            vocab_size=vocab,
            device=torch.device("cpu"),
        )
        kwargs = dict(
            vllm_config=config,  # not a parameter before vLLM 0.31
            max_num_reqs=MAX_REQS,
            vocab_size=vocab,
            device=torch.device("cpu"),
            req_states=states,
            logprobs_mode=logprobs_mode,
        )
        params = shape.init_params(installed_release())
        sampler = sampler_cls(**{k: v for k, v in kwargs.items() if k in params})
        return states, sampler

    yield SimpleNamespace(make=make, vocab=vocab, config=config, shape=shape)
    mp.undo()


def add(states, sampler, req_id: str, prompt_len: int, params: SamplingParams) -> int:
    states.add_request(
        req_id=req_id,
        prompt_len=prompt_len,
        all_token_ids=list(range(4, 4 + prompt_len)),
        num_computed_tokens=0,
        max_tokens=64,
    )
    slot = states.req_id_to_index[req_id]
    # as this vLLM's runner V2 calls it (0.27-0.30 also pass prompt_len)
    v2_seam.current().call_add_request(sampler, slot, prompt_len, params)
    return slot


def flush(states, sampler) -> None:
    states.prompt_len.copy_to_uva()
    sampler.apply_staged_writes()


def context(slots: list[int], pos: list[int], vocab: int):
    # vLLM's LogitsContext from 0.31 on, a same-field stand-in on 0.27-0.30
    from ead_vllm.vllm_ext.seams.v2_logits_processor import LogitsContext

    rows = torch.tensor(slots, dtype=torch.int32)
    n = len(slots)
    return LogitsContext(
        expanded_idx_mapping=rows,
        idx_mapping=rows,
        idx_mapping_np=np.array(slots, dtype=np.int32),
        expanded_local_pos=torch.zeros(n, dtype=torch.int32),
        input_ids=torch.zeros(n, dtype=torch.int32),
        pos=torch.tensor(pos, dtype=torch.int64),
        seq_lens_upper_bound_np=np.array(pos, dtype=np.int32) + 1,
    )


def test_processor_divides_ead_rows_by_tau_at_t(v2):
    states, sampler = v2.make()
    slot_a = add(states, sampler, "a", 5, SamplingParams(extra_args=EAD))
    slot_b = add(states, sampler, "b", 3, SamplingParams(temperature=0.7))
    slot_c = add(states, sampler, "c", 4, SamplingParams(temperature=0.0, extra_args=EAD))
    slot_d = add(states, sampler, "d", 2, SamplingParams(temperature=0.9, extra_args=EAD))
    flush(states, sampler)
    # the sampler applies EAD itself (vLLM 0.27-0.30 have no processor chain at all)
    assert sampler.ead not in getattr(sampler, "logits_processors", ())
    assert sampler.ead.is_ead.np[[slot_a, slot_b, slot_c, slot_d]].tolist() == [1, 0, 0, 1]
    # "a" is decoding its 8th token (pos of the fed token = prompt 5 + 7 - 1);
    # "d" has three rows at consecutive positions, as with draft tokens
    slots = [slot_a, slot_b, slot_c, slot_d, slot_d, slot_d]
    pos = [11, 20, 4, 1, 2, 3]
    logits = torch.randn(len(slots), v2.vocab)
    out = sampler.ead.apply(logits.clone(), context(slots, pos, v2.vocab))
    ts = {0: 7, 3: 0, 4: 1, 5: 2}
    for row in range(len(slots)):
        tau = SCHEDULE.temperature_at(float(ts[row])) if row in ts else 1.0
        assert torch.allclose(out[row], logits[row] / tau, rtol=1e-6), row


def test_processor_validates_like_the_frontend():
    import ead_vllm.vllm_ext.logits_processors as lps
    from ead_vllm.vllm_ext.errors import EADStartupError
    from ead_vllm.vllm_ext.seams.versions import RUNNER_V1, installed_release

    classes = [lps.EADLogitsProcessorV2]
    if RUNNER_V1.holds(installed_release()):
        classes.append(lps.EADLogitsProcessor)
    else:  # vLLM 0.34.0 and later: the V1 processor refuses with the way out
        with pytest.raises(EADStartupError, match="EADLogitsProcessorV2 instead"):
            _ = lps.EADLogitsProcessor
    for cls in classes:
        with pytest.raises(VLLMValidationError, match="ead_decay"):
            cls.validate_params(SamplingParams(extra_args={"ead_decay": 0}))
        cls.validate_params(SamplingParams(extra_args=EAD))


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_fused_route_samples_with_the_kernel(v2, monkeypatch, backend):
    if backend == "triton":
        from ead_vllm.kernels.api import triton_interpreting

        if not triton_interpreting():
            pytest.skip("the Triton kernel runs on CPU tensors only under TRITON_INTERPRET=1")
    states, sampler = v2.make()
    sampler.backend = backend
    slots = [
        add(states, sampler, "a", 5, SamplingParams(extra_args=EAD, seed=3)),
        add(states, sampler, "b", 9, SamplingParams(temperature=0.6, extra_args=EAD)),
    ]
    flush(states, sampler)
    pos = [5 + 6 - 1, 9 + 0 - 1]  # t = 6 and t = 0
    ctx = context(slots, pos, v2.vocab)
    logits = torch.randn(2, v2.vocab) * 2

    calls = []
    real = ead_kernels.ead_sample

    def spy(x, **kwargs):
        calls.append(kwargs)
        return real(x, **kwargs)

    monkeypatch.setattr(ead_kernels, "ead_sample", spy)
    sampled, processed = v2.shape.call_sample(sampler, logits.clone(), ctx, return_logprobs=True)
    (call,) = calls
    assert call["backend"] == backend
    assert call["positions"].tolist() == [6, 0]
    assert call["seeds"][0].item() == 3
    assert call["base_temperature"].tolist() == pytest.approx([1.0, 0.6])
    expected = real(
        logits,
        positions=torch.tensor([6, 0]),
        seeds=call["seeds"],
        tau_max=1.5,
        tau_min=0.3,
        decay=8.0,
        warmup=1,
        base_temperature=torch.tensor([1.0, 0.6]),
    )
    assert sampled.tolist() == expected.token_ids.tolist()
    # processed logits in processed_logprobs mode are logits / (T * tau_t)
    temps = torch.tensor([SCHEDULE.temperature_at(6.0), 0.6 * SCHEDULE.temperature_at(0.0)])
    assert torch.allclose(processed, logits / temps[:, None], rtol=1e-5)


@pytest.fixture
def torch_stages(monkeypatch):
    """Torch stand-ins for vLLM's V2 Triton stages, which cannot run on CPU.

    Temperature, min_p and Gumbel sampling are Triton kernels in vLLM's V2
    sampler; these replacements keep their contracts (in-place temperature
    with greedy rows left alone, min_p in probability space, noise keyed by the
    slot's seed and the position only), so the routing and assembly of our
    sampler around them is what these tests check.
    """
    import vllm.v1.worker.gpu.sample.sampler as v2_sampler_mod
    import vllm.v1.worker.gpu.sample.states as v2_states

    def apply_temperature(logits, idx_mapping, temperature):
        t = temperature[idx_mapping.long()].to(logits.dtype)
        logits.div_(torch.where(t == 0, torch.ones_like(t), t)[:, None])

    def apply_min_p(logits, idx_mapping, min_p):
        from ead_vllm.vllm_ext.ead_masks import min_p_mask_

        min_p_mask_(logits, min_p[idx_mapping.long()])

    def gumbel_sample(logits, idx_mapping, temperature, seeds, pos, **_):
        out = []
        for row in range(logits.shape[0]):
            slot = int(idx_mapping[row])
            if float(temperature[slot]) == 0.0:
                out.append(int(logits[row].argmax()))
                continue
            gen = torch.Generator().manual_seed(int(seeds[slot]) % 2**62 + 7919 * int(pos[row]))
            u = torch.rand(logits.shape[1], generator=gen).clamp_min(1e-12)
            out.append(int((logits[row] - torch.log(-torch.log(u))).argmax()))
        return torch.tensor(out, dtype=torch.int64)

    monkeypatch.setattr(v2_states, "apply_temperature", apply_temperature)
    monkeypatch.setattr(v2_states, "apply_min_p", apply_min_p)
    monkeypatch.setattr(v2_sampler_mod, "gumbel_sample", gumbel_sample)


def run_sample(sampler, slots, pos, logits, vocab, return_logprobs=True):
    ctx = context(slots, pos, vocab)
    # as this vLLM's Sampler.__call__ calls it (0.27-0.30: no seq_lens_upper_bound_np;
    # 0.24-0.27: no idx_mapping)
    return v2_seam.current().call_sample(sampler, logits.clone(), ctx, return_logprobs)


MIXED = [
    ("e1", 5, SamplingParams(extra_args=EAD, seed=3)),
    ("s1", 4, SamplingParams(temperature=0.8, seed=5)),
    ("e2", 6, SamplingParams(temperature=1.2, top_p=0.9, extra_args=EAD, seed=7)),
    ("s2", 3, SamplingParams(temperature=1.1, min_p=0.1, seed=8)),
    ("g", 7, SamplingParams(temperature=0.0)),
    ("e3", 4, SamplingParams(temperature=0.9, top_k=6, min_p=0.05, extra_args=EAD)),
    ("s3", 5, SamplingParams(temperature=1.0, top_k=4)),
]


def test_mixed_batch_runs_the_kernel_for_its_ead_rows(v2, torch_stages, monkeypatch):
    states, sampler = v2.make()
    np.random.seed(0)  # vLLM draws unseeded requests' seeds from numpy's generator
    slots = [add(states, sampler, name, n, params) for name, n, params in MIXED]
    flush(states, sampler)
    pos = [n + 3 for _, n, _ in MIXED]  # t = 4 for every row
    logits = torch.randn(len(slots), v2.vocab, generator=torch.Generator().manual_seed(1)) * 2

    calls = []
    real = ead_kernels.ead_sample

    def spy(x, **kwargs):
        calls.append((x.clone(), kwargs))
        return real(x, **kwargs)

    monkeypatch.setattr(ead_kernels, "ead_sample", spy)
    sampled, processed = run_sample(sampler, slots, pos, logits, v2.vocab)
    ((x, kwargs),) = calls
    assert x.shape[0] == 3 and kwargs["positions"].tolist() == [4, 4, 4]
    # EAD rows with top-p / top-k+min_p arrive masked at T * tau_t
    tau = SCHEDULE.temperature_at(4.0)
    from vllm_engine_support import top_p_mask

    keep_p = torch.isfinite(top_p_mask(logits[2] / (1.2 * tau), 0.9))
    assert torch.equal(torch.isfinite(x[1]), keep_p)
    assert int(torch.isfinite(x[2]).sum()) <= 6
    # processed logits of EAD rows: the masked logits / (T * tau_t)
    assert torch.allclose(processed[0], logits[0] / tau, rtol=1e-6)
    assert torch.equal(torch.isfinite(processed[2]), keep_p)

    # the non-EAD rows get what vLLM's own sampler gives them in the same batch
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    states2, stock = v2.make(sampler_cls=Sampler)
    np.random.seed(0)
    slots2 = [add(states2, stock, name, n, params) for name, n, params in MIXED]
    flush(states2, stock)
    assert slots2 == slots
    stock_sampled, stock_processed = run_sample(stock, slots, pos, logits, v2.vocab)
    for row in (1, 3, 4, 6):
        assert sampled[row].item() == stock_sampled[row].item(), row
        assert torch.equal(processed[row], stock_processed[row]), row


def test_non_ead_rows_get_stocks_processed_logits_in_stocks_dtype(v2, torch_stages):
    """bf16 logits: vLLM 0.26 runs its stages in the model's dtype, the other releases on
    a float32 copy; the non-EAD rows of a mixed batch get stock's tokens and processed
    logits, dtype included, either way."""
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(len(MIXED), v2.vocab, generator=gen) * 2).to(torch.bfloat16)
    pos = [n + 3 for _, n, _ in MIXED]
    results = []
    for cls in (None, Sampler):
        states, sampler = v2.make() if cls is None else v2.make(sampler_cls=cls)
        np.random.seed(0)  # the unseeded requests' seeds
        slots = [add(states, sampler, name, n, params) for name, n, params in MIXED]
        flush(states, sampler)
        results.append(run_sample(sampler, slots, pos, logits, v2.vocab))
    (ours, ours_processed), (stock, stock_processed) = results
    assert ours_processed.dtype == stock_processed.dtype
    for row in (1, 3, 4, 6):
        assert ours[row].item() == stock[row].item(), row
        assert torch.equal(ours_processed[row], stock_processed[row]), row


def test_seeded_ead_row_is_route_independent_on_v2(v2, torch_stages):
    alone_states, alone = v2.make()
    target = SamplingParams(temperature=1.1, top_p=0.8, extra_args=EAD, seed=99)
    logits = torch.randn(len(MIXED) + 1, v2.vocab, generator=torch.Generator().manual_seed(2))
    slot = add(alone_states, alone, "t", 5, target)
    flush(alone_states, alone)
    ref_tok, ref_proc = run_sample(alone, [slot], [5 + 9], logits[:1], v2.vocab)
    for order in (MIXED + [("t", 5, target)], [("t", 5, target)] + MIXED[::-1]):
        states, sampler = v2.make()
        slots = [add(states, sampler, name, n, params) for name, n, params in order]
        flush(states, sampler)
        at = [name for name, _, _ in order].index("t")
        pos = [n + 9 for _, n, _ in order]
        others = iter(range(1, len(order)))
        rows = [0 if name == "t" else next(others) for name, _, _ in order]
        tok, proc = run_sample(sampler, slots, pos, logits[rows], v2.vocab)
        assert tok[at].item() == ref_tok[0].item()
        assert torch.equal(proc[at], ref_proc[0])


def fake_runner_module(sampler_name_result=None):
    module = ModuleType("fake_v2_runner")

    class Sampler:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class GPUModelRunner:
        def __init__(self, sampler_config):
            self.vllm_config = sampler_config
            self.sampler = None
            self.device = torch.device("cpu")
            self.vocab_size = 64

        def load_model(self):
            self.sampler = sampler_name_result() if sampler_name_result else module.Sampler(x=1)

    module.Sampler = Sampler
    module.GPUModelRunner = GPUModelRunner
    return module


def test_load_model_patch(monkeypatch):
    from ead_vllm.vllm_ext import v2_sampler
    from ead_vllm.vllm_ext.v2_install import patch_v2_runner

    class FakeEAD:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            self.ead = SimpleNamespace(defaults="unset")  # the per-slot EAD stage

    monkeypatch.setattr(v2_sampler, "EADSamplerV2", FakeEAD)
    module = fake_runner_module()
    patch_v2_runner(module)
    patch_v2_runner(module)  # idempotent

    def cfg(sampler=None):
        extra = {} if sampler is None else {"sampler": sampler}
        return SimpleNamespace(
            additional_config=extra,
            speculative_config=None,
            model_config=SimpleNamespace(logits_processors=None),
        )

    stock = module.GPUModelRunner(cfg())
    stock.load_model()
    assert type(stock.sampler) is module.Sampler
    ead = module.GPUModelRunner(cfg("ead"))
    ead.load_model()
    assert isinstance(ead.sampler, FakeEAD) and ead.sampler.kwargs == {"x": 1}
    assert ead.sampler.ead.defaults is None  # the engine sets no EAD defaults
    assert module.Sampler is not FakeEAD  # restored after loading

    spec = cfg("ead")
    spec.speculative_config = object()
    with pytest.raises(ValueError, match="speculative decoding"):
        module.GPUModelRunner(spec).load_model()

    other = fake_runner_module(sampler_name_result=lambda: object())
    patch_v2_runner(other)
    with pytest.raises(ValueError, match="cannot replace"):
        other.GPUModelRunner(cfg("ead")).load_model()


def test_real_v2_runner_is_patched_on_import():
    import vllm.v1.worker.gpu.model_runner as runner_v2

    from ead_vllm.vllm_ext import plugin

    plugin.register()
    assert getattr(runner_v2.GPUModelRunner.load_model, "_ead_patched", False)


def test_standalone_cpu_runner_refuses_the_ead_sampler():
    """vLLM 0.34's non-x86 CPU runner has its own CPUSampler: sampler="ead" must not start
    there (it would sample EAD requests stock); without it the runner is untouched."""
    from types import ModuleType

    from ead_vllm.vllm_ext.errors import EADConfigError
    from ead_vllm.vllm_ext.v2_install import patch_standalone_cpu_runner

    built = []

    class StandaloneCPUModelRunner:
        def __init__(self, vllm_config, device):
            built.append(vllm_config)

    module = ModuleType("fake_standalone")
    module.StandaloneCPUModelRunner = StandaloneCPUModelRunner
    patch_standalone_cpu_runner(module)
    patch_standalone_cpu_runner(module)  # idempotent
    ead = SimpleNamespace(additional_config={"sampler": "ead"})
    with pytest.raises(EADConfigError, match="standalone CPU model runner") as info:
        StandaloneCPUModelRunner(ead, torch.device("cpu"))
    assert str(info.value).startswith("ead-vllm: ") and "Way out: " in str(info.value)
    stock = SimpleNamespace(additional_config={})
    StandaloneCPUModelRunner(stock, torch.device("cpu"))
    assert built == [stock]


def test_real_standalone_cpu_runner_is_patched_on_import():
    from ead_vllm.vllm_ext import plugin
    from ead_vllm.vllm_ext.seams.patching import is_wrapped
    from ead_vllm.vllm_ext.seams.versions import STANDALONE_CPU_RUNNER, installed_release

    if not STANDALONE_CPU_RUNNER.holds(installed_release()):
        pytest.skip("no standalone CPU runner before vLLM 0.34.0")
    plugin.register()
    module = pytest.importorskip("vllm.v1.worker.cpu.standalone_model_runner")
    assert is_wrapped(module.StandaloneCPUModelRunner, "__init__")
