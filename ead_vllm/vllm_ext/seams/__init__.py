"""Version adapters for the vLLM internals that ead-vllm patches, one module per seam.

A *seam* is a private vLLM class or function whose exact shape our code relies on.
Each module names the vLLM versions it handles, the parameters it expects of every
seam (checked at start-up by :mod:`.gate`), and, where versions differ, the one
place that knows how:

* :mod:`.v1_sampler`: runner V1's ``Sampler`` (one shape, vLLM 0.24.0-0.33.0);
* :mod:`.v1_logits_processor`: runner V1's logits-processor interface and
  ``BatchUpdate`` (one shape, 0.24.0-0.33.0);
* :mod:`.v2_sampler`: runner V2's ``Sampler`` (shape A0: 0.24.0-0.27.0, shape A:
  0.28.0-0.30.0, shape B: 0.31.0-0.34.0);
* :mod:`.v2_stock_sampling`: the tail of runner V2's ``Sampler.sample``
  (temperature to token; 0.24.0-0.29.0 | 0.30.0-0.32.0 | 0.33.0-0.34.0);
* :mod:`.v2_logits_processor`: runner V2's logits-processor interface (absent in
  0.24.0-0.30.0, present from 0.31.0);
* :mod:`.frontend`: ``InputProcessor._validate_params`` and ``EngineArgs`` (one
  shape, 0.24.0-0.34.0);
* :mod:`.serving`: where the OpenAI server's helpers live (three layouts).
* :mod:`.v2_runner`: runner V2's ``load_model`` and, from 0.34.0, the standalone CPU
  runner.

:mod:`.versions` holds the supported set; :mod:`.gate` turns a version or seam
mismatch into one start-up error naming the way out.
"""
