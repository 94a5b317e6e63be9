"""A one-shot segmenter of an edit request's regions, distilled from the generator's own features.

    seg = RequestSegmenter.build(model, z_all, request)        # request: an editfile.EditRequest
    seg.kinds                                   # ('source', 'object', 'other'), or ('source', 'other') for an erase
    probs = seg.probabilities(images)           # float [N, K, r, r], r = seg.resolution
    labels = seg.labels(images)                 # long [N, r, r]: indices into seg.kinds

The advisor needs to know, with no labels, whether an edited image still shows what the request erases or
now shows the object it pastes, at any layer's setting. The request's own masks are the only labels there
are: a few painted images. They are spread to many samples the way "Repurposing GANs for one-shot semantic
part segmentation" (Tritrong, Rewatbowornwong and Suwajanakorn, CVPR 2021) spreads one annotation:

1. hypercolumns: the generator's feature maps, one layer per resolution from 8 x 8 up to `resolution`
   (each pixel's channel vector scaled to unit length, resized bilinearly to r x r, concatenated).
2. a linear classifier (softmax regression, balanced classes, L2, L-BFGS) of the request's own images'
   pixels in that space: 'source' (the paste and context masks, less the object's), 'object' (the copied
   object's mask; an edit only), 'other' (outside every mask grown by one pixel). Painted masks are
   coarse (a window's mask holds wall too), so `refine` times the masks' pixels the classifier puts with
   'other' rather than their own kind are dropped and it is fit again.
3. pseudo-labels: `samples` generated images (half from the z-sample at the model's truncation, half from
   fresh z's at `truncation`), each pixel labelled by that classifier where it is at least `confidence`
   sure (the rest ignored).
4. a small convolutional net trained on (image, pseudo-label) pairs. It reads images only, so it labels
   the output of every edited model in the same space, whichever layer an edit changed; its receptive
   field (about 40 pixels at r = 64) sees an object's shape, not only its colour. An edit puts objects where
   the samples never have them (a tree on a tower): with `paste_share` > 0 that share of each batch gets
   another sample's source and object pixels (grown by one) pasted at a random shift of up to `paste_shift`
   pixels, labels too ("copy-paste" augmentation), so that the net cannot rely on the context alone.

Deterministic: the samples, the net's initial weights and its batches come from fixed seeds (the global
random state is left as it was); results differ across CPUs in the last bits of float32 only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rewrite.analysis.advise_measures import request_masks
from rewrite.formats import editfile
from utils.generators import rewrite_site, sampling_at
from utils.masks import dilate
from utils.nethook import TraceDict

__all__ = ['SegmenterOptions', 'RequestSegmenter', 'hypercolumn_layers', 'fit_softmax_regression']

SEGMENT_SEED = 23           # the fresh z's of the pseudo-labelled samples: apart from the z-sample and held-out


@dataclass(frozen=True)
class SegmenterOptions:
    """resolution: r, where the segmenter labels pixels (images larger than r are area-averaged to r).
    samples: generated images pseudo-labelled to train the net. confidence: the classifier's least
    probability for a pseudo-label. refine: rounds of dropping mask pixels that look like 'other'.
    weight_decay: the classifier's L2 weight. steps, batch, learning_rate, width: the net's training
    (Adam) and its width. paste_share, paste_shift: copy-paste augmentation (0: none). seed: the fresh z's
    and the net's initial weights and batches."""

    resolution: int = 64
    samples: int = 512
    confidence: float = 0.7
    refine: int = 2
    weight_decay: float = 1e-3
    steps: int = 300
    batch: int = 32
    learning_rate: float = 3e-3
    width: int = 24
    paste_share: float = 0.0
    paste_shift: int = 20
    seed: int = SEGMENT_SEED


def hypercolumn_layers(model, resolution: int) -> list[str]:
    """Module names whose outputs (`.fmap` [N, C, h, w]) make the hypercolumns: of the generator's styled
    layers, the last one at each feature resolution from 8 up to `resolution`."""
    last = {}
    for layer in model.layer_numbers:
        site = rewrite_site(model, layer)
        size = site.value_shape[1]
        if 8 <= size <= resolution:
            last[size] = site.target_end
    if not last:
        raise ValueError(f'no layer of this generator has feature maps between 8 and {resolution} pixels')
    return [last[s] for s in sorted(last)]


