"""Mask images as the rewriting UI stores them: data URLs of square RGBA PNGs (white where painted,
alpha fading at the brush edge), decoded exactly as the original tool did (see rewrite/formats/editfile.py
for the derivation): PNG -> RGB (alpha dropped) -> PIL bilinear resize -> red channel / 255.

Errors are FieldError(field, reason): a ValueError whose message starts with the field it concerns.
"""

from __future__ import annotations

import base64
import binascii
import io
import numbers
import struct
import zlib
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ['MASK_URL_PREFIX', 'MAX_MASK_SIZE', 'FieldError', 'decode_mask_rgba', 'describe_value', 'dilate',
           'encode_mask', 'mask_from_url', 'open_png', 'positive_int', 'red_channel', 'resize_mask', 'resize_red',
           'union_masks']

MASK_URL_PREFIX = 'data:image/png;base64,'
MAX_MASK_SIZE = 4096
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
MASK_MODES = ('1', 'L', 'LA', 'P', 'RGB', 'RGBA')
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                  Image.DecompressionBombError)


class FieldError(ValueError):
    """A malformed edit request; `field` names the culprit (e.g. 'key[2].mask'), `reason` says what is wrong."""

    def __init__(self, field: str, reason: str):
        super().__init__(f'{field}: {reason}')
        self.field = field
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.field, self.reason)

    def within(self, prefix: str) -> FieldError:
        """The same error for a field nested under `prefix` ('mask' within 'key[2]' -> 'key[2].mask')."""
        return FieldError(f'{prefix}.{self.field}', self.reason)


def describe_value(value: object) -> str:
    """Short description of a JSON-ish value for error messages."""
    if value is None:
        return 'null'
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + '...'
    return f'{type(value).__name__} {text}'


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f'{name} must be a positive int, not {value!r}')
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# Mask decoding and encoding
# ---------------------------------------------------------------------------------------------------------

