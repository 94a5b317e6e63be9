"""Pictures of the advisor's sweep: the leak map of one sample and the grid of the best settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from rewrite.analysis.advisor import Advice


def change_picture(change: np.ndarray, targets: np.ndarray, full_scale: float = 0.5) -> np.ndarray:
    """The leak map of one sample: |change| [H, W] as red on black (full red at `full_scale`, images in
    [-1, 1]), the rule's targets (bool [H, W]) outlined in green. uint8 [H, W, 3]."""
    from utils.imgviz import region_border
    red = np.clip(np.asarray(change) / full_scale, 0, 1) * 255
    out = np.zeros((*red.shape, 3), np.uint8)
    out[..., 0] = red.round().astype(np.uint8)
    border = region_border(torch.as_tensor(np.asarray(targets, dtype=bool))).numpy()
    out[border] = (0, 200, 0)
    return out


ROW_LABEL_WIDTH = 112      # pixels left of advice_picture's grid for its row labels


def advice_picture(advice: Advice, top: int = 3, pad: int = 2) -> np.ndarray:
    """uint8 [H', ROW_LABEL_WIDTH + W', 3]: a grid, one column per held-out sample: the first row the unedited
    samples, then for each of the `top` best settings two rows: the edited samples and their leak maps
    (change_picture); each row labelled on its left ('unedited', 'layer L rank R: edited' / ': change')."""
    from PIL import Image, ImageDraw

    from utils.imgviz import tile
    if advice.before_previews is None or not len(advice.before_previews):
        raise ValueError('the advice has no previews')
    cols = len(advice.before_previews)
    rows = list(advice.before_previews)
    labels = [('unedited',)]
    for c in [c for c in advice.table if c.ok and c.previews][:top]:
        rows += list(c.previews['after'])
        rows += [change_picture(ch, t) for ch, t in zip(c.previews['change'], c.previews['targets'])]
        labels += [(f'layer {c.layer} rank {c.rank}', 'edited'), (f'layer {c.layer} rank {c.rank}', 'change (red)')]
    grid = tile(rows, cols=cols, pad=pad, background=255)
    picture = Image.new('RGB', (ROW_LABEL_WIDTH + grid.shape[1], grid.shape[0]), 'white')
    picture.paste(Image.fromarray(grid), (ROW_LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(picture)
    height = np.asarray(rows[0]).shape[0]
    for row, lines in enumerate(labels):
        top_y = pad + row * (height + pad)
        draw.multiline_text((4, top_y + max(0, (height - 12 * len(lines)) // 2)), '\n'.join(lines), fill='black',
                            spacing=1)
    return np.asarray(picture)
