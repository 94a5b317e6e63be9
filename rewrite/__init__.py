"""Rewriting a deep generative model: edit one layer of a generator so a copy/paste/context selection becomes a rule."""
