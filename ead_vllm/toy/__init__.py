"""Embedded toy model."""
