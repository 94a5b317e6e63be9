"""The rule prober: paint where to add (or remove) the cause on a sample, and see the original and the
changed generator side by side (the original release's reflection notebook's interactive tool).

    prober = RuleProber(rule, changed, z)      # rule: a dissected rewrite.experiments.glow.rule.GlowRule
    display(prober)

The left canvas shows the sample without intervention; paint on it. The cause is added inside the paint at
the rule's cause layer with the chosen strength (negative: removed), in both models; the middle picture is
the original model, the right one the changed model, each with what the glow segmenter finds there.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rewrite.analysis.rulechange import render
from rewrite.experiments.glow.rule import GlowRule, present
from utils.imgviz import to_uint8
from utils.paintwidget import PaintWidget, encode_picture

__all__ = ['describe', 'RuleProber']


def describe(labels: torch.Tensor) -> str:
    """'lit windows yes, glow no' for one label map [1, H, W]."""
    def yes(name):
        return 'yes' if bool(present(labels, name)[0]) else 'no'

    return f'lit windows {yes("lit_window")}, glow {yes("glow")}'


class RuleProber(widgets.VBox):
    """Add / remove the cause where painted, original vs changed model.

    rule: a GlowRule after ``dissect``; changed: the changed generator; z: [N, D] samples to probe;
    size: pixels per picture. ``update()`` recomputes both pictures (called after every stroke and control change).
    """

    def __init__(self, rule: GlowRule, changed: torch.nn.Module, z: torch.Tensor, size: int = 256) -> None:
        if rule.dissection is None:
            raise ValueError('rule: dissect() it first (the cause direction comes from the dissection)')
        if z.dim() != 2 or len(z) == 0:
            raise ValueError(f'z: expected [N >= 1, D] samples, got shape {tuple(z.shape)}')
        self.rule, self.changed_model, self.z, self.size = rule, changed, z, int(size)
        self.sample = widgets.BoundedIntText(value=0, min=0, max=len(z) - 1, description='sample',
                                             layout=widgets.Layout(width='160px'))
        self.strength = widgets.FloatSlider(value=rule.strength, min=-12.0, max=12.0, step=0.5,
                                            description='strength', continuous_update=False)
        self.clear_button = widgets.Button(description='Clear', tooltip='clear the painted region')
        self.canvas = PaintWidget(size=self.size, brushsize=self.size / 14)
        self.canvas.add_class('rp-canvas')
        self.original = self._picture('rp-original')
        self.changed = self._picture('rp-changed')
        self.status = widgets.HTML()
        self.status.add_class('rp-status')
        self.canvas.on_mask(lambda _canvas: self.update())
        self.clear_button.on_click(self.clear)
        self.sample.observe(self._new_sample, names='value')
        self.strength.observe(lambda _change: self.update(), names='value')

        def column(title, widget):        # each title over its own picture, the columns apart
            heading = widgets.HTML(f'<b>{html.escape(title)}</b>', layout=widgets.Layout(width=f'{self.size}px'))
            heading.add_class('rp-title')
            return widgets.VBox([heading, widget], layout=widgets.Layout(margin='0 16px 0 0'))

        super().__init__([widgets.HBox([self.sample, self.strength, self.clear_button]),
                          widgets.HBox([column('paint the cause here', self.canvas),
                                        column('original model', self.original),
                                        column('changed model', self.changed)]),
                          self.status])
        self._new_sample()

    def _picture(self, css: str) -> widgets.Image:
        image = widgets.Image(format='png', width=self.size, height=self.size)
        image.add_class(css)
        return image

    def _encode(self, image: torch.Tensor) -> bytes:
        rgb = to_uint8(image)
        return encode_picture(np.asarray(_resize(rgb, self.size)), 'png')

    def mask(self) -> torch.Tensor:
        """The painted region as float [1, 1, H, W] at the generator's resolution."""
        m = torch.from_numpy(np.asarray(self.canvas.mask, dtype=np.float32))[None, None]
        return F.interpolate(m, size=(self.rule.model.size,) * 2, mode='area')

    def clear(self, _button=None) -> None:
        self.canvas.clear_mask()
        self.update()

    def _new_sample(self, _change=None) -> None:
        with torch.no_grad():
            plain = render(self.rule.model, self.z[self.sample.value:self.sample.value + 1]).clamp(-1, 1)
        self.canvas.set_picture(_resize(to_uint8(plain[0]), self.size))
        self.update()

    def update(self) -> None:
        """Both models' pictures with the cause applied inside the painted region (none when unpainted)."""
        z = self.z[self.sample.value:self.sample.value + 1]
        painted = not self.canvas.is_empty
        cause = self.rule.cause(None, self.strength.value, self.mask()) if painted else None
        with torch.no_grad():
            before = render(self.rule.model, z, cause).clamp(-1, 1)
            after = render(self.changed_model, z, cause).clamp(-1, 1)
        self.original.value = self._encode(before[0])
        self.changed.value = self._encode(after[0])
        what = (f'cause {"added" if self.strength.value >= 0 else "removed"} at strength '
                f'{self.strength.value:g} inside the paint' if painted else 'no intervention (paint to add the cause)')
        labels = self.rule.labels(torch.cat([before, after]))
        self.status.value = html.escape(f'sample {self.sample.value}: {what}. original: {describe(labels[:1])}; '
                                        f'changed: {describe(labels[1:])}')


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST))
