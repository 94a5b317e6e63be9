"""Which layer holds a contextual rule (rewrite/analysis/rulechange.py): every layer's change scaled to the same
change elsewhere (`scale_to_budget`), its flip rate, a table and a plot (`LayerSearch`, `layer_search`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rewrite.analysis.rulechange import RuleChangeProblem, change_outside, conv_weight_name, fit_layer_change, render

__all__ = ['BUDGET_RTOL', 'layer_search', 'LayerSearch', 'MAX_SCALE', 'scale_to_budget']

MAX_SCALE = 4.0          # layer_search strengthens a change at most this much to bring it up to the budget


BUDGET_RTOL = 0.01       # layer_search's changes meet the budget to within this share of it


def scale_to_budget(model: torch.nn.Module, layer: str, delta: torch.Tensor, problem: RuleChangeProblem,
                    budget: float, iters: int = 6, max_scale: float = 1.0, rtol: float = 0.0
                    ) -> tuple[float, float]:
    """(scale s in [0, max_scale], change outside at s): max_scale when the change scaled so stays within
    ``budget``, else the largest s found by bisection (``iters`` halvings at most, fewer once the change is
    within ``rtol`` of the budget) whose ``change_outside`` is at most the budget (max_scale > 1 strengthens a
    change that leaves room in the budget, as the paper's edit strength)."""
    if not max_scale > 0:
        raise ValueError(f'max_scale: expected a positive number, got {max_scale}')
    full = change_outside(model, layer, max_scale * delta, problem)
    if full <= budget:
        return max_scale, full
    lo, hi, at_lo = 0.0, max_scale, 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        c = change_outside(model, layer, mid * delta, problem)
        if c <= budget:
            lo, at_lo = mid, c
            if c >= (1 - rtol) * budget:
                break
        else:
            hi = mid
    return lo, at_lo


@dataclass
class LayerSearch:
    """Rows (layer, flip, change_outside, scale, loss_before, loss_after), one per layer searched; a row's
    change is at the budget, or under it at the largest scale allowed (`max_scale`; the table says so)."""

    rows: list[dict]
    budget: float
    changes: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    max_scale: float = MAX_SCALE

    @property
    def best(self) -> str:
        return max(self.rows, key=lambda r: r['flip'])['layer']

    @property
    def margin(self) -> float:
        """Flip rate of the best layer minus the second best's, in points (inf with one layer)."""
        flips = sorted((r['flip'] for r in self.rows), reverse=True)
        return 100.0 * (flips[0] - flips[1]) if len(flips) > 1 else float('inf')

    def noise(self, n: int) -> float:
        """Two standard errors, in points, of the difference of the two best flip rates measured on n
        samples each (binomial, at their mean rate): a margin under it is within the noise."""
        flips = sorted((r['flip'] for r in self.rows), reverse=True)[:2]
        p = min(max(sum(flips) / len(flips), 0.0), 1.0)
        return 200.0 * (2 * p * (1 - p) / max(n, 1)) ** 0.5

    def verdict(self, points: float = 15.0, n: int | None = None) -> str:
        """Whether one layer is clearly best: `points` above the second, and, given the number n of samples
        the flip rates were measured on, beyond the noise of n samples."""
        noise = self.noise(n) if n is not None and len(self.rows) > 1 else 0.0
        if self.margin >= points and self.margin > noise:
            return f'{self.best} is clearly best ({self.margin:.0f} points above the second best)'
        if self.margin >= points or (noise > points and self.margin < noise):
            return (f'no layer is clearly best: the best, {self.best}, is {self.margin:.0f} points above the '
                    f'second, within the noise of {n} samples (two standard errors: {noise:.0f} points); '
                    'more samples are needed to tell the layers apart')
        return (f'no layer is clearly best (best {self.best}, {self.margin:.0f} points above the second; '
                f'{points:.0f} needed): the rule is spread over layers')

    def table(self) -> str:
        """A markdown table of the rows."""
        lines = ['| layer | flip rate | change outside | scale | loss before | loss after |',
                 '| --- | --- | --- | --- | --- | --- |']
        lines += [f"| {r['layer']} | {100 * r['flip']:.0f}% | {r['change_outside']:.4f} | {r['scale']:.3f}"
                  f"{' (largest allowed: under the budget)' if r.get('under_budget') else ''} "
                  f"| {r['loss_before']:.4f} | {r['loss_after']:.4f} |" for r in self.rows]
        return '\n'.join(lines)

    def plot(self, width: int = 360, height: int = 220):
        """Bar chart of the flip rate per layer at the equal change elsewhere (best in red): a PIL Image."""
        from PIL import Image, ImageDraw

        image = Image.new('RGB', (width, height), 'white')
        draw = ImageDraw.Draw(image)
        left, top, bottom = 34, 22, height - 20
        draw.text((4, 4), f'flip rate per layer, change outside <= {self.budget}', fill='black')
        draw.line([(left, top), (left, bottom), (width - 4, bottom)], fill='black')
        for pct in (0, 50, 100):
            y = bottom - (bottom - top) * pct / 100
            draw.text((4, y - 5), f'{pct}%', fill='black')
        slot = (width - left - 8) / max(len(self.rows), 1)
        for i, r in enumerate(self.rows):
            x0 = left + 4 + i * slot
            y = bottom - (bottom - top) * r['flip']
            draw.rectangle([x0, y, x0 + slot * 0.7, bottom], fill=(200, 40, 40) if r['layer'] == self.best
                           else (150, 150, 150))
            draw.text((x0, bottom + 4), r['layer'].replace('layer', 'L'), fill='black')
        return image


def layer_search(model: torch.nn.Module, layers: list[str], problem: RuleChangeProblem,
                 flip: Callable[[torch.Tensor, torch.Tensor], float], budget: float = 0.03,
                 steps: int = 50, lr: float = 0.02, evaluation: RuleChangeProblem | None = None,
                 progress: Callable[[str], None] | None = None, max_scale: float = MAX_SCALE,
                 rtol: float = BUDGET_RTOL) -> LayerSearch:
    """For each layer, fit the full change on ``problem``, scale it (weakened, or strengthened up to
    ``max_scale``) so that its change outside the effect region (measured on ``evaluation``, default the
    problem itself) is ``budget`` to within ``rtol`` of it, and score it there by
    ``flip(reference images, changed images) -> rate in [0, 1]``. A change still under the budget at
    ``max_scale`` keeps that scale; its row says so (``under_budget``)."""
    evaluation = evaluation or problem
    rows, changes = [], {}
    for layer in layers:
        fit = fit_layer_change(model, layer, problem, steps=steps, lr=lr)
        scale, outside = scale_to_budget(model, layer, fit.delta, evaluation, budget, iters=20,
                                         max_scale=max_scale, rtol=rtol)
        delta = scale * fit.delta
        weights = {conv_weight_name(model, layer): model.get_parameter(conv_weight_name(model, layer)).detach() + delta}
        with torch.no_grad():
            after = render(model, evaluation.z, evaluation.cause, weights).clamp(-1, 1)
        rows.append(dict(layer=layer, flip=float(flip(evaluation.reference, after)), change_outside=outside,
                         scale=scale, loss_before=fit.losses[0], loss_after=fit.losses[-1],
                         under_budget=bool(scale == max_scale and outside < (1 - rtol) * budget)))
        changes[layer] = delta
        if progress is not None:
            progress(f"{layer}: flip {100 * rows[-1]['flip']:.0f}%, change outside {outside:.4f}")
    return LayerSearch(rows, budget, changes, max_scale)
