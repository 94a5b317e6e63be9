"""Reaching into networks: cutting nested Sequentials into pieces, and tracing named layers.

    piece = subsequence(model, after_layer='layer8.sconv.mconv.adain', upto_layer='layer9')
    with Trace(model, 'layer8.sconv.mconv.adain') as tr:
        model(z)
    keys = tr.output.fmap
"""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

__all__ = ['get_module', 'StopForward', 'subsequence', 'Trace', 'TraceDict']


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path `name` (e.g. 'layer8.sconv.mconv.dconv')."""
    module = model
    for part in name.split('.'):
        if part not in module._modules:
            raise ValueError(f'no layer {name!r}: {part!r} is not among '
                             f'{list(module._modules)[:16]}')
        module = module._modules[part]
    return module


def subsequence(sequential: nn.Sequential, first_layer: str | None = None,
                last_layer: str | None = None, after_layer: str | None = None,
                upto_layer: str | None = None, single_layer: str | None = None,
                share_weights: bool = False) -> nn.Sequential:
    """The consecutive steps of a nested Sequential between two dotted layer names.

    first_layer (inclusive) or after_layer (exclusive) starts the piece; last_layer (inclusive)
    or upto_layer (exclusive) ends it. Names may point inside nested Sequentials; those are cut
    too. The piece is a deep copy (as baukit's and the original's default), so changing it leaves `sequential`
    alone; share_weights=True shares the modules themselves (the rewriter's pieces, whose weight it edits).
    """
    if single_layer is not None:
        if any(x is not None for x in (first_layer, last_layer, after_layer, upto_layer)):
            raise ValueError('single_layer excludes the other bounds')
        first_layer = last_layer = single_layer
    if first_layer is not None and after_layer is not None:
        raise ValueError('give first_layer or after_layer, not both')
    if last_layer is not None and upto_layer is not None:
        raise ValueError('give last_layer or upto_layer, not both')
    bounds = {k: (None if v is None else v.split('.')) for k, v in dict(
        first=first_layer, last=last_layer, after=after_layer, upto=upto_layer).items()}
    for v in bounds.values():
        if v is not None:
            get_module(sequential, '.'.join(v))             # clear error for a bad name
    piece = _cut(sequential, **bounds)
    return piece if share_weights else copy.deepcopy(piece)


def _cut(seq: nn.Module, first, last, after, upto) -> nn.Sequential:
    """Recursive worker of subsequence; bounds are name lists relative to `seq`."""
    if first is last is after is upto is None:
        return seq
    if not isinstance(seq, nn.Sequential):
        raise ValueError(f'cannot cut inside {type(seq).__name__}: not an nn.Sequential')
    including = first is None and after is None
    chosen = OrderedDict()
    for name, child in seq.named_children():
        sub = dict(first=None, last=None, after=None, upto=None)
        stop = False
        if first is not None and first[0] == name:
            including, sub['first'], first = True, first[1:] or None, None
        if after is not None and after[0] == name:
            including, rest, after = True, after[1:], None
            if not rest:
                continue                                     # exclusive: start at the next child
            sub['after'] = rest
        if upto is not None and upto[0] == name:
            rest, upto, stop = upto[1:], None, True
            if not rest:
                break                                        # exclusive: stop before this child
            sub['upto'] = rest
        if last is not None and last[0] == name:
            sub['last'], last, stop = last[1:] or None, None, True
        if including:
            chosen[name] = _cut(child, **sub)
        if stop:
            break
    return nn.Sequential(chosen)


class Trace(contextlib.AbstractContextManager):
    """Retains (or edits) the output, and optionally the input, of one named layer.

    edit_output(output, layer_name) -> new output replaces what the layer returns.
    stop=True raises StopForward after the layer, ending the forward pass early (caught on exit).
    """

    def __init__(self, model: nn.Module, layer: str, retain_output: bool = True,
                 retain_input: bool = False, detach: bool = False,
                 edit_output: Callable | None = None, stop: bool = False):
        self.layer = layer
        self.output = None
        self.input = None
        module = get_module(model, layer)

        def hook(_module, inputs, output):
            if edit_output is not None:
                output = edit_output(output, layer)
            if retain_input:
                self.input = _maybe_detach(inputs[0], detach)
            if retain_output:
                self.output = _maybe_detach(output, detach)
            if stop:
                raise StopForward()
            return output

        self._handle = module.register_forward_hook(hook)

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def close(self) -> None:
        self._handle.remove()


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """A Trace for each of several layers: td[name].output."""

    def __init__(self, model: nn.Module, layers, stop: bool = False, **kwargs):
        super().__init__()
        layers = list(layers)
        for i, name in enumerate(layers):
            self[name] = Trace(model, name, stop=stop and i == len(layers) - 1, **kwargs)

    def __exit__(self, exc_type, exc, tb):
        for trace in self.values():
            trace.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class StopForward(Exception):
    """Raised by a Trace with stop=True to end a forward pass early."""


def _maybe_detach(x, detach: bool):
    if not detach:
        return x
    if torch.is_tensor(x):
        return x.detach()
    if isinstance(x, dict):
        return type(x)({k: _maybe_detach(v, True) for k, v in x.items()})
    return x
