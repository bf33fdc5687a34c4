"""E3 controllers: entropy-targeting temperature and dynamic rollout budget."""
