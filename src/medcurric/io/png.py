"""PNG images: DeepLesion's 16-bit CT slices and folders of per-organ mask PNGs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcurric.errors import DataFormatError, MissingFileError, ShapeError
from medcurric.io.records import LabelMap

if TYPE_CHECKING:
    from medcurric.vocabulary import ClassMap

__all__ = ["DEEPLESION_HU_OFFSET", "read_deeplesion_slice", "read_png_masks"]

#: DeepLesion stores ``HU + 32768`` in 16-bit PNGs.
DEEPLESION_HU_OFFSET = 32768


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise MissingFileError(f"Expected a PNG file at '{path}', but no such file exists.")
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return (
                    np.asarray(im, dtype=np.int32)
                    if im.mode == "I"
                    else np.asarray(im).astype(np.int32)
                )
            if im.mode in ("RGB", "RGBA", "P", "LA"):
                return np.asarray(im.convert("L"))
            return np.asarray(im)
    except MemoryError:
        raise
    except Exception as exc:  # OSError, Pillow's DecompressionBombError, SyntaxError (broken PNG)
        raise DataFormatError(f"'{path}' could not be read as an image: {exc}") from exc


def read_deeplesion_slice(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one DeepLesion 16-bit PNG slice in Hounsfield units.

    Args:
        path: A slice file such as ``Images_png/000001_01_01/109.png``.

    Returns:
        ``[y, x]`` int16 HU (``value - 32768``); rows run towards posterior and
        columns towards the patient's left, as the boxes in ``DL_info.csv`` assume.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When it is not a 16-bit grey PNG.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "109.png"
        >>> Image.fromarray(np.array([[32768 - 1000, 32768 + 40]], np.uint16)).save(f)
        >>> read_deeplesion_slice(f).tolist()
        [[-1000, 40]]
    """
    arr = _read_png(Path(path))
    if arr.ndim != 2 or arr.dtype not in (np.int32, np.uint16):
        raise DataFormatError(
            f"Expected a 16-bit greyscale DeepLesion PNG at '{path}', but got dtype {arr.dtype} "
            f"and shape {arr.shape}."
        )
    return (arr.astype(np.int32) - DEEPLESION_HU_OFFSET).astype(np.int16)


def read_png_masks(
    folder: str | os.PathLike[str],
    *,
    class_map: ClassMap | None = None,
    threshold: int = 127,
    spacing: Sequence[float] | None = None,
) -> LabelMap:
    """Read a folder of binary mask PNGs, one file per organ, into one 2D label map.

    Chest X-ray segmenters (CXAS and others) write ``<folder>/<organ>.png``. A
    pixel belongs to an organ when its grey value exceeds ``threshold``. Without
    ``class_map``, labels ``1..n`` follow the sorted file names and the class
    names are the normalised file stems; with one, each stem is looked up in it
    (files whose stem it lacks raise). Where masks overlap, the file with the
    higher label wins (so in a map that lists lobes after the whole lung, the
    lobe is kept).

    Args:
        folder: Folder of ``*.png`` masks, all the same size.
        class_map: Optional class map naming the files.
        threshold: Grey value above which a pixel is inside.
        spacing: ``(sy, sx)`` in mm, if known.

    Returns:
        A ``[y, x]`` label map.

    Raises:
        MissingFileError: When the folder does not exist or holds no PNG.
        ShapeError: When the masks differ in size.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> m = np.zeros((4, 6), np.uint8); m[1:3, 0:2] = 255
        >>> Image.fromarray(m).save(d / "right lung.png")
        >>> Image.fromarray(m[:, ::-1].copy()).save(d / "left lung.png")
        >>> lm = read_png_masks(d)
        >>> lm.class_map.names, lm.array[1].tolist()
        (('left_lung', 'right_lung'), [2, 2, 0, 0, 1, 1])
    """
    from medcurric.io._classmaps import class_map_from_names, lookup_label, normalise_name

    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(
            f"Expected a folder of mask PNGs at '{root}', but it does not exist."
        )
    files = sorted(p for p in root.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise MissingFileError(f"Expected mask PNGs (<organ>.png) in '{root}', but found none.")
    if class_map is None:
        names = {i + 1: normalise_name(f.stem) or f"label_{i + 1}" for i, f in enumerate(files)}
        labels = list(names)
        cmap = class_map_from_names(names)
    else:
        labels = [lookup_label(class_map, f.stem, where=str(f)) for f in files]
        cmap = class_map
    out: np.ndarray | None = None
    for label, f in sorted(zip(labels, files, strict=True), key=lambda t: t[0]):
        m = _read_png(f)
        if m.ndim != 2:
            raise ShapeError(f"Expected a 2D grey mask in '{f}', but got shape {m.shape}.")
        if out is None:
            out = np.zeros(m.shape, dtype=np.uint8 if max(labels) < 256 else np.uint16)
        elif m.shape != out.shape:
            raise ShapeError(
                f"Expected every mask in '{root}' to be {out.shape}, but '{f.name}' is {m.shape}."
            )
        out[m > threshold] = label
    assert out is not None
    return LabelMap(
        array=out,
        class_map=cmap,
        spacing=None if spacing is None else tuple(spacing),
        source=str(root),
    )
