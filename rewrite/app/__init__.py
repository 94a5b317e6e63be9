"""The Jupyter widget (the only ipywidgets code besides utils/paintwidget.py and the glow experiment's prober).

    rewriteapp.py     GanRewriteApp, put together from layout.py, canvas.py, solving.py, fileactions.py
    base.py           AppPanel, the protocol a panel may use of the app, and the error reporting of handlers
    parts.py          image-number lists, mask shifts, records in words, download links, the style sheet
    preservepanel.py  preserve regions (Add to Preserve, Preview, the Changes strip)
    advisepanel.py    Advise: a layer and rank sweep shown as a table
"""

from rewrite.app.rewriteapp import GanRewriteApp

__all__ = ['GanRewriteApp']
