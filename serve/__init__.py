"""OpenAI-compatible serving with annealed decoding (installed as ``ead_vllm.serve``)."""
