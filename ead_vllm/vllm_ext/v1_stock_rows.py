"""Stock sampling of the non-EAD rows of a V1 batch, bit-identical to stock vLLM.

Uses runner V1's ``Sampler`` and ``TopKTopPSampler`` pieces through the seam
:mod:`ead_vllm.vllm_ext.seams.v1_stock_sampling` (which names the versions and
what differs between them; the start-up gate checks their signatures).

In a batch with EAD rows, the EAD rows go to the fused kernel and the other
rows go through vLLM's own steps. A row's stock result depends on its
neighbours through one thing only: the unseeded noise, which vLLM draws for
the whole batch at once from the global generator, indexed by the row's
place in the batch. Sampling a sub-batch with vLLM's own code would draw a
shorter stream, so an unseeded row would get another (equally distributed)
token than stock vLLM gives it. So the noise is drawn here exactly as stock
draws it for the *whole* batch, and each row gets its own slice:

* ``"splitmix"`` (vLLM >= 0.32 on CPU): one 31-bit seed per row of the batch
  from ``torch.randint`` (a seeded row's from its own generator), then a
  per-(seed, token) SplitMix64 stream in ``fused_gumbel_argmax``: the non-EAD
  rows alone are sampled, with their seeds;
* ``"exp"`` (the native sampler, used on GPU with processed log-probs or
  per-request seeds): an exponential tensor of the batch's full [B, V] shape,
  the non-EAD rows take their rows of it;
* ``"full"`` (vLLM 0.24-0.31 on CPU, whose unseeded draw happens inside a
  ``torch.compile``d graph; FlashInfer, XPU, ROCm samplers): stock
  ``Sampler.sample`` on the whole batch, keeping the non-EAD rows. Exact, at
  stock vLLM's cost for the EAD rows too.
"""

from __future__ import annotations

import functools

import torch

from ead_vllm.vllm_ext.ead_masks import min_p_mask_
from ead_vllm.vllm_ext.request_state import SAMPLING_EPS
from ead_vllm.vllm_ext.seams import v1_sampler as v1_seam
from ead_vllm.vllm_ext.seams import v1_stock_sampling as stock_seam
from ead_vllm.vllm_ext.seams.v1_stock_sampling import cpu_draws_exponential, cpu_noise_is_splitmix
from ead_vllm.vllm_ext.seams.versions import installed_release

# runner V1's internals, through their seams (checked by the start-up gate)
Sampler = v1_seam.internals().Sampler
SamplingMetadata = v1_seam.internals().SamplingMetadata
TopKTopPSampler = stock_seam.internals().TopKTopPSampler
empty_exponential_noise_like = stock_seam.internals().empty_exponential_noise_like
sample_with_exponential_noise = stock_seam.internals().sample_with_exponential_noise


@functools.cache
def _cpu_noise_is_splitmix() -> bool:
    # which versions draw which noise: the seam module names them
    return cpu_noise_is_splitmix(installed_release())


def noise_route(sampler: Sampler) -> str:
    """How stock sampling draws this engine's unseeded noise: ``splitmix``, ``exp`` or ``full``."""
    topk_topp = sampler.topk_topp_sampler
    forward = getattr(topk_topp.forward, "__func__", None)
    if forward is TopKTopPSampler.forward_native:
        return "exp"
    if (
        forward is TopKTopPSampler.forward_cpu
        and not topk_topp.use_fp64_gumbel
        and _cpu_noise_is_splitmix()
    ):
        return "splitmix"
    return "full"


def _own_generators(
    metadata: SamplingMetadata, rows_list: list[int]
) -> list[tuple[int, torch.Generator]]:
    # only the sampled rows' generators: EAD rows never draw from theirs
    wanted = set(rows_list)
    return [(i, gen) for i, gen in metadata.generators.items() if i in wanted]


def _exponential_noise(
    sampler: Sampler, metadata: SamplingMetadata, like: torch.Tensor, rows_list: list[int]
) -> torch.Tensor:
    """Stock ``random_sample``'s [B, V] noise (``like``: any [B, V] tensor of the batch)."""
    q = empty_exponential_noise_like(like, sampler.topk_topp_sampler.use_fp64_gumbel)
    if len(metadata.generators) != like.shape[0]:
        q.exponential_()
    for i, gen in _own_generators(metadata, rows_list):
        q[i].exponential_(generator=gen)
    return q


