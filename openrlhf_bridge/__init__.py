"""OpenRLHF integration for EAD rollouts and the E3 methods."""
