"""vLLM integration: the EAD sampler override, the plugin and logits processors.

Use:

* ``vllm serve M --sampler ead`` or ``LLM(M, additional_config={"sampler": "ead"})``:
  requests whose ``SamplingParams.extra_args`` (``vllm_xargs`` over HTTP) carry
  ``ead_tau_max``/``ead_tau_min``/``ead_decay``/``ead_warmup`` are sampled at
  ``temperature * tau_t`` by the fused kernel; every other request exactly as
  stock vLLM samples it. Speculative decoding is refused at start-up.
* No sampler override: ``--logits-processors
  ead_vllm.vllm_ext.logits_processors:EADLogitsProcessorV2`` (runner V2, vLLM 0.31
  and later) or ``...:EADLogitsProcessor`` (runner V1, vLLM 0.24-0.33).

Log-probs of EAD rows: with ``logprobs_mode="processed_logprobs"`` the sampled
token's log-prob is under the annealed distribution (for importance sampling
in RL); with ``raw_logprobs`` it is vLLM's raw value.

Layout (one concern per module): ``plugin`` (entry point), ``frontend``
(``--sampler``, start-up checks, request validation), ``config``, ``errors`` (the
one shape of a start-up refusal), ``validation``, ``request_state`` (per-row
schedule, seed and position), ``ead_masks`` (min_p/top-k/top-p of EAD rows at
``T * tau_t``, both runners), ``v1_batch_state``/``v1_sampler``/``v1_stock_rows``/
``v1_install``/``v1_logits_processor`` (runner V1, vLLM 0.24-0.33),
``v2_sampler``/``v2_install`` (runner V2), ``logits_processors`` (no-fork mode),
``_post_import``, and ``seams/``: every
vLLM internal ead-vllm touches, one module per internal, the version registry
(``seams/versions.py``), the start-up gate (``seams/gate.py``), the one way to wrap
a vLLM function (``seams/patching.py``) and a work-around for a vLLM crash
(``seams/dispatcher.py``).
"""
