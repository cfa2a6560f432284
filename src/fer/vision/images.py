"""Pixels in, faces out: the one place where files, bytes, PIL images and arrays become uint8
arrays, grayscale, and 48x48 faces. The dataset readers, folder evaluation, prediction and the
face detector all go through it, so a file means the same pixels wherever it is read.

- :func:`load_image`: a path, encoded bytes, a PIL image or an array -> uint8 HxW (gray) or HxWx3
  (RGB), EXIF orientation applied. Arrays are read channels-last and, with three or four channels,
  as RGB(A) like PIL and matplotlib (an OpenCV ``imread`` array is BGR: convert it with
  ``cv2.cvtColor(a, cv2.COLOR_BGR2RGB)``). Alpha is dropped.
- :func:`to_gray`: the same, then ITU-R 601 luma.
- :func:`resize`: one resampling rule everywhere (area averaging to shrink, bilinear to enlarge).
- :func:`to_face`: grayscale at FER-2013's :data:`IMAGE_SIZE`.

Imports nothing else of ``fer``: every layer may use it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# FER-2013's faces are 48x48 grayscale; every face the models see starts at this size
IMAGE_SIZE = 48
# file suffixes read as images (lower case), by the dataset readers, folder evaluation and prediction
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm")

ImageInput = np.ndarray | Image.Image | bytes | str | os.PathLike


class ImageReadError(ValueError):
    """An input could not be read or is not an image this module understands; says which and why."""


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name marks an image this module reads (hidden files never do)."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def load_image(image: ImageInput) -> np.ndarray:
    """Any supported input -> uint8 HxW (grayscale) or HxWx3 (RGB) array."""
    if isinstance(image, (str, os.PathLike)):
        return _decode(Path(image), str(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(image), "the encoded image")
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageReadError(
        f"Cannot use a {type(image).__name__} as an image: pass a numpy array (HxW, HxWx3 or HxWx4), "
        "a PIL image, encoded bytes or a file path."
    )


def to_gray(image: ImageInput) -> np.ndarray:
    """Any supported input -> uint8 HxW grayscale (ITU-R 601 luma, as PIL's ``convert('L')``)."""
    array = load_image(image)
    return array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` -> ``size`` x ``size``: area averaging when shrinking (no aliasing), bilinear when
    enlarging; an image already that size is returned as it is."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if height > size or width > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def to_face(image: ImageInput) -> np.ndarray:
    """Any supported input, taken whole as one face -> uint8 48x48 grayscale, FER-2013's form."""
    return resize(to_gray(image), IMAGE_SIZE)


def _decode(source: Path | io.BytesIO, name: str) -> np.ndarray:
    try:
        with Image.open(source) as image:
            image.load()
            return _from_pil(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(error, FileNotFoundError):
            reason = "no such file"
        elif isinstance(error, UnidentifiedImageError):
            reason = "not an image Pillow can decode (damaged, or not an image file)"
        else:
            reason = str(error)
        raise ImageReadError(f"Cannot read image {name}: {reason}.") from error


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode.startswith("I"):
        return _from_array(np.asarray(image))
    if image.mode == "F":
        raise ImageReadError("32-bit float images (PIL mode F) are not supported: save the image as 8-bit.")
    if image.mode in ("1", "LA", "La"):
        return np.asarray(image.convert("L"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _from_array(array: np.ndarray) -> np.ndarray:
    """Check and convert an array to uint8 HxW or HxWx3 (RGB)."""
    if array.ndim == 3 and array.shape[-1] in (1, 2):
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)) or 0 in array.shape:
        raise ImageReadError(
            f"An image array must be HxW, HxWx3 or HxWx4 (channels last), got shape {array.shape}"
            + (": transpose a CxHxW array with a.transpose(1, 2, 0)." if array.ndim == 3 and array.shape[0] in (1, 3, 4) else ".")
        )
    return np.ascontiguousarray(_to_uint8(array))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        raise ImageReadError("Boolean arrays are masks, not images: convert to uint8 (0-255) first.")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise ImageReadError(
                f"Float image arrays must hold values in [0, 1], got [{array.min()}, {array.max()}]: "
                "divide by 255 (or convert to uint8) first."
            )
        return np.rint(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return np.rint(array / 257.0).astype(np.uint8)  # 16-bit image
        raise ImageReadError(f"Integer image values must be in 0..255 (or 0..65535 for 16-bit), got {low}..{high}.")
    raise ImageReadError(f"Unsupported image dtype {array.dtype}: use uint8, or float in [0, 1].")
