"""The engine: one layer of a generator rewritten as a linear associative memory.

    rewriter.py     SeqStyleGanRewriter, the facade (one method a step, each a line or two)
    pieces.py       the generator cut at the rewrite site; the z-sample; masks at the layer
    statistics.py   key statistics (second moment, quantiles) gathered over the z-sample, cached
    contextkeys.py  keys of the selected regions; keymethods.py: their directions (zca, svd, mean, gandissect)
    goals.py        the copy / paste goal: keys and values the edit should map
    preserve.py     preserve regions: generalized eigen-directions, the preserve term
    solvers/        the solvers of an insert (fast closed form, the paper's Adam, the linear one)
    edits.py        running one edit: request -> goals -> solver -> record, atomically
    history.py      EditRecord, the edit history: atomic edits, rollback, undo / redo / revert
    damage.py       the damage probe: how far an edit moved the images away from its regions
    render.py       response maps, search, pictures
"""

from rewrite.core.rewriter import SeqStyleGanRewriter

__all__ = ['SeqStyleGanRewriter']
