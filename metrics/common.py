"""Shared pieces of the demo-world metrics: the checkpoint snapshot, sampling and segmenting, regions,
the edit measures and edit files (machine info, JSON and tables: metrics/report.py).

Definitions used by every script (label maps come from the demo segmenter, 64x64 px, with each tower
top voted to a single kind: `utils.demo.segmenter.vote_tops`):

- present: a class covers at least MIN_PIXELS pixels of a label map (as `utils.demo.presence`).
- dilate(mask, r): square (Chebyshev) dilation by r pixels: a pixel joins when any pixel within r rows
  and r columns of it is in the mask.
- tower(labels): the tower tops (dome, spire and flattop pixels) plus the tower body column below them:
  in every column, going down from a top pixel, every following pixel labelled as a top or as building,
  window or door, up to the first pixel of another class (sky, ground, tree, watermark).
- edit region of a replacement (e.g. dome -> spire): dilate(tower(before) | tower(after), r); of an
  erase: dilate(class(before) | class(after), r).
- replaced (per sample that had the source class before): at least MIN_PIXELS pixels that are the
  target class after the edit, were not the target class before, and lie within dilate(source(before), r).
- effectiveness: replaced samples / samples that had the source class.
- collateral (of a replacement, e.g. dome -> spire): among samples with another tower top kind (flat top)
  and no source class before, the share where that kind's region now shows the target class; a specific
  edit keeps it near 0.
- mean absolute change outside: the mean of |after - before| over the three channels of every pixel
  outside the edit region, pooled over all samples, images in [-1, 1].
- feature change outside: the edited image with the unedited pixels put back inside the edit region
  (so only the outside differs), its segmenter features' L2 distance to the unedited image's,
  relative to the latter's norm; the mean over samples.
- label change outside: the share of pixels outside the edit region whose segmenter label changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import LinAlgWarning
from tqdm.auto import tqdm

from metrics.report import ROOT, pct, rel
from rewrite import editfile
from utils import imgviz
from utils.demo import CLASSES, Segmenter, frechet_distance
from utils.stylegan2 import SeqStyleGAN2
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT, model_from_checkpoint

RESULTS = ROOT / 'metrics' / 'results'
EDIT_DIR = ROOT / 'notebooks' / 'masks' / 'demo'
WEIGHTS = DEMO_CHECKPOINT.parent

MIN_PIXELS = 4                      # as utils.demo.presence
TOPS = ('dome', 'spire', 'flattop')
TOWER_BODY = ('building', 'window', 'door')
EDIT_TRUNCATION = 0.5               # the rewriting tool's default (python -m rewrite, the notebook)
ZSAMPLE = 1000                      # the z-sample that image numbers of edit files index (seed 1)
EVAL_SEED = 2                       # z's for scoring edits: held out from the edit's z-sample (seed 1)
SELECTION_SEED = 3                  # z's on which make_demo_edits picks each edit's layer and rank: apart from
                                    # the scoring z's, so the reported figures are not the ones it chose by
EVAL_TRUNCATION = 1.0               # edits are scored on the model's full distribution (as the data's rates)
REGION_RADIUS = 3


# ---------------------------------------------------------------------------------------------------
# setup and the checkpoint snapshot
# ---------------------------------------------------------------------------------------------------

def add_snapshot_args(parser, out_dir: Path, out_help: str = 'where the results go') -> None:
    """The options every demo-world script shares: batch, threads, edit freshness, checkpoint, output."""
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--keep-edits', action='store_true', help='do not remake stale bundled edits (only warn)')
    parser.add_argument('--checkpoint', type=Path, default=DEMO_CHECKPOINT, help='generator (default: the demo model)')
    parser.add_argument('--out-dir', type=Path, default=out_dir, help=out_help)


def setup_torch(threads: int = 1, seed: int = 0) -> None:
    """One thread (the CPU is shared) and a fixed seed."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


@dataclass(frozen=True)
class Snapshot:
    """One read of a generator checkpoint (the demo file is overwritten while training goes on, so
    everything in a run is built from this single read)."""

    path: Path
    sha256: str
    ckpt: dict

    @property
    def train_info(self) -> dict:
        """The trainer's record (iterations, wall_seconds, config); {} when the file has none."""
        info = self.ckpt.get('train_info')
        return json.loads(info) if isinstance(info, str) else dict(info or {})

    def model(self, truncation: float = 1.0) -> SeqStyleGAN2:
        return model_from_checkpoint({'g_ema': self.ckpt['g_ema'], 'latent_avg': self.ckpt.get('latent_avg')},
                                     truncation=truncation)

    def describe(self) -> dict:
        info = self.train_info
        return {'file': rel(self.path), 'sha256': self.sha256, 'iterations': info.get('iterations'),
                'wall_seconds': info.get('wall_seconds')}


def load_snapshot(path: str | os.PathLike = DEMO_CHECKPOINT) -> Snapshot:
    path = Path(path)
    data = path.read_bytes()
    ckpt = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    return Snapshot(path, hashlib.sha256(data).hexdigest()[:16], ckpt)


