"""Fine-tune the demo segmenter to label the glow rule's cause and effect.

    python -m utils.demo.train_rule_segmenter --out utils/demo/weights/segmenter_glow.pt

Starts from the shipped 10-class segmenter (``weights/segmenter.pt``, left unchanged) and grows its
1x1 head to the 12 ``RULE_CLASSES``: the ``lit_window`` row starts as a copy of ``window``, the
``glow`` row as a copy of ``ground``. Trains on fresh 'glow'-family renders (indices from 1,000,000,
the same augmentation as the shipped segmenter) and evaluates on held-out 'glow' scenes 0..999.
Writes the weights atomically, then ``segmenter_glow_card.{json,md}`` beside them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from utils.demo.scenedata import images_to_tensor, render_batch
from utils.demo.scenes import CLASS_ID, RULE_CLASSES
from utils.demo.segmenter import Segmenter, load_segmenter, save_segmenter
from utils.demo.train_segmenter import AUGMENTATION, fit, iou_report, train_indices, training_arguments
from utils.fileio import atomic_path

EVAL_INDICES = range(1000)


def render_glow(indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """'glow'-family images float [N,3,64,64] in [-1,1] and labels int64 [N,64,64] (RULE_CLASSES)."""
    images, labels = render_batch(indices, family='glow')
    return images_to_tensor(images), torch.from_numpy(labels.astype(np.int64))


def grow_head(base: Segmenter) -> Segmenter:
    """A copy of ``base`` with a 12-class head; new rows copy window (lit_window) and ground (glow)."""
    model = Segmenter(base.config['width'], len(RULE_CLASSES))
    state = base.state_dict()
    src = list(range(base.config['n_classes'])) + [CLASS_ID['window'], CLASS_ID['ground']]
    state['head.weight'] = state['head.weight'][src].clone()
    state['head.bias'] = state['head.bias'][src].clone()
    model.load_state_dict(state)
    return model


def train(base: Segmenter, iters: int, batch: int, seed: int, lr: float) -> Segmenter:
    torch.manual_seed(seed)
    return fit(grow_head(base).train(), render_glow, iters, batch, seed, lr, warmup=min(100, iters // 5),
               desc='fine-tune rule segmenter', mininterval=10)


def evaluate(model: Segmenter, n: int = len(EVAL_INDICES)) -> dict:
    """Per-class IoU over held-out 'glow' scenes 0..n-1, clean and blurred (sigma 0.8 px)."""
    return {'scenes': n} | iou_report(model, *render_glow(range(n)), RULE_CLASSES)


def card_markdown(info: dict) -> str:
    ev, tr = info['eval'], info['training']
    rows = '\n'.join(f'| {c} | {ev["per_class_iou"][c]:.4f} | {ev["blurred_per_class_iou"][c]:.4f} |'
                     for c in RULE_CLASSES)
    return f"""# Glow-rule segmenter

The demo segmenter fine-tuned to label the 'glow' scene family of `utils/demo/scenes.py`
({len(RULE_CLASSES)} classes: {', '.join(RULE_CLASSES)}): `lit_window` is the rule's cause,
`glow` its effect. Same U-Net as `segmenter.pt` (which is unchanged); its head grew from 10 to 12 rows
(`lit_window` initialised from `window`, `glow` from `ground`).

## Training
- data: fresh 'glow' renders every step, scene indices from {tr['first_index']:,} (never the held-out 0..999)
- iterations: {tr['iters']}, batch: {tr['batch']}, seed: {tr['seed']}, AdamW peak lr {tr['lr']}, cosine decay
- augmentation: {AUGMENTATION}
- wall time: {tr['wall_time_s']:.0f} s on 1 CPU thread (shared with other jobs)
- command: `{tr['command']}`

## Held-out evaluation
'glow' scenes 0..{ev['scenes'] - 1} at 64x64; IoU per class pooled over every pixel; blurred: sigma
{ev['blurred_sigma']} px first.

| class | IoU | IoU (blurred) |
| --- | --- | --- |
{rows}
| **mean** | **{ev['mean_iou']:.4f}** | **{ev['blurred_mean_iou']:.4f}** |
"""


def main(argv: Sequence[str] | None = None) -> None:
    ap = training_arguments(__doc__, Path('utils/demo/weights/segmenter_glow.pt'), iters=600, batch=16, seed=1, lr=1e-3)
    ap.add_argument('--eval-scenes', type=int, default=1000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = train(load_segmenter(), args.iters, args.batch, args.seed, args.lr)
    wall = time.perf_counter() - t0
    with atomic_path(args.out) as tmp:
        save_segmenter(model, tmp, RULE_CLASSES)
    info = {'training': {'iters': args.iters, 'batch': args.batch, 'seed': args.seed, 'lr': args.lr,
                         'first_index': train_indices(0, args.batch, args.seed).start,
                         'wall_time_s': round(wall, 1), 'torch': torch.__version__,
                         'command': f'python -m utils.demo.train_rule_segmenter --out {args.out.as_posix()} '
                                    f'--iters {args.iters} --batch {args.batch} --seed {args.seed} --lr {args.lr}'},
            'eval': evaluate(model, args.eval_scenes)}
    card = args.out.with_name(args.out.stem + '_card')
    with atomic_path(card.with_suffix('.json')) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + '\n')
    with atomic_path(card.with_suffix('.md')) as tmp:
        tmp.write_text(card_markdown(info))
    print(json.dumps(info['eval'], indent=2))


if __name__ == '__main__':
    main()
