"""Decoding one image safely: an allow-list of formats, a pixel limit checked before decoding, wide pixel modes.

Pillow reads a few dozen formats, some through complex or external code (EPS and PostScript through Ghostscript);
a dataset or a ``predict`` argument only ever needs the common photo formats, so only those are tried, whatever a
file's name says. The size an image's header claims is checked before its pixels are decoded: a small file may claim
gigapixels (a flat PNG of 100 megapixels is 300 KB) and Pillow only warns below twice its own limit.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")  # Pillow's format IDs; never EPS, PS or PDF
MAX_PIXELS = 89_478_485  # Pillow's MAX_IMAGE_PIXELS (about a GiB as RGBA), here an error rather than a warning
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L")  # Pillow's modes for 16-bit grey (PNG and TIFF): nominal range 0-65535
WIDE = ("I", "F")  # 32-bit integer or float pixels: the range is not in the mode, so it is read from the values
NOMINAL_MAXIMA = (1.0, 255.0, 65535.0, 2.0**32 - 1)  # [0, 1] floats, then 8, 16 and 32 bits per sample


class ImageDecodeError(ValueError):
    """Pillow could not decode a file, or it is refused (format not allowed, too many pixels); one line."""


def decode_image(data: bytes | BinaryIO, grayscale: bool = False, max_pixels: int | None = None) -> torch.Tensor:
    """Decode an encoded image into ``(C, H, W)`` uint8, C = 3 (RGB) or 1 (grey); the first frame of animations.

    Grey, RGBA (alpha dropped), palette, CMYK and 16-bit images are converted; 32-bit integer and float images are
    scaled by the range their values lie in (see :func:`_to_eight_bit`); photos are turned upright by their EXIF
    orientation. Only the formats in :data:`FORMATS` are tried.

    Args:
        data: the encoded bytes, or a binary file object positioned at the image (read only as far as needed).
        grayscale: decode to 1 channel instead of 3.
        max_pixels: refuse images with more pixels than this, before decoding them; ``None``: :data:`MAX_PIXELS`.

    Raises:
        ImageDecodeError: the bytes are not a complete image in an allowed format, or it has too many pixels.
    """
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with Image.open(file, formats=FORMATS) as image:
            _check_pixels(image, limit)
            pixels = np.array(_convert(image, "L" if grayscale else "RGB"))  # decodes; a copy, writable
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(f"not an image in an allowed format ({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(str(err) or type(err).__name__) from err
    return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)


def _check_pixels(image: Image.Image, limit: int) -> None:
    width, height = image.size
    if width * height > limit:
        raise ImageDecodeError(
            f"{image.format} image of {width}x{height} = {width * height / 1e6:.1f} megapixels is over the limit of "
            f"{limit / 1e6:.1f} (resnetkit.data.decode.MAX_PIXELS): refused before decoding"
        )


def _convert(image: Image.Image, mode: str) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT or image.mode in WIDE:
        image = Image.fromarray(_to_eight_bit(np.asarray(image), image.mode))
    if image.mode == "P":
        image = image.convert("RGBA")  # a palette with transparency must pass through RGBA
    return image if image.mode == mode else image.convert(mode)


def _to_eight_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Grey samples of a wide mode as uint8.

    16-bit modes span 0-65535. A 32-bit integer or float image says nothing of its range (a TIFF holding 0-255 in
    32 bits is common, and dividing it by 2**24 gives a black image), so its values are scaled from the smallest of
    [0, 1] (floats only), [0, 255], [0, 65535] and [0, 2**32 - 1] that holds them all.

    Raises:
        ImageDecodeError: negative, non-finite or larger values, whose range cannot be told.
    """
    if mode in SIXTEEN_BIT:
        top = NOMINAL_MAXIMA[2]
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        top = next((m for m in NOMINAL_MAXIMA if high <= m and (m > 1 or mode == "F")), None)
        if top is None or not np.isfinite(low) or low < 0:
            raise ImageDecodeError(f"{mode}-mode image with values in [{low:g}, {high:g}]: its range cannot be told")
    scaled = values.astype(np.float32) * np.float32(255.0 / top)
    return scaled.clip(0, 255).round().astype(np.uint8)
