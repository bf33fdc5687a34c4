"""Fused EAD sampling kernels (installed as ``ead_vllm.kernels``)."""