def fit_softmax_regression(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float,
                           iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [D, K], b [K]) minimising the class-balanced cross entropy of softmax(x W + b) against y plus
    weight_decay ||W||^2 (L-BFGS, strong Wolfe line search, from zeros: deterministic). x: float [M, D],
    y: long [M] in 0..K-1; a class without rows gets no weight."""
    x = x.float()
    counts = torch.bincount(y, minlength=classes).float()
    balance = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros(()))
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y, weight=balance) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


class SegmenterNet(nn.Module):
    """Images [N, 3, r, r] in [-1, 1] -> logits [N, K, r, r]: a full-resolution branch (two 3x3 convs) and
    a half-resolution one (a stride-2 conv, then 3x3 convs dilated 1, 2, 4, 1), joined by a 1x1 head."""

    def __init__(self, classes: int, width: int = 24, fine: int = 16):
        super().__init__()
        self.fine = nn.Sequential(nn.Conv2d(3, fine, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(fine, fine, 3, padding=1), nn.ReLU())
        self.coarse = nn.Sequential(
            nn.Conv2d(fine, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width + fine, classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fine = self.fine(images)
        coarse = F.interpolate(self.coarse(fine), size=fine.shape[-2:], mode='bilinear', align_corners=False)
        return self.head(torch.cat([fine, coarse], 1))


@dataclass
class RequestSegmenter:
    """kinds: the labels ('source', 'object', 'other' or, for an erase, 'source', 'other'); net: the trained
    SegmenterNet; resolution: r. pseudo_share: {kind: share of the pseudo-labelled pixels given it}."""

    kinds: tuple[str, ...]
    net: SegmenterNet
    resolution: int
    pseudo_share: dict = field(default_factory=dict)

    @classmethod
    def build(cls, model, z_all: torch.Tensor, req: editfile.EditRequest, truncation: float | None = None,
              options: SegmenterOptions = SegmenterOptions(), batch: int = 16) -> RequestSegmenter:
        """model: the unedited generator (not changed); z_all: the z-sample [Z, D] the request's image numbers
        index; truncation: the fresh samples' (None: the model's own)."""
        device = next(model.parameters()).device
        r = options.resolution
        layers = hypercolumn_layers(model, r)
        imgnums = sorted({s.imgnum for s in (req.paste, *req.context, *([req.object] if req.object else []))})
        masks = request_masks(req, imgnums, r)
        kinds = tuple(masks)

        def columns(z: torch.Tensor, trunc: float | None) -> tuple[torch.Tensor, torch.Tensor]:
            """images [n, 3, r, r] and hypercolumns [n, D, r, r] of z [n, Dz]."""
            with torch.no_grad(), sampling_at(model, trunc), TraceDict(model, layers, detach=True) as traces:
                images = model(z.to(device))
                cols = [F.interpolate(F.normalize(traces[name].output.fmap.float(), dim=1), size=(r, r),
                                      mode='bilinear', align_corners=False) for name in layers]
            return downsample(images, r).cpu(), torch.cat(cols, 1).cpu()

        _, cols = columns(z_all[imgnums], None)
        x = torch.cat([cols.permute(0, 2, 3, 1)[masks[k]] for k in kinds])
        y = torch.cat([torch.full((int(masks[k].sum()),), i) for i, k in enumerate(kinds)])
        other = kinds.index('other')
        w, b = fit_softmax_regression(x, y, len(kinds), options.weight_decay)
        for _ in range(options.refine):
            p = torch.softmax(x @ w + b, 1)
            keep = (y == other) | (p.gather(1, y[:, None])[:, 0] >= p[:, other])
            w, b = fit_softmax_regression(x[keep], y[keep], len(kinds), options.weight_decay)

        half = options.samples // 2
        fresh = torch.randn(options.samples - half, z_all.shape[1],
                            generator=torch.Generator().manual_seed(options.seed))
        images, labels = [], []
        for zs, trunc in ((z_all[:half], None), (fresh, truncation)):
            for chunk in zs.split(batch):
                img, col = columns(chunk, trunc)
                p = torch.softmax(torch.einsum('ndhw,dk->nkhw', col, w) + b[:, None, None], 1)
                sure, label = p.max(1)
                label[sure < options.confidence] = -1
                images.append(img)
                labels.append(label)
        images, labels = torch.cat(images), torch.cat(labels)
        counts = torch.stack([(labels == i).sum() for i in range(len(kinds))]).float()
        share = {k: float(counts[i] / labels.numel()) for i, k in enumerate(kinds)}

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            net = SegmenterNet(len(kinds), options.width)
        order = torch.Generator().manual_seed(options.seed)
        balance = torch.where(counts > 0, counts.sum() / (len(kinds) * counts.clamp(min=1)), torch.zeros(()))
        opt = torch.optim.Adam(net.parameters(), lr=options.learning_rate)
        with torch.enable_grad():
            for _ in range(options.steps):
                pick = torch.randint(len(images), (options.batch,), generator=order)
                x, y = copy_paste(images, labels, pick, [i for i, k in enumerate(kinds) if k != 'other'],
                                  options.paste_share, options.paste_shift, order)
                loss = F.cross_entropy(net(x), y, weight=balance, ignore_index=-1)
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval().requires_grad_(False)
        return cls(kinds=kinds, net=net, resolution=r, pseudo_share=share)

    def probabilities(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """float [N, K, r, r]: each pixel's probability of each kind; images [N, 3, H, W] in [-1, 1]."""
        with torch.no_grad():
            return torch.cat([torch.softmax(self.net(downsample(chunk.float().cpu(), self.resolution)), 1)
                              for chunk in images.split(batch)])

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """long [N, r, r]: each pixel's most likely kind (an index into kinds)."""
        return self.probabilities(images).argmax(1)


def copy_paste(images: torch.Tensor, labels: torch.Tensor, pick: torch.Tensor, kinds: Sequence[int], share: float,
               shift: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch images[pick] [B, 3, r, r], labels[pick] [B, r, r], with round(share * B) of them given another
    sample's pixels labelled one of `kinds` (grown by one pixel), rolled by a random shift in
    [-shift, shift]^2, pasted over them (labels too)."""
    x, y = images[pick].clone(), labels[pick].clone()
    n = round(share * len(pick))
    if n == 0:
        return x, y
    donors = torch.randint(len(images), (n,), generator=generator)
    shifts = torch.randint(-shift, shift + 1, (n, 2), generator=generator)
    for j in range(n):
        d, dy, dx = int(donors[j]), int(shifts[j, 0]), int(shifts[j, 1])
        mask = torch.roll(dilate(torch.isin(labels[d], torch.tensor(list(kinds)))[None], 1)[0], (dy, dx), (0, 1))
        x[j] = torch.where(mask[None], torch.roll(images[d], (dy, dx), (1, 2)), x[j])
        y[j] = torch.where(mask, torch.roll(labels[d], (dy, dx), (0, 1)), y[j])
    return x, y


def downsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """images [N, 3, H, W] clamped to [-1, 1], area-averaged to at most resolution x resolution."""
    images = images.clamp(-1, 1).float()
    return images if images.shape[-1] <= resolution else F.adaptive_avg_pool2d(images, resolution)