# ---------------------------------------------------------------------------------------------------
# sampling and segmenting
# ---------------------------------------------------------------------------------------------------

@dataclass
class Samples:
    """Images [N, 3, H, W] in [-1, 1] and their segmenter labels [N, H, W] (int64)."""

    images: torch.Tensor
    labels: torch.Tensor


def generate(model: torch.nn.Module, z: torch.Tensor, batch: int = 32, desc: str | None = None) -> torch.Tensor:
    """model(z) in batches, clamped to [-1, 1]."""
    out = []
    with torch.no_grad():
        for chunk in tqdm(z.split(batch), desc=desc, disable=desc is None, leave=False):
            out.append(model(chunk).clamp(-1, 1))
    return torch.cat(out)


@contextlib.contextmanager
def at_truncation(model: SeqStyleGAN2, truncation: float) -> Iterator[SeqStyleGAN2]:
    """Within the block, `model` samples at `truncation` (e.g. an edited model made at another)."""
    saved = model.truncation
    model.truncation = truncation
    try:
        yield model
    finally:
        model.truncation = saved


def sample(model: SeqStyleGAN2, z: torch.Tensor, segmenter: Segmenter, batch: int = 32,
           desc: str | None = None, truncation: float | None = None) -> Samples:
    """Images of model(z) (at `truncation` when given, else the model's own) and their labels."""
    with at_truncation(model, model.truncation if truncation is None else truncation):
        images = generate(model, z, batch, desc)
    return Samples(images, segmenter.segment(images, vote=True))


