"""A stored image to the 8-bit RGB pixels a model sees: the one conversion every consumer uses.

The generation backends (what a server is sent), :func:`medcurric.curriculum.render`
(what the trainer feeds the model) and the review pages all call :func:`load_rgb`,
so a sample looks the same wherever it goes:

=============================================  ==============================================
stored as                                      becomes
=============================================  ==============================================
16-bit greyscale PNG (DeepLesion)              HU = value - 32768, through the window
NIfTI (``.nii``, ``.nii.gz``) or DICOM slice   HU (header scaling applied), through the window
numpy array of any other numeric dtype         intensities (HU for CT), through the window
8-bit PNG / JPEG / WebP / ... (grey, palette)  its pixels as RGB (alpha dropped)
numpy ``uint8`` ``[H, W]``, ``[H, W, 3|4]``    its pixels as RGB
numpy float ``[H, W, 3|4]``                    RGB in ``[0, 1]``, scaled to 0-255
=============================================  ==============================================

The window is the record's when it has one (DeepLesion's ``DICOM_windows``, kept as
``LesionRecord.window``), else the DICOM header's for a DICOM file, else
:data:`~medcurric.io.window.DEFAULT_WINDOW` (soft tissue, W400 L40). Pixels stay in the
frame they are stored in (EXIF orientation is not applied), which is the frame the
lesion boxes are given in; volumes are read in the canonical orientation of
:func:`~medcurric.io.read_nifti`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcurric.errors import DataFormatError, MissingFileError, ShapeError, WrongTypeError
from medcurric.io.png import DEEPLESION_HU_OFFSET
from medcurric.io.window import DEFAULT_WINDOW, Window, apply_window, window_to_rgb

__all__ = ["MAX_PIXELS", "load_rgb"]

#: Largest image, in pixels, that :func:`load_rgb` decodes (8192 x 8192); larger ones are
#: refused before their pixels are inflated (decompression bombs). Pillow's own limit applies too.
MAX_PIXELS = 8192 * 8192

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
_NIFTI = (".nii", ".nii.gz")


def load_rgb(
    source: Any,
    *,
    window: Any = None,
    slice_index: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Turn a stored image into the ``uint8 [H, W, 3]`` RGB a model sees.

    Args:
        source: An image file (PNG, JPEG, ... , ``.nii``/``.nii.gz``, DICOM, ``.npy``), a PIL
            image, or a numpy array (intensities such as HU, or ``uint8`` pixels); see the
            module table.
        window: For intensities: a :class:`~medcurric.io.Window`, a preset name, ``(low, high)``
            (e.g. ``LesionRecord.window``) or three of them stacked as R, G, B. ``None``: the
            DICOM header's window for a DICOM file, else soft tissue. Ignored for 8-bit images.
        slice_index: Which slice ``z`` of a NIfTI or DICOM volume with several slices.
        max_pixels: Refuse images with more pixels than this (before decoding them).

    Returns:
        A new C-contiguous ``uint8`` array ``[H, W, 3]``.

    Raises:
        MissingFileError: The file does not exist.
        DataFormatError: The file cannot be decoded, is larger than ``max_pixels``, or holds
            non-finite intensities; the message names the file.
        ShapeError: An array or volume that is not one 2D image (or a volume without ``slice_index``).
        WrongTypeError: A source or dtype that is none of the above.

    Examples:
        >>> import numpy as np
        >>> load_rgb(np.array([[-1000.0, 40.0, 3000.0]]))[..., 0].tolist()
        [[0, 128, 255]]
        >>> load_rgb(np.array([[-1000.0, 40.0, 3000.0]]), window=(-1000, 1000))[..., 0].tolist()
        [[0, 133, 255]]
        >>> load_rgb(np.full((1, 2), 7, np.uint8)).tolist()
        [[[7, 7, 7], [7, 7, 7]]]
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), window, slice_index, max_pixels)
    if isinstance(source, np.ndarray):
        return _from_array(source, window, "the array")
    if _is_pil(source):
        return _from_pil(source, window)
    raise WrongTypeError(
        "Expected an image file path, a PIL image or a numpy array, but got "
        f"{type(source).__name__}."
    )


def _is_pil(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(value, Image.Image)


def _load_file(path: Path, window: Any, slice_index: int | None, max_pixels: int) -> np.ndarray:
    if not path.is_file():
        raise MissingFileError(f"Expected an image at '{path}', but no such file exists.")
    name = path.name.lower()
    if name.endswith(_NIFTI):
        return _from_volume(path, "nifti", window, slice_index, max_pixels)
    if name.endswith(".npy"):
        return _from_npy(path, window, max_pixels)
    if _is_dicom(path):
        return _from_volume(path, "dicom", window, slice_index, max_pixels)
    return _from_image_file(path, window, max_pixels)


def _is_dicom(path: Path) -> bool:
    """DICOM Part 10 files carry ``DICM`` after a 128-byte preamble."""
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom")


def _too_large(path: Path, height: int, width: int, max_pixels: int) -> DataFormatError:
    return DataFormatError(
        f"Expected an image of at most {max_pixels} pixels, but '{path}' is {width} x {height} "
        f"= {width * height}; refusing to decode it (raise max_pixels if it is genuine)."
    )


def _from_image_file(path: Path, window: Any, max_pixels: int) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) between its limit and twice it: fail instead
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise _too_large(path, height, width, max_pixels)
                im.load()
                return _from_pil(im, window)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataFormatError(f"Refusing to decode '{path}': {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataFormatError(f"Cannot decode the image '{path}': {exc}") from exc


def _from_pil(im: Any, window: Any) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT:
        hu = np.asarray(im).astype(np.int32) - DEEPLESION_HU_OFFSET
        return _window(hu, window, "the 16-bit image")
    if im.mode == "F":
        return _from_array(np.asarray(im), window, "the float image")
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _from_npy(path: Path, window: Any, max_pixels: int) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"Cannot read '{path}' as a numpy array: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.ndim < 2:
        raise ShapeError(f"Expected an image array [H, W(, C)] in '{path}', but got {getattr(arr, 'shape', arr)!r}.")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise _too_large(path, arr.shape[0], arr.shape[1], max_pixels)
    return _from_array(np.asarray(arr), window, f"'{path}'")


def _from_volume(
    path: Path, kind: str, window: Any, slice_index: int | None, max_pixels: int
) -> np.ndarray:
    if kind == "nifti":
        from medcurric.io.nifti import read_nifti

        volume = read_nifti(path, dtype=np.float64)
    else:
        from medcurric.io.dicom import read_dicom_series

        volume = read_dicom_series([path])
        if window is None:
            window = _dicom_window(path)
    arr = np.asarray(volume.array)
    if arr.ndim == 3:
        if slice_index is None and arr.shape[0] != 1:
            raise ShapeError(
                f"'{path}' holds {arr.shape[0]} slices (shape {arr.shape}); pass slice_index= to pick one."
            )
        z = 0 if slice_index is None else int(slice_index)
        if not 0 <= z < arr.shape[0]:
            raise ShapeError(f"Expected slice_index in [0, {arr.shape[0] - 1}] for '{path}', but got {slice_index}.")
        arr = arr[z]
    if arr.ndim != 2:
        raise ShapeError(f"Expected a 2D slice in '{path}', but got shape {arr.shape}.")
    if arr.size > max_pixels:
        raise _too_large(path, arr.shape[0], arr.shape[1], max_pixels)
    return _window(arr.astype(np.float64), window, f"'{path}'")


def _dicom_window(path: Path) -> Window | None:
    """The first window of the DICOM header, or ``None`` when it has none."""
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    try:
        return Window.from_dicom(header)
    except DataFormatError:
        return None


def _from_array(arr: np.ndarray, window: Any, what: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        if arr.ndim == 2:
            return np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            return np.ascontiguousarray(np.broadcast_to(arr[..., :3], (*arr.shape[:2], 3)))
        raise ShapeError(f"Expected uint8 pixels [H, W], [H, W, 3] or [H, W, 4], but {what} has shape {arr.shape}.")
    if arr.dtype.kind not in "iuf":
        raise WrongTypeError(
            f"Expected uint8 pixels or numeric intensities, but {what} has dtype {arr.dtype}."
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype.kind == "f":
        # float RGB(A) in [0, 1], the matplotlib / torchvision convention
        rgb = np.asarray(arr[..., :3], dtype=np.float64)
        _check_finite(rgb, what)
        return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    if arr.ndim != 2:
        raise ShapeError(
            f"Expected intensities [H, W] (or float RGB [H, W, 3] in [0, 1]), but {what} has "
            f"shape {arr.shape} and dtype {arr.dtype}."
        )
    return _window(arr, window, what)


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise DataFormatError(f"Expected finite intensities, but {what} holds NaN or infinity.")


#: Integer images spanning fewer values than this are windowed through a lookup table.
_LUT_SPAN = 1 << 17


def _window(hu: np.ndarray, window: Any, what: str) -> np.ndarray:
    window = DEFAULT_WINDOW if window is None else window
    if hu.dtype.kind in "iu" and hu.size:
        lo, hi = int(hu.min()), int(hu.max())
        if hi - lo < _LUT_SPAN:
            # each stored value windowed once (the same float64 formula), then gathered
            lut = _window(np.arange(lo, hi + 1, dtype=np.float64)[None], window, what)[0]
            return lut[hu.astype(np.intp) - lo]
    hu = np.asarray(hu, dtype=np.float64)
    _check_finite(hu, what)
    if isinstance(window, (str, Window)) or (isinstance(window, Sequence) and len(window) == 2):
        # one window: window the grey level once, then copy it to R, G and B
        return np.repeat(apply_window(hu, window)[..., None], 3, axis=-1)
    return np.ascontiguousarray(window_to_rgb(hu, window))
