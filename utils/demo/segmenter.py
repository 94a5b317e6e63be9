"""A small U-Net that labels demo-world scenes pixel by pixel.

The shipped weights (``weights/segmenter.pt``) were trained by
``python -m utils.demo.train_segmenter``; ``weights/segmenter_card.md``
records how and how well.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from utils.demo.scenes import CLASS_ID, CLASSES, N_RULE_CLASSES, TOP_KINDS

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / 'weights' / 'segmenter.pt'


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU layers, same resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Segmenter(nn.Module):
    """Four-level U-Net: images [N,3,H,W] in [-1,1] -> logits [N,C,H,W].

    H and W must be multiples of 8. Channel widths are ``width * (1,2,4,8)``.
    """

    def __init__(self, width: int = 16, n_classes: int = len(CLASSES)
                 ) -> None:
        super().__init__()
        self.config = {'width': width, 'n_classes': n_classes}
        ch = [width * m for m in (1, 2, 4, 8)]
        self.enc = nn.ModuleList([_block(3, ch[0])] + [
            _block(a, b) for a, b in itertools.pairwise(ch)])
        self.up = nn.ModuleList([
            nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in
            itertools.pairwise(ch)])
        self.dec = nn.ModuleList([_block(2 * a, a) for a in ch[:-1]])
        self.head = nn.Conv2d(ch[0], n_classes, 1)
        self.pool = nn.MaxPool2d(2)

    @property
    def feature_dim(self) -> int:
        return sum(self.config['width'] * m for m in (4, 8))

    def _encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        skips, x = [], images
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        return skips

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N,3,H,W] in [-1,1] -> logits [N,n_classes,H,W]."""
        skips = self._encode(images)
        x = skips[-1]
        for i in reversed(range(len(self.dec))):
            x = self.dec[i](torch.cat([skips[i], self.up[i](x)], dim=1))
        return self.head(x)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled deep features for a Frechet distance: [N,3,H,W] -> [N,D].

        D = 12 * width (192 for the shipped model): global means of the two
        deepest encoder levels.
        """
        skips = self._encode(images)
        return torch.cat([s.mean(dim=(2, 3)) for s in skips[-2:]], dim=1)

    @torch.no_grad()
    def segment(self, images: torch.Tensor, batch_size: int = 64,
                vote: bool = False) -> torch.Tensor:
        """Labels of images [N,3,H,W] in [-1,1] -> int64 [N,H,W].

        Per-pixel argmax; with ``vote``, each tower top then takes one kind
        (``vote_tops``).
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [self(chunk.to(device)).argmax(dim=1).to(images.device)
               for chunk in images.split(batch_size)]
        self.train(was_training)
        labels = torch.cat(out)
        return vote_tops(labels) if vote else labels


def vote_tops(labels: torch.Tensor) -> torch.Tensor:
    """Give every tower top a single kind, the one most of its pixels have.

    In the demo world each tower has one top (dome, spire or flat top), but
    on soft generated images the per-pixel labels of one top often mix
    kinds (blurred crenellations read partly as dome). Each 8-connected
    region of top pixels is relabelled with its majority kind (ties: the
    first in ``TOP_KINDS``); other pixels are unchanged.

    labels: integer [..., H, W] -> a new tensor of the same shape and dtype.
    """
    top_ids = np.array([CLASS_ID[k] for k in TOP_KINDS])
    kind_of = np.full(max(len(CLASSES), N_RULE_CLASSES), -1)  # also for 'glow'-family labels
    kind_of[top_ids] = np.arange(len(top_ids))
    maps = labels.detach().cpu().numpy()
    stack = maps.reshape(-1, *maps.shape[-2:])
    is_top = kind_of[stack] >= 0
    within_a_map = np.zeros((3, 3, 3), dtype=bool)
    within_a_map[1] = True                             # 8-connected in each map, never across maps
    region, n = ndimage.label(is_top, structure=within_a_map)
    r = region[is_top]
    votes = np.bincount(r * len(top_ids) + kind_of[stack[is_top]],
                        minlength=(n + 1) * len(top_ids))
    winner = top_ids[votes.reshape(n + 1, len(top_ids)).argmax(1)]
    voted = stack.copy()
    voted[is_top] = winner[r]
    return torch.from_numpy(voted.reshape(maps.shape)).to(labels.device)


def load_segmenter(path: str | Path | None = None,
                   device: str | torch.device = 'cpu') -> Segmenter:
    """Load a trained segmenter (default: the shipped weights), in eval mode."""
    blob = torch.load(path or DEFAULT_WEIGHTS, map_location=device,
                      weights_only=True)
    model = Segmenter(**blob['config'])
    model.load_state_dict(blob['state_dict'])
    return model.to(device).eval()


def save_segmenter(model: Segmenter, path: str | Path, classes: tuple[str, ...] = CLASSES) -> None:
    """Save weights and config in the format ``load_segmenter`` reads (``classes``: the label names)."""
    if len(classes) != model.config['n_classes']:
        raise ValueError(f'classes: expected {model.config["n_classes"]} names, got {len(classes)}')
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({'config': dict(model.config), 'classes': list(classes),
                'state_dict': state}, path)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor,
                     n_classes: int = len(CLASSES)) -> torch.Tensor:
    """Counts [C,C] (row: true class, column: predicted) over all pixels."""
    idx = target.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU [C] pooled over every pixel that went into ``conf``."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    return tp / union.clamp(min=1)


def evaluate_iou(model: Segmenter, images: torch.Tensor,
                 labels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Per-class IoU [C] of ``model`` on images [N,3,H,W] vs labels [N,H,W]."""
    pred = model.segment(images, batch_size)
    return iou_from_confusion(confusion_matrix(pred, labels,
                                               model.config['n_classes']))
