"""ead-vllm: exploratory annealed decoding and E3 exploration for vLLM and OpenRLHF."""

__version__ = "0.1.0"
