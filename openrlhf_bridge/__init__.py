"""OpenRLHF integration for EAD rollouts and the E3 methods (openrlhf 0.11.2).

Entry point: ``python -m openrlhf_bridge.train_ppo_ray <OpenRLHF flags> [--ead.* --e3.*]``
(see docs/openrlhf.md). Modules:

* flags: ``arguments`` (the ``--ead.*``/``--e3.*`` flags on OpenRLHF's parser),
  ``checks`` (value rules, one-line errors), ``config`` (the resolved flags,
  rebuilt in every process), ``combinations`` (refused combinations with
  OpenRLHF's flags, the TIS mapping);
* launch: ``train_ppo_ray`` (launcher), ``imports`` (building the parser
  without flash-attn, what a launch needs), ``install`` (driver-side class
  substitution), ``swaps`` (proof that the substitutions took effect);
* run: ``state`` (EAD step, controller, allocator; checkpointed), ``sampling``
  and ``rollout`` (vLLM requests), ``vllm_engine`` (rollout engines),
  ``advantages`` and ``experience`` (groups by rollout instance), ``actor`` and
  ``workers`` (per-position temperature and entropy), ``trainer`` (the PPO
  trainer); ``testing`` (CPU-only import of OpenRLHF for tests).

This package imports nothing from OpenRLHF itself, so importing a submodule
loads only what that submodule needs.
"""
