"""A pure-PyTorch StyleGAN2 generator built from nested nn.Sequential steps (see model.py).

`SeqStyleGAN2(size, style_dim=512, n_mlp=8, channel_multiplier=2, truncation=1.0, mconv='seq', channels=None,
noise_mode='const')`
is a pure-PyTorch StyleGAN2 built from nested `nn.Sequential` steps passing a `DataBag` (latent,
style, feature map, RGB skip output, noise). `layer2` is the 4x4 conv; at resolution 2^r,
`layer{2r-3}` upsamples and `layer{2r-2}` is the second conv (size 256: layers 2..14, layer 8 is the
second 32x32 conv). In each, `layerN.sconv.mconv` is `modulation -> adain -> dconv [-> blur]`, and
`layerN.sconv.mconv.dconv.weight` is the plain convolution weight the rewriter edits (demodulation is
computed from that weight and the style). `mconv='fused'` computes the same images with the
original per-sample grouped convolution. Weights load from and save to the widely used
`{'g_ema', 'latent_avg'}` checkpoint layout for any size, channel multiplier or custom widths; a
mismatch raises `CheckpointMismatchError` naming every missing, unexpected, mis-shaped or non-finite
key and leaves the model unchanged. All loading uses `torch.load(..., weights_only=True)`.
`load_seq_stylegan(name)` downloads the original release's checkpoints (church, faces, horse,
kitchen, bedroom, car, cat, places) to the torch hub cache when the network allows; offline it says
which file to put where.

`utils/nethook.py` cuts nested Sequentials (`subsequence(model, after_layer='layer8.sconv.mconv.adain')`)
and traces or edits any named layer (`Trace`, `TraceDict`).


(`utils/stylegan2/ada_pickle.py`: `G_ema`, `conv_clamp` kept, fp16 layers computed in float32; conditional,
StyleGAN3,
`resnet`/`orig` and TensorFlow-era pickles get a clear error; a `G_ema` that is present but damaged is an error, `G`
is used, with a warning, only when there is no `G_ema` at all; every hyper-parameter is checked by name, and sizes
and nesting are bounded by what the file holds before anything is allocated. Images match NVlabs' own within 2e-6,
`tests/test_ada_pickle.py`.)
"""

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
