"""Forget stages: one module per artifact family."""
