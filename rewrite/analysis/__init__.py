"""Analyses built on the engine: the label-free edit advisor and contextual rule change."""
