"""OpenRLHF integration for EAD rollouts and the E3 methods (openrlhf 0.11.2).

Entry point: ``python -m openrlhf_bridge.train_ppo_ray <OpenRLHF flags> [--ead.* --e3.*]``
(see docs/openrlhf.md). Modules: ``flags`` (the bridge's flags and checks),
``train_ppo_ray`` (launcher), ``install`` (driver-side class substitution),
``state`` (EAD step, controller, allocator; checkpointed), ``sampling`` and
``rollout`` (vLLM requests), ``vllm_engine`` (engines with the EAD sampler),
``advantages`` and ``experience`` (per-prompt groups), ``actor`` and
``workers`` (per-position temperature and entropy), ``trainer`` (the PPO
trainer), ``testing`` (CPU-only import of OpenRLHF for tests).

This package imports nothing from OpenRLHF itself, so importing a submodule
loads only what that submodule needs.
"""
