"""Shared pieces of the demo-world metrics: the checkpoint snapshot, sampling and segmenting, regions,
the edit measures and edit files (machine info, JSON and tables: metrics/report.py).

The measures themselves (regions, effectiveness, change outside, ...) are defined in
`utils/demo/measures.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metrics.report import ROOT, pct, rel
from rewrite.formats import editfile
from utils import imgviz
from utils.demo import Segmenter
from utils.demo.measures import Samples
from utils.generators import sampling_at
from utils.stylegan2 import SeqStyleGAN2
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT, model_from_checkpoint

RESULTS = ROOT / 'metrics' / 'results'
EDIT_DIR = ROOT / 'notebooks' / 'masks' / 'demo'
WEIGHTS = DEMO_CHECKPOINT.parent

EDIT_TRUNCATION = 0.5               # the rewriting tool's default (python -m rewrite, the notebook)
ZSAMPLE = 1000                      # the z-sample that image numbers of edit files index (seed 1)
EVAL_SEED = 2                       # z's for scoring edits: held out from the edit's z-sample (seed 1)
SELECTION_SEED = 3                  # z's on which make_demo_edits picks each edit's layer and rank: apart from
                                    # the scoring z's, so the reported figures are not the ones it chose by
EVAL_TRUNCATION = 1.0               # edits are scored on the model's full distribution (as the data's rates)


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

def generate(model: torch.nn.Module, z: torch.Tensor, batch: int = 32, desc: str | None = None) -> torch.Tensor:
    """model(z) in batches, clamped to [-1, 1]."""
    out = []
    with torch.no_grad():
        for chunk in tqdm(z.split(batch), desc=desc, disable=desc is None, leave=False):
            out.append(model(chunk).clamp(-1, 1))
    return torch.cat(out)


def sample(model: SeqStyleGAN2, z: torch.Tensor, segmenter: Segmenter, batch: int = 32,
           desc: str | None = None, truncation: float | None = None) -> Samples:
    """Images of model(z) (at `truncation` when given, else the model's own) and their labels."""
    with sampling_at(model, truncation):
        images = generate(model, z, batch, desc)
    return Samples(images, segmenter.segment(images, vote=True))


def tile(images: np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 grid image on white, `pad` pixels between tiles."""
    return imgviz.tile(images, cols=cols, pad=pad, background=255)


# ---------------------------------------------------------------------------------------------------
# edit files
# ---------------------------------------------------------------------------------------------------

def edit_setting(path: Path) -> tuple[int, int]:
    """(layer N, rank R) an edit file records (its `layer` and `rank` fields), else its name NAME_layerN.json
    (rank 1) or NAME_layerN_rankR.json."""
    recorded = editfile.load_edit(path).setting() if Path(path).is_file() else {}
    layer, rank = editfile.setting_from_name(path)
    layer, rank = recorded.get('layer', layer), recorded.get('rank', rank)
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
