"""Installed but not activated, ead-vllm changes nothing; activated, it leaves non-EAD rows alone.

The reference is stock vLLM in a subprocess where vLLM loads no plugin at all
(``VLLM_PLUGINS=""``). Seeded requests covering vLLM's sampling options
(temperature, top-k, top-p, min-p, penalties, logit bias, greedy, n > 1,
log-probs) must give identical tokens and log-probs:

* on an engine with the plugin loaded but ``sampler`` not set (even for
  requests carrying ``ead_*`` keys, which stock vLLM ignores too);
* on an engine with ``sampler="ead"`` for every request without ``ead_*`` keys,
  including when they share the batch with EAD requests.
"""

from __future__ import annotations

import os

import pytest
from vllm_engine_support import (
    ENGINE_ENV,
    RUNNER,
    fixed_requests,
    make_llm,
    model_runner,
    run_fixed,
    run_support_script,
    shutdown_llm,
    stock_sampler_class,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.live_engine,
    pytest.mark.v2_every_release,
]


@pytest.fixture(scope="module")
def stock(model_dir):
    env = {**os.environ, **ENGINE_ENV, "VLLM_PLUGINS": ""}
    result = run_support_script("stock", model_dir, env)
    assert result["stock_sampler"]
    return result


def test_inactive_plugin_is_stock(model_dir, stock, monkeypatch):
    from ead_vllm.vllm_ext.seams import gate

    def gate_ran(*args, **kwargs):
        raise AssertionError("the version/seam gate ran without sampler='ead'")

    # nothing is checked either: an inactive plugin passes any vLLM through
    monkeypatch.setattr(gate, "check_vllm", gate_ran)
    monkeypatch.setattr(gate, "installed_vllm_version", lambda: "0.1.0")
    llm = make_llm(model_dir)
    try:
        runner = model_runner(llm)
        assert type(runner.sampler) is stock_sampler_class()
        processors = (
            getattr(runner.sampler, "logits_processors", [])  # runner V2 (none on 0.29/0.30)
            if RUNNER == "v2"
            else runner.input_batch.logitsprocs.all
        )
        assert all(type(p).__module__.startswith("vllm.") for p in processors)
        assert run_fixed(llm, fixed_requests(with_ead=False)) == stock["plain"]
        assert run_fixed(llm, fixed_requests(with_ead=True)) == stock["mixed"]
    finally:
        shutdown_llm(llm)


def test_active_sampler_leaves_non_ead_rows_stock(model_dir, stock):
    llm = make_llm(model_dir, additional_config={"sampler": "ead"})
    try:
        assert run_fixed(llm, fixed_requests(with_ead=False)) == stock["plain"]
        mixed = run_fixed(llm, fixed_requests(with_ead=True))
        params = fixed_requests(with_ead=True)
        rows = [p for p in params for _ in range(p.n)]
        assert len(rows) == len(mixed)
        for p, ours, ref in zip(rows, mixed, stock["mixed"], strict=True):
            if p.extra_args:
                if p.temperature > 0 and p.logprobs is not None:
                    assert ours["logprobs"] != ref["logprobs"]  # annealed log-probs
            else:
                assert ours == ref
    finally:
        shutdown_llm(llm)
