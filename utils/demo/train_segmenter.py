"""Train the demo-world segmenter on freshly rendered scenes.

    python -m utils.demo.train_segmenter --out utils/demo/weights/segmenter.pt

Training scenes use indices >= 1_000_000 (fresh ones every step); the
held-out evaluation uses scenes 0..999. Writes the weights atomically, then
``segmenter_card.md`` and ``segmenter_card.json`` beside them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils.demo.scenedata import images_to_tensor, render_batch, save_scene_grid
from utils.demo.scenes import CLASSES
from utils.demo.segmenter import Segmenter, evaluate_iou, save_segmenter
from utils.fileio import atomic_path

TRAIN_START = 1_000_000
EVAL_INDICES = range(1000)
AUGMENTATION = ('per image: Gaussian blur sigma 0.4-1.5 px (p=0.6); '
                'contrast/brightness/channel-gain jitter (p=0.6); smooth '
                'colour blotches sd <= 0.06 (p=0.3); pixel noise sd <= 0.06 '
                '(p=0.3)')


def train_indices(step: int, batch: int, seed: int) -> range:
    """Scene indices of training batch ``step``: disjoint from 0..999."""
    start = TRAIN_START + seed * 100_000_000 + step * batch
    return range(start, start + batch)


def render_tensors(indices: Sequence[int]) -> tuple[torch.Tensor,
                                                    torch.Tensor]:
    """Images float [N,3,64,64] in [-1,1] and labels int64 [N,64,64]."""
    images, labels = render_batch(indices)
    return images_to_tensor(images), torch.from_numpy(labels.astype(np.int64))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image [N,3,H,W] with its own sigma [N] (5-tap, separable)."""
    taps = torch.arange(-2, 3, dtype=images.dtype)
    k = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)  # [N*3, 5]
    n, c, h, w = images.shape
    x = F.pad(images.reshape(1, n * c, h, w), (2, 2, 2, 2), mode='replicate')
    x = F.conv2d(x, k[:, None, None, :], groups=n * c)
    x = F.conv2d(x, k[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mimic generated samples: blur, colour jitter, blotches and noise.

    images [N,3,H,W] in [-1,1]; each effect hits a random part of the batch.
    """
    n, _, h, w = images.shape

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=gen)

    def on(p: float) -> torch.Tensor:
        return (torch.rand(n, 1, 1, 1, generator=gen) < p).float()

    blurred = gaussian_blur(images, u(0.4, 1.5))
    x = images + on(0.6) * (blurred - images)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    gain = u(0.85, 1.15, 1, 1, 1) * u(0.94, 1.06, 3, 1, 1)
    jittered = (x - mean) * gain + mean + u(-0.1, 0.1, 1, 1, 1)
    x = x + on(0.6) * (jittered - x)
    blotches = torch.randn(n, 3, h // 8, w // 8, generator=gen)
    blotches = F.interpolate(blotches, size=(h, w), mode='bilinear',
                             align_corners=False)
    x = x + on(0.3) * blotches * u(0.0, 0.06, 1, 1, 1)
    noise = torch.randn(x.shape, generator=gen) * u(0.0, 0.06, 1, 1, 1)
    x = x + on(0.3) * noise
    return x.clamp(-1, 1)


def lr_at(step: int, iters: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, iters - warmup)
    return peak * 0.5 * (1 + np.cos(np.pi * t))


def train(iters: int, batch: int, seed: int, lr: float, width: int
          ) -> Segmenter:
    torch.manual_seed(seed)
    return fit(Segmenter(width), render_tensors, iters, batch, seed, lr)


def fit(model: Segmenter, render, iters: int, batch: int, seed: int, lr: float, warmup: int = 100,
        desc: str = 'train segmenter', mininterval: float = 5) -> Segmenter:
    """AdamW on the cross-entropy of augmented fresh renders (render(indices) -> images [N, 3, H, W],
    labels [N, H, W]), warm-up then cosine learning rate; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    bar = tqdm(range(iters), desc=desc, mininterval=mininterval)
    for step in bar:
        images, labels = render(train_indices(step, batch, seed))
        for group in opt.param_groups:
            group['lr'] = lr_at(step, iters, lr, warmup=warmup)
        loss = F.cross_entropy(model(augment(images, gen)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f'{loss.item():.4f}')
    return model.eval()


def atomic_write(path: Path, write) -> None:
    """Calls ``write(tmp_path)`` on a temp path beside `path`, then moves the result into place."""
    with atomic_path(path) as tmp:
        write(tmp)


def evaluate(model: Segmenter) -> dict:
    """Per-class IoU over held-out scenes 0..999, clean and blurred."""
    return iou_report(model, *render_tensors(EVAL_INDICES), CLASSES)


def iou_report(model: Segmenter, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict:
    """Per-class and mean IoU of `model` on images [N, 3, H, W] / labels [N, H, W], clean and blurred
    (sigma 0.8 px), rounded to 4 digits."""
    clean = evaluate_iou(model, images, labels)
    blurred = evaluate_iou(model, gaussian_blur(images, torch.full((len(images),), 0.8)), labels)

    def table(iou: torch.Tensor) -> dict[str, float]:
        return {c: round(float(v), 4) for c, v in zip(classes, iou, strict=True)}

    return {'per_class_iou': table(clean),
            'mean_iou': round(float(clean.mean()), 4),
            'blurred_sigma': 0.8,
            'blurred_per_class_iou': table(blurred),
            'blurred_mean_iou': round(float(blurred.mean()), 4)}


def card_markdown(info: dict) -> str:
    ev, tr, arch = info['eval'], info['training'], info['architecture']
    rows = '\n'.join(
        f'| {c} | {ev["per_class_iou"][c]:.4f} | '
        f'{ev["blurred_per_class_iou"][c]:.4f} |' for c in CLASSES)
    return f"""# Demo-world segmenter

Per-pixel labels for the procedural toy-church scenes of
`utils/demo/scenes.py` ({len(CLASSES)} classes: {', '.join(CLASSES)}).
Used to label and score images of the demo GAN; `features()` gives
{arch['feature_dim']}-d pooled features for a Frechet distance.

## Architecture
- {arch['description']}
- parameters: {arch['parameters']:,}; weights file: {arch['file_bytes']:,} bytes
- input: RGB [N,3,H,W] in [-1,1], H and W multiples of 8; output: logits [N,10,H,W]

## Training
- data: fresh renders every step, scene indices from {tr['first_index']:,}
  (never overlaps the held-out scenes 0..999)
- iterations: {tr['iters']}, batch: {tr['batch']}, seed: {tr['seed']}
- optimiser: AdamW, peak lr {tr['lr']}, weight decay 1e-4, 100-step warm-up,
  cosine decay; loss: per-pixel cross-entropy
- augmentation: {tr['augmentation']}
- wall time: {tr['wall_time_s']:.0f} s on {tr['threads']} CPU thread
  ({tr['machine']}, torch {tr['torch']})
- command: `{tr['command']}`

## Held-out evaluation
Scenes 0..999 at 64x64; IoU per class pooled over every pixel of the set.
The blurred column applies a Gaussian blur (sigma {ev['blurred_sigma']} px)
to the images first, as a proxy for soft generated samples.

| class | IoU | IoU (blurred) |
| --- | --- | --- |
{rows}
| **mean** | **{ev['mean_iou']:.4f}** | **{ev['blurred_mean_iou']:.4f}** |
"""


def describe_model(model: Segmenter, path: Path) -> dict:
    width = model.config['width']
    return {'description': f'4-level U-Net, widths {width}x(1,2,4,8), '
                           '2x(conv3x3+BN+ReLU) per level, max-pool down, '
                           'transposed-conv up, skip concatenation, 1x1 head',
            'parameters': sum(p.numel() for p in model.parameters()),
            'feature_dim': model.feature_dim,
            'file_bytes': path.stat().st_size}


def describe_training(args: argparse.Namespace, wall: float) -> dict:
    return {'iters': args.iters, 'batch': args.batch, 'seed': args.seed,
            'lr': args.lr,
            'first_index': train_indices(0, args.batch, args.seed).start,
            'augmentation': AUGMENTATION,
            'wall_time_s': round(wall, 1), 'threads': 1,
            'machine': platform.processor() or platform.machine(),
            'torch': torch.__version__,
            'command': 'python -m utils.demo.train_segmenter --out '
                       f'{args.out.as_posix()} --iters {args.iters} '
                       f'--batch {args.batch} --seed {args.seed} '
                       f'--lr {args.lr} --width {args.width}'}


def training_arguments(doc: str, out: Path, iters: int, batch: int, seed: int, lr: float
                       ) -> argparse.ArgumentParser:
    """The options both segmenter trainers take (--out, --iters, --batch, --seed, --lr), with their defaults."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument('--out', type=Path, default=out)
    ap.add_argument('--iters', type=int, default=iters)
    ap.add_argument('--batch', type=int, default=batch)
    ap.add_argument('--seed', type=int, default=seed)
    ap.add_argument('--lr', type=float, default=lr)
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    ap = training_arguments(__doc__, Path('utils/demo/weights/segmenter.pt'), iters=3000, batch=32, seed=0, lr=3e-3)
    ap.add_argument('--width', type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out.with_name('scenes_grid.png'), save_scene_grid)

    t0 = time.perf_counter()
    model = train(args.iters, args.batch, args.seed, args.lr, args.width)
    wall = time.perf_counter() - t0
    atomic_write(args.out, lambda p: save_segmenter(model, p))

    info = {'architecture': describe_model(model, args.out),
            'training': describe_training(args, wall),
            'eval': evaluate(model)}
    card = args.out.with_name(args.out.stem + '_card')
    atomic_write(card.with_suffix('.json'), lambda p: p.write_text(
        json.dumps(info, indent=2) + '\n'))
    atomic_write(card.with_suffix('.md'),
                 lambda p: p.write_text(card_markdown(info)))
    print(json.dumps(info['eval'], indent=2))


if __name__ == '__main__':
    main()