def _splitmix_seeds(metadata: SamplingMetadata, batch_size: int, rows_list: list[int]):
    seeds = torch.randint(0, 2**31, (batch_size,), dtype=torch.long)
    for i, gen in _own_generators(metadata, rows_list):
        seeds[i] = torch.randint(0, 2**31, (1,), generator=gen, dtype=torch.long).item()
    return seeds


def draw_stock_noise(sampler: Sampler, metadata: SamplingMetadata, logits: torch.Tensor) -> None:
    """Consume the global generator as stock sampling of this batch would.

    ``logits`` [B, V]: the batch's logits (only its shape and device are
    read). Called when every row of the batch is an EAD row, so that later
    steps' unseeded stock rows get the same noise as in stock vLLM.
    """
    route = noise_route(sampler)
    if route == "splitmix":
        _splitmix_seeds(metadata, logits.shape[0], [])
    elif route == "exp":
        _exponential_noise(
            sampler, metadata, logits.new_empty(logits.shape, dtype=torch.float32), []
        )
    elif _cpu_draws_full_exponential(sampler, metadata, logits.shape[0]):
        # vLLM's CPU sampler with seeded rows (0.29-0.31: any; 0.24-0.28: every row)
        # or fp64 noise (every version) skips its compiled graph and draws a [B, V]
        # exponential from the global generator; EAD rows' own generators stay
        # untouched, as everywhere
        topk_topp = sampler.topk_topp_sampler
        like = logits.new_empty(logits.shape, dtype=torch.float32)
        empty_exponential_noise_like(like, topk_topp.use_fp64_gumbel).exponential_()
    # otherwise "full": the draw lives inside a compiled graph (or a library
    # sampler); later unseeded rows get other, equally distributed noise than stock's


def _cpu_draws_full_exponential(
    sampler: Sampler, metadata: SamplingMetadata, batch_size: int
) -> bool:
    topk_topp = sampler.topk_topp_sampler
    forward = getattr(topk_topp.forward, "__func__", None)
    return forward is TopKTopPSampler.forward_cpu and cpu_draws_exponential(
        installed_release(), len(metadata.generators), batch_size, topk_topp.use_fp64_gumbel
    )


def sample_stock_rows(
    sampler: Sampler,
    logits: torch.Tensor,
    metadata: SamplingMetadata,
    rows: torch.Tensor,
    min_p: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What stock ``Sampler.sample`` gives the rows ``rows`` of the live batch.

    ``logits`` [B, V] fp32: the whole batch after ``apply_logits_processors``
    (modified in place, as stock does; the EAD rows must have been copied out
    before); ``rows`` int64 [N] indices of the non-EAD rows; ``metadata`` the
    batch's (it has random EAD rows, so it is never all-greedy); ``min_p`` [N]
    fp32 or None: the min_p processor's values for these rows. Returns the
    sampled tokens [N] int64 and the processed logits/log-probs [N, V] (None
    in the raw modes).
    """
    assert metadata.temperature is not None
    route = noise_route(sampler)
    if route == "full":
        sampled, processed = sampler.sample(logits, metadata)
        keep = processed[rows] if processed is not None else None
        return sampled[rows].long(), keep

    batch_size = logits.shape[0]
    rows_list = rows.tolist()
    sub = logits[rows]
    temperature = metadata.temperature[rows]
    greedy = None if metadata.all_random else sampler.greedy_sample(sub)
    sub = sampler.apply_temperature(sub, temperature, metadata.all_random)
    if min_p is not None:
        min_p_mask_(sub, min_p)
    topk_topp = sampler.topk_topp_sampler
    top_k = None if metadata.top_k is None else metadata.top_k[rows]
    top_p = None if metadata.top_p is None else metadata.top_p[rows]
    sub = stock_seam.apply_top_k_top_p()(sub, top_k, top_p)
    processed = None
    if topk_topp.logprobs_mode == "processed_logits":
        processed = sub
    elif topk_topp.logprobs_mode == "processed_logprobs":
        processed = sub.log_softmax(dim=-1, dtype=torch.float32)
    if route == "splitmix":
        seeds = _splitmix_seeds(metadata, batch_size, rows_list)[rows.cpu()]
        sampled = stock_seam.internals().fused_gumbel_argmax(sub.to(torch.float32), seeds)
    else:
        probs = sub.softmax(dim=-1, dtype=torch.float32)
        q = _exponential_noise(sampler, metadata, logits, rows_list)
        sampled = sample_with_exponential_noise(probs, q[rows])
    sampled = sampled.long()
    if greedy is not None:
        sampled = torch.where(temperature < SAMPLING_EPS, greedy.long(), sampled)
    return sampled, processed
