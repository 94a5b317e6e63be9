"""A pure-PyTorch StyleGAN2 generator built from nested nn.Sequential steps (see model.py)."""

from .checkpoint import load_seq_stylegan, model_from_checkpoint, read_checkpoint, save_checkpoint
from .layers import DataBag
from .model import CheckpointMismatchError, SeqStyleGAN2, checkpoint_key
from .site import RewriteSite, TargetLayer, rewrite_site

__all__ = ['SeqStyleGAN2', 'DataBag', 'CheckpointMismatchError', 'checkpoint_key',
           'load_seq_stylegan', 'model_from_checkpoint', 'read_checkpoint', 'save_checkpoint',
           'RewriteSite', 'TargetLayer', 'rewrite_site']
