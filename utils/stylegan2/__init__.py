"""A pure-PyTorch StyleGAN2 generator built from nested nn.Sequential steps (see model.py)."""

from utils.generators.families import register_family
from utils.generators.site import DataBag

from .checkpoint import load_seq_stylegan, model_from_checkpoint, read_checkpoint, save_checkpoint
from .model import CheckpointMismatchError, SeqStyleGAN2, checkpoint_key
from .site import RewriteSite, TargetLayer, rewrite_site

__all__ = ['SeqStyleGAN2', 'DataBag', 'CheckpointMismatchError', 'checkpoint_key',
           'load_seq_stylegan', 'model_from_checkpoint', 'read_checkpoint', 'save_checkpoint',
           'RewriteSite', 'TargetLayer', 'rewrite_site']


def _load(spec, truncation: float) -> SeqStyleGAN2:
    return load_seq_stylegan(spec, truncation=truncation)


register_family('stylegan2', None, SeqStyleGAN2, load=_load, save=save_checkpoint)
