"""Reading images for prompting: size from the header, 8-bit RGB pixels, data URLs."""

from __future__ import annotations

import base64
import functools
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from medcurric.errors import DataFormatError, MissingFileError

_PASS_THROUGH = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


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


def to_8bit(im: Any) -> Any:
    """Return an 8-bit RGB copy of a PIL image; 16-bit/float images are min-max scaled.

    DeepLesion-style 16-bit PNGs (HU + 32768) are scaled over their 0.5-99.5
    percentile range, which shows soft tissue; pass already-windowed 8-bit images
    for anything else.
    """
    Image = _pil()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0
        im = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return im.convert("RGB")


def load_rgb(path: str | os.PathLike[str]) -> Any:
    """Load an image file as an 8-bit RGB PIL image."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected an image at '{p}', but it does not exist.")
    try:
        with _pil().open(p) as im:
            im.load()
            return to_8bit(im)
    except OSError as exc:
        raise DataFormatError(f"Cannot decode the image '{p}': {exc}") from exc


@functools.lru_cache(maxsize=64)
def _data_url_cached(path: str, mtime_ns: int, size: int) -> str:
    with _pil().open(path) as im:
        fmt = im.format or ""
        plain = im.mode in ("L", "RGB", "RGBA") and fmt in _PASS_THROUGH
        if plain:
            mime = _PASS_THROUGH[fmt]
            payload = Path(path).read_bytes()
        else:
            im.load()
            buf = io.BytesIO()
            to_8bit(im).save(buf, format="PNG")
            mime, payload = "image/png", buf.getvalue()
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")


def data_url(path: str | os.PathLike[str]) -> str:
    """Return the image as a ``data:`` URL (8-bit PNG/JPEG/WebP pass through, others re-encoded)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise MissingFileError(f"Expected an image at '{p}', but it does not exist.") from exc
    try:
        return _data_url_cached(str(p), st.st_mtime_ns, st.st_size)
    except OSError as exc:
        raise DataFormatError(f"Cannot encode the image '{p}': {exc}") from exc
