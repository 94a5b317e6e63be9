"""Experiments in the demo world (the only code that may import utils.demo)."""
