"""What an edit is on disk and in settings (the layer below the engine: it imports only utils).

    editfile.py    edit files: EditRequest, parse / validate / load / save (the format in its docstring)
    selection.py   one [imgnum, mask] pair (Selection), checked and decoded once
    fields.py      the checks of the value fields (preserve_weight, layer, rank, solver, solver_options, model)
    jsontext.py    strict, bounded JSON reading (no field twice, long integers kept as text)
    savededits.py  folders of saved edits, the notebooks' folder, export paths
    settings.py    the solvers' options (dataclasses), the preserve weight, RewriteError and the checks of settings
    registry.py    SOLVERS and KEY_METHODS: names, summaries, options, and the engine function each runs
"""
