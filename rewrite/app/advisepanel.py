"""The widget's "Advise" panel: which layer, which rank? (rewrite/analysis/advisor.py in GanRewriteApp)

    panel = AdvisePanel(app)           # GanRewriteApp builds one as app.advise_panel

Advise runs `advise` on the app's current request over the layers typed in the box and ranks 1-3
(the app's progress bar moves once per setting), on the unedited model (a copy with the original weights,
whatever changes are applied in the app), then lists the table best first, one row per setting
with a "Use" button, under a "not sure" line when the advisor could not tell the first settings
apart. Use sets the app's rank and, when the row's layer is not the app's, switches the
app to a rewriter of that layer on the same model and z-sample (only while no change is applied, so
that Revert still means the original weights). Errors show on the app's message line.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Sequence

import ipywidgets as widgets

from rewrite.analysis.advisor import Advice, Candidate, advise
from rewrite.app.base import AppPanel, SolveCancelled, UserError, reports_errors

__all__ = ['AdvisePanel', 'NEAR', 'parse_layers', 'RANKS', 'row_text']

RANKS = (1, 2, 3)
NEAR = 2            # the default layers: the app's layer and this many on either side


def parse_layers(text: str, known: Sequence[int]) -> list[int]:
    """'5-8' or '5,7' (or a mix) -> those layers, in order; UserError naming an item that is malformed
    or not among `known`."""
    layers: list[int] = []
    items = [item.strip() for item in str(text).split(',') if item.strip()]
    if not items:
        raise UserError(f'type the layers to try, e.g. {known[0]}-{known[-1]} (layers {known[0]}..{known[-1]})')
    for item in items:
        first, _, last = item.partition('-')
        if not first.strip().isdigit() or (last and not last.strip().isdigit()):
            raise UserError(f'cannot read {item!r} as a layer or a range like 5-8')
        lo, hi = int(first), int(last or first)
        if hi < lo:
            raise UserError(f'the range {item!r} runs backwards; write it as {hi}-{lo}')
        wrong = [n for n in range(lo, hi + 1) if n not in known]
        if wrong:
            raise UserError(f'layers: {wrong[0]} is not a styled conv layer of this model '
                            f'(layers {known[0]}..{known[-1]})')
        layers.extend(n for n in range(lo, hi + 1) if n not in layers)
    return layers


def row_text(c: Candidate) -> str:
    """One table row as HTML: the setting and its scores (or why it was skipped)."""
    if not c.ok:
        return f'layer {c.layer} rank {c.rank}: skipped ({html.escape(c.skipped or "")})'
    preserve = '' if c.preserve_leak is None else f', preserve {c.preserve_leak:.4f}'
    return (f'layer {c.layer} rank {c.rank}: score {c.score:.3f}, attain {c.attain:.3f}, fit {c.fit:.3f}, '
            f'reach {c.reach:.4f}, leak {c.leak:.4f}{preserve}, size {c.size:.3f}')


class AdvisePanel(AppPanel):
    """The Advise button, the layers box and the table of the last sweep (rows best first)."""

    def __init__(self, app, heldout: int = 48):
        super().__init__(app)
        self.heldout = int(heldout)
        self.advice: Advice | None = None
        known = self.known_layers()
        here = app.gw.layernum
        near = [n for n in known if abs(n - here) <= NEAR] or [here]
        self.layers_box = widgets.Text(value=f'{near[0]}-{near[-1]}', description='layers',
                                       layout=widgets.Layout(width='180px'))
        self.advise_btn = app.button('Advise', self.run, tooltip='try the request at each layer and rank 1-3 '
                                      'and rank the settings without labels')
        self.rows = widgets.VBox()
        self.rows.add_class('rwa-advice')
        self.row_buttons: list[widgets.Button] = []
        self.note = widgets.HTML('')            # how sure the advice is (empty when sure)
        self.children = [widgets.HBox([self.advise_btn, self.layers_box]), self.note, self.rows]

    def known_layers(self) -> list[int]:
        model = self.app.gw.model
        return list(getattr(model, 'layer_numbers', [self.app.gw.layernum]))

    @reports_errors('Advise')
    def run(self, _button=None) -> None:
        """The sweep, with the app's progress bar and Cancel (in a worker thread when clicked and the app
        solves in the background); then the table."""
        app = self.app
        request = app.checked_request(('paste',), 'Advise')
        layers = parse_layers(self.layers_box.value, self.known_layers())
        total = len(layers) * len(RANKS)
        app.progress.max, app.progress.value = total, 0
        app.progress.layout.visibility = 'visible'
        app.show_message(f'advising: {total} settings...')

        def moved(done: int, total: int, label: str) -> None:
            if app.cancel_requested.is_set():
                raise SolveCancelled
            app.progress.value = done
            app.loss_label.value = f'advise: {label} ({done}/{total})'

        def work() -> None:
            gw = app.gw
            unedited = copy.deepcopy(gw.model)                # the sweep never sees the applied changes
            unedited.load_state_dict(gw.original_state)
            self.advice = advise(unedited, gw.zds, request, layers=layers, ranks=RANKS, cachedir=gw.cachedir,
                                 heldout=self.heldout, progress=False, callback=moved)
            self._show_table()
            best = self.advice.best
            applied = f' ({len(gw.history)} applied change(s) left out)' if gw.history else ''
            doubt = '' if self.advice.sure else '; not sure, compare the first rows'
            app.show_message('no setting worked: see the reasons in the table' if best is None else
                             f'advice on the unedited model{applied}: layer {best.layer} rank {best.rank} first '
                             f'({self.advice.seconds:.1f} s{doubt}); click Use on a row to apply its setting')
        app.start_solve('Advise', work, background=app.background and _button is not None)

    def _show_table(self) -> None:
        self.row_buttons, rows = [], []
        for index, cand in enumerate(self.advice.table):
            button = widgets.Button(description=f'Use L{cand.layer} R{cand.rank}', disabled=not cand.ok,
                                    layout=widgets.Layout(width='auto'))
            button.on_click(lambda _b, i=index: self.use(i))
            self.row_buttons.append(button)
            rows.append(widgets.HBox([button, widgets.HTML(row_text(cand))]))
        self.note.value = '' if self.advice.sure else f'<b>not sure:</b> {html.escape(self.advice.doubt or "")}'
        self.rows.children = rows

    @reports_errors('Use setting')
    def use(self, index: int) -> None:
        """Applies row `index` of the table: the app's rank, and its layer (a new rewriter) if it differs."""
        if self.advice is None or not 0 <= index < len(self.advice.table):
            raise UserError('click Advise first')
        cand = self.advice.table[index]
        if not cand.ok:
            raise UserError(f'layer {cand.layer} rank {cand.rank} was skipped: {cand.skipped}')
        app = self.app
        app.switch_layer(cand.layer)
        if app.other_layer is not None:
            app.ask_layer(None if cand.layer == app.other_layer else app.other_layer)
        app.rank_box.value = cand.rank
        app.show_message(f'using layer {cand.layer} rank {cand.rank}: click Execute Change (or Erase) to apply it')