def _png_bytes(url: object) -> bytes:
    if not isinstance(url, str):
        raise FieldError('mask', f'must be a {MASK_URL_PREFIX}... data URL string, got {describe_value(url)}')
    if not url.startswith(MASK_URL_PREFIX):
        raise FieldError('mask', f'must start with {MASK_URL_PREFIX!r}, got {url[:40]!r}')
    try:
        data = base64.b64decode(url[len(MASK_URL_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as err:
        raise FieldError('mask', f'bad base64 data ({err})') from None
    if not data.startswith(PNG_SIGNATURE):
        raise FieldError('mask', f'the base64 data is not a PNG image (starts with {data[:8]!r})')
    return data


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}     # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_raw_size(width: int, height: int, bits: int, channels: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (one filter byte per row) an image of this header decompresses to."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + -(-(w * bits * channels) // 8))
    return total


def _check_png_data(data: bytes) -> None:
    """FieldError unless the PNG's image data (IDAT) decompresses to as many bytes as its header
    (IHDR) implies: PIL silently pads a truncated image (e.g. a 4096x4096 header over one row of data)."""
    pos, header, idat = len(PNG_SIGNATURE), None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b'IHDR' and len(body) == 13:
            header = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat.append(body)
        elif kind == b'IEND':
            break
        pos += 12 + length
    if header is None or header[3] not in _PNG_CHANNELS:
        raise FieldError('mask', 'undecodable PNG (no valid IHDR header)')
    width, height, bits, colour, _, _, interlace = header
    expected = _png_raw_size(width, height, bits, _PNG_CHANNELS[colour], interlace == 1)
    try:
        got = len(zlib.decompressobj().decompress(b''.join(idat), expected))
    except zlib.error as err:
        raise FieldError('mask', f'undecodable PNG image data ({err})') from None
    if got < expected:
        rows = f'{got // (expected // height)} of {height} rows' if interlace == 0 else f'{got} of {expected} bytes'
        raise FieldError('mask', f'the PNG header says {width}x{height} but its image data holds only {rows} '
                                 '(truncated or damaged)')


def open_png(url: object) -> Image.Image:
    """The decoded, fully loaded PNG of a mask URL, checked to be square, of sane size, in an 8-bit mode."""
    data = _png_bytes(url)
    try:
        image = Image.open(io.BytesIO(data), formats=['PNG'])
    except _DECODE_ERRORS as err:
        raise FieldError('mask', f'undecodable PNG ({type(err).__name__}: {err})') from None
    width, height = image.size
    if width != height:
        raise FieldError('mask', f'the PNG must be square, got {width}x{height}')
    if not 1 <= width <= MAX_MASK_SIZE:
        raise FieldError('mask', f'absurd PNG size {width}x{height} (at most {MAX_MASK_SIZE}x{MAX_MASK_SIZE})')
    if image.mode not in MASK_MODES:
        raise FieldError('mask', f'unsupported PNG mode {image.mode!r} (expected one of {", ".join(MASK_MODES)})')
    _check_png_data(data)
    try:
        image.load()
    except _DECODE_ERRORS as err:
        raise FieldError('mask', f'undecodable PNG ({type(err).__name__}: {err})') from None
    return image


def red_channel(image: Image.Image) -> np.ndarray:
    """[H, W] uint8, read-only: the red channel after the original's convert('RGB') (alpha dropped)."""
    red = np.array(image.convert('RGB'))[..., 0]
    red.setflags(write=False)
    return red


def resize_red(red: np.ndarray, resolution: int) -> torch.Tensor:
    """[res, res] float32: PIL bilinear resize of the 8-bit red channel, / 255 (same as resizing the RGB image)."""
    resolution = positive_int(resolution, 'resolution')
    resized = Image.fromarray(red).resize((resolution, resolution), resample=Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / np.float32(255))


def decode_mask_rgba(url: str) -> np.ndarray:
    """[H, W, 4] uint8: the RGBA pixels of a mask data URL (H == W)."""
    return np.array(open_png(url).convert('RGBA'))


def mask_from_url(url: str, resolution: int) -> torch.Tensor:
    """[res, res] float32 in [0, 1]: the mask weight at `resolution`, decoded exactly as the original did
    (RGB conversion, PIL bilinear resize, red / 255). An empty mask gives zeros."""
    return resize_red(red_channel(open_png(url)), resolution)


def _as_mask_array(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """[N, N] float64 copy of a square mask with finite values in [0, 1] (bool allowed)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    try:
        array = np.array(mask, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 2:
        raise FieldError('mask', f'must be a 2-d array [H, W] of numbers, got {describe_value(mask)}')
    if array.shape[0] != array.shape[1] or not 1 <= array.shape[0] <= MAX_MASK_SIZE:
        raise FieldError('mask', f'must be square, 1..{MAX_MASK_SIZE} pixels, got shape {array.shape}')
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise FieldError('mask', 'values must be finite and in [0, 1]')
    return array


def resize_mask(mask: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """[N, N] mask in [0, 1] -> [res, res] float32: the same PIL bilinear filter as mask decoding, without
    the 8-bit rounding (so a region may keep tiny positive weights that a decoded URL would round to 0)."""
    resolution = positive_int(resolution, 'resolution')
    image = Image.fromarray(_as_mask_array(mask).astype(np.float32))
    resized = np.asarray(image.resize((resolution, resolution), resample=Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy(np.clip(resized, 0.0, 1.0))


def encode_mask(mask: np.ndarray | torch.Tensor, size: int | None = None) -> str:
    """[N, N] mask in [0, 1] -> data URL of an RGBA PNG as the UI painted it.

    Pixels with mask m > 0 become (255, 255, 255, max(1, round(255 m))), the rest (0, 0, 0, 0). With
    `size`, the mask is first resized to [size, size] with resize_mask. Decoding the URL at its own size
    gives exactly 1 on the mask's support and 0 elsewhere.
    """
    array = _as_mask_array(mask) if size is None else resize_mask(mask, size).double().numpy()
    painted = array > 0
    rgba = np.zeros((*array.shape, 4), dtype=np.uint8)
    rgba[painted, :3] = 255
    rgba[painted, 3] = np.maximum(1, np.round(array[painted] * 255)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format='PNG')
    return MASK_URL_PREFIX + base64.b64encode(buffer.getvalue()).decode('ascii')


def union_masks(masks: Iterable[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """Elementwise max of one or more [N, N] masks in [0, 1] of the same shape -> [N, N] float32."""
    arrays = [_as_mask_array(mask) for mask in masks]
    if not arrays:
        raise ValueError('union_masks needs at least one mask')
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise ValueError(f'union_masks needs masks of one shape, got {sorted(shapes)}')
    return torch.from_numpy(np.maximum.reduce(arrays).astype(np.float32))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square (Chebyshev) dilation of a bool [H, W] or [N, H, W] mask by `radius` pixels: a pixel joins when
    any pixel within `radius` rows and columns is set."""
    if radius <= 0:
        return mask.clone()
    x = mask.float().reshape(-1, 1, *mask.shape[-2:])
    return (F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) > 0).reshape(mask.shape)
