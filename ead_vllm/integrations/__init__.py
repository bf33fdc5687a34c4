"""Trainer integrations: the few lines of glue each RL trainer needs.

* :mod:`ead_vllm.integrations.trl`: TRL's ``GRPOTrainer`` (``EADGRPOTrainer``).

The OpenRLHF integration is the separate ``openrlhf_bridge`` package (it replaces
classes inside OpenRLHF's Ray processes). Each module here imports its trainer at
import time, so import only the one you use.
"""
