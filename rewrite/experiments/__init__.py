"""Experiments in the demo world (the only package code that may import utils.demo).

    glow/   the glow world: lit windows cast a glow; the rule found, probed and changed
"""
