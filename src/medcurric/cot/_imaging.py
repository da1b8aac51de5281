"""Reading images for prompting: size from the header, 8-bit RGB pixels, data URLs.

The pixels are :func:`medcurric.io.load_rgb`'s, the same the trainer feeds the model.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from medcurric.errors import DataFormatError, MissingFileError
from medcurric.io import load_rgb as _io_load_rgb


def _pil() -> Any:
    from PIL import Image

    return Image


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(width, height)`` from the image header (no pixels decoded)."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected an image at '{p}', but it does not exist.")
    try:
        with _pil().open(p) as im:
            return int(im.width), int(im.height)
    except OSError as exc:
        raise DataFormatError(f"Cannot read the image header of '{p}': {exc}") from exc


def _cache_key(window: Any) -> Any:
    """A hashable stand-in for a window (records carry ``(low, high)``, JSON gives lists)."""
    if isinstance(window, (list, tuple)):
        return tuple(_cache_key(w) for w in window)
    return window


def load_rgb(path: str | os.PathLike[str], window: Any = None) -> Any:
    """Load an image file as the 8-bit RGB PIL image a model sees (:func:`medcurric.io.load_rgb`)."""
    return _pil().fromarray(_io_load_rgb(path, window=window))


def _png(rgb: np.ndarray) -> bytes:
    """PNG of ``uint8 [H, W, 3]`` pixels, one channel when R = G = B (the same RGB once decoded).

    zlib level 3: on a 512 x 512 slice 4x faster than Pillow's default 6, and no larger.
    """
    grey = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    buf = io.BytesIO()
    _pil().fromarray(rgb[..., 0] if grey else rgb).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


@functools.lru_cache(maxsize=64)
def _data_url_cached(path: str, mtime_ns: int, size: int, window: Any) -> str:
    # re-encode the decoded pixels: the original file's metadata (EXIF, PNG text) never leaves
    payload = _png(_io_load_rgb(path, window=window))
    return "data:image/png;base64," + base64.b64encode(payload).decode("ascii")


def data_url(path: str | os.PathLike[str], window: Any = None) -> str:
    """Return the pixels of :func:`load_rgb` as a PNG ``data:`` URL (no metadata of the file).

    A grey image is sent as a one-channel PNG; decoded to RGB it is the same pixels.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise MissingFileError(f"Expected an image at '{p}', but it does not exist.") from exc
    return _data_url_cached(str(p), st.st_mtime_ns, st.st_size, _cache_key(window))
