"""DICOM series and DICOM SEG objects through pydicom, reoriented to the canonical axes.

DICOM positions are in LPS millimetres; they are converted to RAS+ (negate x and
y) so that the affine follows the library's convention. Segmentations are read
with pydicom alone: the segment of each frame comes from its Segment
Identification Sequence and its position from its Plane Position Sequence
(per-frame or shared functional groups); binary, bit-packed pixel data is
unpacked by pydicom.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcurric._optional import require
from medcurric.errors import DataFormatError, MedcurricError, MissingFileError, ShapeError
from medcurric.io.orientation import Reorientation
from medcurric.io.records import LabelMap, Volume

if TYPE_CHECKING:
    from medcurric.vocabulary import ClassMap

__all__ = ["read_dicom_seg", "read_dicom_series"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pydicom() -> Any:
    return require("pydicom", feature="reading DICOM files")


@contextlib.contextmanager
def _reading(path: object) -> Iterator[None]:
    """Name the file in errors pydicom raises on malformed values or pixel data.

    pydicom parses element values and decodes pixel data when they are first used, so a
    damaged file fails there (ValueError, IndexError, NotImplementedError...), not in dcmread.
    """
    try:
        yield
    except (MedcurricError, MemoryError):
        raise
    except Exception as exc:
        raise DataFormatError(
            f"'{path}' could not be read as DICOM: {type(exc).__name__}: {exc}"
        ) from exc


def _grid_affine(
    orientation: Sequence[float],
    origin: Sequence[float],
    pixel_spacing: Sequence[float],
    step: np.ndarray,
) -> np.ndarray:
    """RAS affine of a stored grid ``(i = column, j = row, k = frame)``."""
    row_dir = np.asarray(orientation[:3], float)  # direction along a row (column index grows)
    col_dir = np.asarray(orientation[3:6], float)  # direction down a column (row index grows)
    dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])  # row spacing, column spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = step
    lps[:3, 3] = np.asarray(origin, float)
    return _LPS_TO_RAS @ lps


def _slice_step(
    orientation: Sequence[float], positions: np.ndarray, fallback: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sort positions along the slice normal; return (order, step vector in LPS)."""
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float))
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    if len(positions) > 1:
        steps = np.diff(along[order])
        step_len = float(np.median(steps))
        if step_len <= 0:
            raise DataFormatError(
                "Expected distinct slice positions, but several slices share one."
            )
        if np.max(np.abs(steps - step_len)) > 0.01 * step_len + 1e-3:
            raise DataFormatError(
                f"Expected evenly spaced slices, but the gaps range from {steps.min():.3f} to "
                f"{steps.max():.3f} mm. Resample the series or read the slices one by one."
            )
        step = (positions[order[-1]] - positions[order[0]]) / (len(positions) - 1)
    else:
        step = normal * fallback
    return order, step


