"""The Jupyter widget (the only ipywidgets code besides utils/paintwidget.py and the glow experiment's prober).

    rewriteapp.py     GanRewriteApp, put together from layout.py, canvas.py, solving.py, fileactions.py
    base.py           AppPanel, the protocol a panel may use of the app, and the error reporting of handlers
    parts.py          image-number lists, mask shifts, records in words, download links, the style sheet
    preservepanel.py  preserve regions (Add to Preserve, Preview, the Changes strip)
    advisepanel.py    Advise: a layer and rank sweep shown as a table

How it behaves
--------------
Paint on samples; Copy, Paste, Add to Context, Execute Change (rank, learning rate, iterations,
solver, progress bar), Erase (erase units: how many of the context's top units the goal zeroes; the
original's 30, at most the layer's width), Toggle Original, Revert, Undo / Redo, Search / Match Sel / Show
Context Matches, Save / Load of named edits (shared JSON format; Save asks before replacing a saved edit),
Export of the edited generator (it asks before replacing a file, and offers the checkpoint as a download link
in the page, up to 64 MB, so a Voila visitor can take it). The layer, rank and solver that Execute Change and
Erase run with are shown beside the settings at all times, and each history entry names its layer. Save writes
the edit's setting (`layer`, `rank`, `solver`, the solver options that differ from the defaults, `model`); Load
sets the rank, solver and options from the file, and a file made for another layer shows **Switch to layer N** (a
rewriter of that layer on the same model, as the advisor's Use makes; only while no change is applied) and
**Apply at layer M anyway**: Execute Change and Erase stay disabled until one is clicked. After every change the
message gives its held-out change (above); one above the damage threshold is shown in amber with an **Undo**
button beside it, never in green. A clicked Execute Change or Erase solves in a worker thread: every other
control is disabled meanwhile (a click on one says it was not carried out; nothing is replayed later) and
**Cancel** stops the solve at its next step with the weights as they were (during the first statistics pass
it stops once that pass ends). A loss that ends above where it started is shown as an amber warning (kept, or
rolled back by the rewriter past its tolerance), never as a green "changed the model". The *history* list
under the pictures goes back to any state (the original model, each applied change, the undone ones; one
entry a line, long ones wrapped); the solve's step and loss line is cleared on Undo, Redo, Revert and Load;
with the mouse over the pictures Ctrl+Z undoes, Ctrl+Shift+Z or Ctrl+Y redoes, Delete drops the selected
(clicked) context picture (keys are read only while the mouse is over the pictures; other keys are ignored). Rows
wrap to the output's width, the grid shows `columns` samples a row beside the
tools when they fit and below them otherwise, each canvas carries its image number, and the status line sits
under the controls. `tests/test_browser_layout.py` checks this in JupyterLab, Notebook 7 and Voila at 900,
1280 and 1920 px with the trays filled (controls inside the output area, no label cut short, every canvas
visible, no scroll box: canvases, their cells, the copy / paste boxes, the trays and the grid hold their
content; screenshots in `artifacts/`). Measured by `metrics/bench_widget_feedback.py` (demo model, the bundled
dome2spire edit, 9
canvases of 256 px, 1 thread, machine under load 7 on 2 cores): Cancel during the original solver to live
controls 6 ms (median of 3), a clicked fast Execute Change 1.9 s to live controls, Undo / Redo / a history
jump 1.05 s (mostly repainting the 9 samples).
`notebooks/rewriting-interface.ipynb` demonstrates it (JupyterLab, Notebook 7, Voila). It opens on the
unedited model: its scripted example runs only when you call `run_example()`, and the bundled edits load
from **Load** as `demo/NAME`. Its text cells meant for notebook users (tagged `notebook-only`) are left out of
the Voila page by `notebooks/voila.json` (`TagRemovePreprocessor`) when Voila is started in the notebook's folder
(as below; the `notebook` command copies `voila.json` beside the notebooks). Each Voila page runs its own kernel
(about 400 MB with the demo model), which
Voila keeps after the tab is closed unless told otherwise: started in the notebook's folder (`cd notebooks &&
voila rewriting-interface.ipynb`), `notebooks/voila.json` shuts down kernels without a connection after 10
idle minutes; from elsewhere pass `--MappingKernelManager.cull_idle_timeout=600
--MappingKernelManager.cull_interval=60` (measured: without them two closed pages left two kernels running;
with them both were gone within the timeout, `tests/test_first_use.py`).
"""

from rewrite.app.rewriteapp import GanRewriteApp

__all__ = ['GanRewriteApp']
