"""The command line: `python -m rewrite COMMAND` (one module per command)."""

from rewrite.cli.entry import main

__all__ = ['main']