def segmenter_features(segmenter: Segmenter, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([segmenter.features(chunk) for chunk in images.split(batch)])


def tile(images: np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 grid image on white, `pad` pixels between tiles."""
    return imgviz.tile(images, cols=cols, pad=pad, background=255)


# ---------------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------------

def class_ids(names: Iterable[str]) -> list[int]:
    return [CLASSES.index(n) for n in names]


def class_mask(labels: torch.Tensor, names: Iterable[str]) -> torch.Tensor:
    """bool, same shape as labels: pixels labelled as any of `names`."""
    return torch.isin(labels, torch.tensor(class_ids(names), device=labels.device))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of a bool [H, W] or [N, H, W] mask by `radius` pixels."""
    if radius <= 0:
        return mask.clone()
    x = mask.float().reshape(-1, 1, *mask.shape[-2:])
    return (F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) > 0).reshape(mask.shape)


def tower(labels: torch.Tensor) -> torch.Tensor:
    """Tower tops plus the body column below them (see the module docstring); bool like labels."""
    tops = class_mask(labels, TOPS)
    body = class_mask(labels, TOPS + TOWER_BODY)
    rows, carry = [], torch.zeros_like(tops[..., 0, :])
    for y in range(labels.shape[-2]):
        carry = tops[..., y, :] | (carry & body[..., y, :])
        rows.append(carry)
    return torch.stack(rows, dim=-2)


# ---------------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------------

def presence_rates(labels: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Share of label maps in which each class is present (>= MIN_PIXELS pixels)."""
    return {n: float(present(labels, (n,)).float().mean()) for n in names}


def present(labels: torch.Tensor, names: Iterable[str]) -> torch.Tensor:
    """bool [N]: any of `names` covers at least MIN_PIXELS pixels of each map."""
    return class_mask(labels, names).flatten(1).sum(1) >= MIN_PIXELS


def replaced(before: torch.Tensor, after: torch.Tensor, src: Sequence[str], dst: str,
             radius: int = REGION_RADIUS) -> torch.Tensor:
    """bool [N]: the target class `dst` newly appears (>= MIN_PIXELS pixels) where the source was."""
    near_src = dilate(class_mask(before, src), radius)
    new_dst = class_mask(after, (dst,)) & ~class_mask(before, (dst,))
    return (new_dst & near_src).flatten(1).sum(1) >= MIN_PIXELS


def effectiveness(before: torch.Tensor, after: torch.Tensor, src: Sequence[str], dst: str,
                  radius: int = REGION_RADIUS) -> tuple[float, int]:
    """(share of maps with the source present whose source region now shows dst, that number of maps)."""
    had = present(before, src)
    n = int(had.sum())
    hits = replaced(before, after, src, dst, radius) & had
    return (float(hits.sum()) / n if n else float('nan')), n


def mean_abs_change_outside(before: torch.Tensor, after: torch.Tensor, region: torch.Tensor) -> float:
    """Mean |after - before| over the channels of every pixel outside `region` (bool [N, H, W])."""
    outside = (~region).unsqueeze(1).float()
    count = outside.sum() * before.shape[1]
    return float(((after - before).abs() * outside).sum() / count) if count else float('nan')


def label_change_outside(before: torch.Tensor, after: torch.Tensor, region: torch.Tensor) -> float:
    outside = ~region
    return float((before != after)[outside].float().mean()) if outside.any() else float('nan')


def feature_change_outside(segmenter: Segmenter, before: torch.Tensor, after: torch.Tensor,
                           region: torch.Tensor) -> float:
    """Mean relative L2 change of the segmenter features when only the outside of `region` is edited."""
    outside_only = torch.where(region.unsqueeze(1), before, after)
    f0, f1 = segmenter_features(segmenter, before), segmenter_features(segmenter, outside_only)
    return float(((f1 - f0).norm(dim=1) / f0.norm(dim=1).clamp(min=1e-12)).mean())


def frechet(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance of two feature sets; fewer samples than feature dimensions give singular
    covariances (scipy warns; the value is still defined), so that warning is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', LinAlgWarning)
        return frechet_distance(feats_a, feats_b)


def preservation(segmenter: Segmenter, before: Samples, after: Samples, region: torch.Tensor) -> dict:
    """How much the edit changed outside `region`, and the Frechet distance to the unedited samples."""
    return {
        'mean_abs_change_outside': mean_abs_change_outside(before.images, after.images, region),
        'feature_change_outside': feature_change_outside(segmenter, before.images, after.images, region),
        'label_change_outside': label_change_outside(before.labels, after.labels, region),
        'frechet_to_unedited': frechet(segmenter_features(segmenter, after.images),
                                                segmenter_features(segmenter, before.images)),
    }


def collateral(before: torch.Tensor, after: torch.Tensor, src: Sequence[str], others: Sequence[str], dst: str,
               radius: int = REGION_RADIUS) -> tuple[float, int]:
    """(share of maps with `others` but no source present whose `others` region now shows dst, that number)."""
    bystanders = present(before, others) & ~present(before, src)
    n = int(bystanders.sum())
    hits = replaced(before, after, others, dst, radius) & bystanders
    return (float(hits.sum()) / n if n else float('nan')), n


def replacement_scores(segmenter: Segmenter, before: Samples, after: Samples, src: Sequence[str], dst: str,
                       radius: int = REGION_RADIUS, others: Sequence[str] = ()) -> dict:
    """Scores of an edit that should turn `src` into `dst` (region: the towers, before or after); with
    `others` (classes the edit should leave alone), also its collateral rate on them."""
    eff, n_src = effectiveness(before.labels, after.labels, src, dst, radius)
    region = dilate(tower(before.labels) | tower(after.labels), radius)
    scores = {'n': len(before.labels), 'n_with_source': n_src, 'effectiveness': eff}
    if others:
        scores['collateral'], scores['n_bystanders'] = collateral(before.labels, after.labels, src, others, dst,
                                                                  radius)
    return scores | preservation(segmenter, before, after, region)


def erase_scores(segmenter: Segmenter, before: Samples, after: Samples, name: str,
                 radius: int = REGION_RADIUS) -> dict:
    """Scores of an edit that should remove class `name` (region: that class, before or after)."""
    had, has = present(before.labels, (name,)), present(after.labels, (name,))
    region = dilate(class_mask(before.labels, (name,)) | class_mask(after.labels, (name,)), radius)
    n_had = int(had.sum())
    return {'n': len(before.labels), 'n_with_source': n_had, 'rate_before': float(had.float().mean()),
            'rate_after': float(has.float().mean()),
            'effectiveness': float((had & ~has).sum()) / n_had if n_had else float('nan'),
            **preservation(segmenter, before, after, region)}


# ---------------------------------------------------------------------------------------------------
# edit files
# ---------------------------------------------------------------------------------------------------

def edit_setting(path: Path) -> tuple[int, int]:
    """(layer N, rank R) of an edit file named NAME_layerN.json (rank 1) or NAME_layerN_rankR.json."""
    layer, rank = editfile.setting_from_name(path)
    if layer is None:
        raise ValueError(f'{path}: the file name does not say its layer (expected NAME_layerN[_rankR].json)')
    return layer, rank


def bundled_request(name: str, folder: Path = EDIT_DIR) -> tuple[Path, int, int, dict]:
    """(file, layer, rank, request) of the bundled edit NAME_layerN[_rankR].json in `folder`."""
    path = bundled_edit(name, folder)
    return (path, *edit_setting(path), json.loads(path.read_text()))


def bundled_edit(name: str, folder: Path = EDIT_DIR) -> Path:
    """The one file NAME_layerN[_rankR].json in `folder`."""
    found = sorted(folder.glob(f'{name}_layer*.json'))
    if len(found) != 1:
        raise FileNotFoundError(f'expected one {name}_layerN.json in {folder}, found {[p.name for p in found]} '
                                '(run python -m metrics.make_demo_edits)')
    return found[0]


# ---------------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------------

def collateral_text(scores: dict) -> str:
    """'86.5% (355)': the collateral rate (the samples it is over); 'n/a' for scores without one."""
    return f'{pct(scores["collateral"])} ({scores["n_bystanders"]})' if 'collateral' in scores else 'n/a'
