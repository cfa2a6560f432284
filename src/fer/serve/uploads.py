"""Untrusted bytes in, a bounded image out, nothing written to disk.

- :func:`read_body`: the request body, refused (413) when its ``Content-Length`` says it is over
  the limit and cut off while reading when a client sends more than it announced (or announced
  nothing, chunked). A :class:`ByteBudget` shared by all requests bounds the bytes held at once
  (503 past it), so many large uploads together cannot exhaust memory.
- :func:`form_image`: the image part of a ``multipart/form-data`` body, parsed in memory:
  Starlette's parser spools file parts to a temporary file past 1 MB, so it is told to keep them
  in memory up to the byte limit the body already fits in.
- :func:`decode_image`: PIL reads the header first (``Image.open`` is lazy), so the pixel count is
  checked before any pixel is decoded: a 30000x30000 PNG of a few hundred KB (a decompression bomb)
  is refused from its first bytes; then decoding, EXIF orientation, and the conversion rules of
  :mod:`fer.vision.images`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from fer.vision.images import ImageReadError, load_image

FORM_FIELDS = 8  # the image and a few options: anything beyond is not this page's form


class UploadTooLarge(Exception):
    """The body is over the byte limit (HTTP 413)."""


class ServerBusy(Exception):
    """The uploads in flight already hold the byte budget (HTTP 503)."""


class ByteBudget:
    """Bytes of request bodies held at once, across requests (one event loop: no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise ServerBusy(f"The uploads in flight hold {self.used} bytes, this server's limit {self.limit}: try again shortly.")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


class BadUpload(ValueError):
    """The body is not an image this server accepts (HTTP 400); says why."""


async def read_body(headers: Headers, chunks: AsyncIterator[bytes], limit: int, budget: ByteBudget) -> bytes:
    """The whole body, at most ``limit`` bytes, whatever ``Content-Length`` claims; its bytes are
    taken from ``budget``, and the caller gives ``len(body)`` back when done with it (on an error here, this does)."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadUpload(f"Content-Length {declared!r} is not a number of bytes.")
        if int(declared) > limit:
            raise UploadTooLarge(f"The upload is {int(declared)} bytes; this server takes at most {limit}.")
    body = bytearray()
    try:
        async for chunk in chunks:
            if len(body) + len(chunk) > limit:
                raise UploadTooLarge(f"The upload is over {limit} bytes, the most this server takes.")
            budget.take(len(chunk))
            body += chunk
    except BaseException:
        budget.give(len(body))
        raise
    return bytes(body)


async def form_image(headers: Headers, body: bytes, limit: int) -> tuple[bytes, dict[str, str]]:
    """(the bytes of the first file part, the text fields) of a multipart body held in memory."""

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(headers, stream(), max_files=1, max_fields=FORM_FIELDS)
    parser.spool_max_size = limit + 1  # the body fits in ``limit``, so no part ever rolls over to disk
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise BadUpload(f"Malformed multipart form: {error.message}") from error
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    if not files:
        raise BadUpload("The form holds no file: send the image as a file part (e.g. curl -F file=@photo.jpg).")
    data = await files[0].read()
    await form.close()
    return data, fields


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Encoded bytes -> uint8 HxW or HxWx3 (RGB), upright (EXIF), refused beyond ``max_pixels`` before decoding."""
    if not data:
        raise BadUpload("The upload is empty: send an image file (JPEG, PNG, WebP, ...).")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise BadUpload("Not an image: Pillow cannot identify the format (JPEG, PNG, WebP, GIF, BMP, TIFF are read).") from error
    except Image.DecompressionBombError as error:
        raise BadUpload(f"The image has too many pixels to decode ({error}); this server decodes at most {max_pixels}.") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise BadUpload(f"The image header is damaged: {error}.") from error
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise BadUpload(f"The image is {width}x{height} = {width * height} pixels; this server decodes at most {max_pixels}.")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise BadUpload(f"The image is damaged or truncated: {error}.") from error
        try:
            return load_image(upright)
        except ImageReadError as error:
            raise BadUpload(str(error)) from error
