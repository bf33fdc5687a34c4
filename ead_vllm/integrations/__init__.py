"""Trainer integrations: the few lines of glue each RL trainer needs.

* :mod:`ead_vllm.integrations.trl`: TRL's ``GRPOTrainer`` (``EADGRPOTrainer``).
* :mod:`ead_vllm.integrations.skyrl`: the ``additional_kwargs`` of SkyRL's sampling
  config for each training step (plain dictionaries; it does not import SkyRL).
* :mod:`ead_vllm.integrations.verl`: verl 0.9.1's agent loop and agent loop manager
  (EAD keys per step, E3's budget and temperature; imports verl).

The OpenRLHF integration is the separate ``openrlhf_bridge`` package (it replaces
classes inside OpenRLHF's Ray processes). The TRL and verl modules import their trainer
at import time, so import only the one you use.
"""
