"""Inference-time evaluation: pass@k and worst@k of EAD against fixed temperatures."""

from ead_vllm.evaluation.metrics import pass_at_k, worst_at_k

__all__ = ["pass_at_k", "worst_at_k"]
