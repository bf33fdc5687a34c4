"""vLLM integration: the EAD sampler override, the plugin and logits processors."""