def read_dicom_series(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Volume:
    """Read a single-frame DICOM series (one file per slice) as a canonical volume.

    Slices are ordered by their position along the slice normal, not by file
    name; Rescale Slope/Intercept are applied (HU for CT).

    Args:
        paths: A folder of slice files (every regular file in it is read), or a list of files.

    Returns:
        The reoriented volume ``[z, y, x]`` with spacing and affine (one slice gives a
        ``[1, y, x]`` volume whose slice thickness is taken as the z spacing).

    Raises:
        MissingFileError: When a path does not exist or the folder holds no files.
        DataFormatError: When the files are not one evenly spaced series, or a file is
            damaged (its values or pixel data cannot be decoded); the error names the file.

    Examples:
        >>> from pydicom.data import get_testdata_file
        >>> v = read_dicom_series([get_testdata_file("CT_small.dcm")])  # doctest: +SKIP
        >>> v.shape, v.modality  # doctest: +SKIP
        ((1, 128, 128), 'CT')
    """
    pydicom = _pydicom()
    if isinstance(paths, (str, os.PathLike)):
        root = Path(paths)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            files = [root]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise MissingFileError(f"Expected DICOM slice files in '{paths}', but found none.")
    datasets = []
    for f in files:
        if not f.is_file():
            raise MissingFileError(f"Expected a DICOM file at '{f}', but no such file exists.")
        try:
            datasets.append(pydicom.dcmread(str(f)))
        except Exception as exc:
            raise DataFormatError(f"'{f}' could not be read as DICOM: {exc}") from exc
    first = datasets[0]
    rows = []
    for f, ds in zip(files, datasets, strict=True):
        with _reading(f):
            for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
                if tag not in ds:
                    raise DataFormatError(f"Expected {tag} in every slice, but '{f}' has none.")
            rows.append([float(v) for v in ds.ImagePositionPatient])
    with _reading(files[0]):
        orientation = [float(v) for v in first.ImageOrientationPatient]
        pixel_spacing = [float(v) for v in first.PixelSpacing]
        thickness = float(first.get("SliceThickness", 1.0) or 1.0)
        positions = np.array(rows, dtype=np.float64)
        order, step = _slice_step(orientation, positions, thickness)
    slices = []
    for idx in order:
        ds = datasets[idx]
        with _reading(files[idx]):
            arr = ds.pixel_array.astype(np.float32)
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            inter = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        slices.append(arr * slope + inter)
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise DataFormatError(f"Expected slices of one size, but got sizes {sorted(shapes)}.")
    stack = np.stack(slices)  # [k, row, col]
    affine = _grid_affine(orientation, positions[order[0]], pixel_spacing, step)
    data = stack.transpose(2, 1, 0)  # (i = col, j = row, k)
    r = Reorientation.from_affine(affine, data.shape)
    return Volume(
        array=np.ascontiguousarray(r.apply(data)),
        spacing=r.spacing(),
        affine=r.affine,
        source=str(files[0].parent if len(files) > 1 else files[0]),
        modality=str(first.get("Modality", "")),
    )


def _frame_groups(ds: Any, i: int, name: str) -> Any:
    """Functional group ``name`` of frame ``i`` (per-frame first, then shared), or None."""
    for seq_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(seq_name)
        if not seq:
            continue
        item = seq[i] if seq_name.startswith("PerFrame") else seq[0]
        if name in item and item.get(name):
            return item.get(name)[0]
    return None


def read_dicom_seg(path: str | os.PathLike[str], *, class_map: ClassMap | None = None) -> LabelMap:
    """Read a DICOM Segmentation object as a canonical label map.

    Each segment becomes one label. Without ``class_map`` the label is the
    Segment Number and the class name is the normalised Segment Label
    (``"Liver"`` -> ``"liver"``); with one, each Segment Label is looked up in it
    (case, spaces and dashes ignored), so the labels follow that map. Frames are
    placed by their Image Position (Patient); where segments overlap, the higher
    segment number wins. Fractional segmentations are thresholded at half their
    maximum value.

    Args:
        path: The SEG file.
        class_map: Optional map to name labels with.

    Returns:
        The label map ``[z, y, x]`` with spacing and affine.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When it is not a DICOM SEG, misses geometry, or is damaged (its
            values or pixel data cannot be decoded).

    Examples:
        >>> from pydicom.data import get_testdata_file
        >>> seg = read_dicom_seg(get_testdata_file("liver_1frame.dcm"))  # doctest: +SKIP
        >>> seg.array.shape, seg.class_map.names  # doctest: +SKIP
        ((1, 512, 512), ('liver',))
    """
    pydicom = _pydicom()
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected a DICOM SEG file at '{p}', but no such file exists.")
    try:
        ds = pydicom.dcmread(str(p))
    except Exception as exc:
        raise DataFormatError(f"'{p}' could not be read as DICOM: {exc}") from exc
    with _reading(p):
        return _seg_label_map(ds, p, class_map)


def _seg_label_map(ds: Any, p: Path, class_map: ClassMap | None) -> LabelMap:
    """The label map of a SEG dataset read from ``p`` (see :func:`read_dicom_seg`)."""
    from medcurric.io._classmaps import class_map_from_names, lookup_label, normalise_name

    if str(ds.get("Modality", "")) != "SEG" or "SegmentSequence" not in ds:
        raise DataFormatError(
            f"Expected a DICOM Segmentation (Modality SEG with a SegmentSequence) in '{p}', "
            f"but got Modality {ds.get('Modality', '?')!r}. Use read_dicom_series for images."
        )
    segments = {
        int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment_{s.SegmentNumber}"))
        for s in ds.SegmentSequence
    }
    if class_map is None:
        label_of = {n: n for n in segments}
        names = {n: normalise_name(lbl) or f"segment_{n}" for n, lbl in segments.items()}
        cmap = class_map_from_names(names)
    else:
        label_of = {n: lookup_label(class_map, lbl, where=str(p)) for n, lbl in segments.items()}
        cmap = class_map
    frames = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.shape[0] != n_frames:
        raise ShapeError(
            f"Expected {n_frames} frames in '{p}', but the pixel data holds {frames.shape[0]}."
        )
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames >= (float(ds.get("MaximumFractionalValue", 255)) / 2)
    frame_segment = []
    frame_position = []
    orientation = None
    spacing = None
    for i in range(n_frames):
        ident = _frame_groups(ds, i, "SegmentIdentificationSequence")
        if ident is None:
            if len(segments) != 1:
                raise DataFormatError(
                    f"Frame {i} of '{p}' does not say which segment it belongs to."
                )
            frame_segment.append(next(iter(segments)))
        else:
            frame_segment.append(int(ident.ReferencedSegmentNumber))
        pos = _frame_groups(ds, i, "PlanePositionSequence")
        if pos is None or "ImagePositionPatient" not in pos:
            raise DataFormatError(f"Frame {i} of '{p}' has no Image Position (Patient).")
        frame_position.append([float(v) for v in pos.ImagePositionPatient])
        ori = _frame_groups(ds, i, "PlaneOrientationSequence")
        if ori is not None and orientation is None:
            orientation = [float(v) for v in ori.ImageOrientationPatient]
        meas = _frame_groups(ds, i, "PixelMeasuresSequence")
        if meas is not None and spacing is None:
            spacing = meas
    if orientation is None:
        if "ImageOrientationPatient" not in ds:
            raise DataFormatError(f"'{p}' has no Image Orientation (Patient).")
        orientation = [float(v) for v in ds.ImageOrientationPatient]
    if spacing is None or "PixelSpacing" not in spacing:
        raise DataFormatError(f"'{p}' has no Pixel Measures (Pixel Spacing).")
    positions = np.asarray(frame_position)
    unique_pos, inverse = np.unique(np.round(positions, 4), axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    fallback = float(spacing.get("SpacingBetweenSlices", spacing.get("SliceThickness", 1.0)) or 1.0)
    order, step = _slice_step(orientation, unique_pos, fallback)
    slot = np.empty(len(order), dtype=np.int64)
    slot[order] = np.arange(len(order))
    rows, cols = frames.shape[1:]
    dtype = np.uint8 if max(label_of.values(), default=0) < 256 else np.uint16
    stack = np.zeros((len(order), rows, cols), dtype=dtype)
    for i in sorted(range(n_frames), key=lambda f: frame_segment[f]):
        label = label_of.get(frame_segment[i])
        if label is None:
            raise DataFormatError(
                f"Frame {i} of '{p}' names segment {frame_segment[i]}, which is not defined."
            )
        stack[slot[inverse[i]]][frames[i] > 0] = label
    affine = _grid_affine(orientation, unique_pos[order[0]], spacing.PixelSpacing, step)
    data = stack.transpose(2, 1, 0)
    r = Reorientation.from_affine(affine, data.shape)
    return LabelMap(
        array=np.ascontiguousarray(r.apply(data)),
        class_map=cmap,
        spacing=r.spacing(),
        affine=r.affine,
        source=str(p),
    )
