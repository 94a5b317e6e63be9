"""The command line: `python -m rewrite COMMAND` (one module a command; the registry is entry.COMMANDS).

    entry.py      build_parser (from COMMANDS) and main
    common.py     what every command shares: errors, argument types and groups, threads, model loading, path checks
    editspec.py   --edit / --layer / --rank / solver flags checked into an EditSpec; the rewriter; running the edit
    sample.py, apply.py, stats.py, demo.py, advise.py, convert.py, notebook.py: one command each
    sampling.py   bulk sampling: resumable PNG folders, their manifest and contact sheet

OpenMP's threads wait passively here unless OMP_WAIT_POLICY says otherwise (set before torch is imported): with
--threads 2 on a busy 2-core machine spinning threads made the advisor's sweep 4-10 times slower
(metrics/README.md, "Sweep time").
"""

import os

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from rewrite.cli.entry import main  # noqa: E402  (after the OpenMP setting)

__all__ = ['main']
