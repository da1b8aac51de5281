"""TotalSegmentator outputs: one multilabel NIfTI, or a folder of per-class files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcurric.errors import DataFormatError, MissingFileError, ShapeError
from medcurric.io.nifti import _check_file, _load, _take, read_nifti_labels
from medcurric.io.orientation import Reorientation
from medcurric.io.records import LabelMap

if TYPE_CHECKING:
    from medcurric.vocabulary.classmap import ClassMap

__all__ = ["read_label_map", "read_totalsegmentator"]


def _nifti_stem(path: Path) -> str | None:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def read_totalsegmentator(
    path: str | os.PathLike[str], *, class_map: ClassMap | None = None
) -> LabelMap:
    """Read TotalSegmentator's output as a canonical ``[z, y, x]`` label map.

    * A multilabel file (``--ml``): label names come from its header extension
      when present (TotalSegmentator writes one); without one the ids are read
      with ``class_map``, by default ``ClassMap.totalsegmentator()`` (task ``total``).
    * A folder of per-class files ``<class name>.nii.gz`` (the default output):
      each file is a binary mask; the class takes its id from ``class_map`` (by
      default the ``total`` map when every name is in it, else ids ``1..n`` in
      sorted name order). Where masks overlap, the higher id wins.

    Args:
        path: The ``.nii.gz`` file or the output folder.
        class_map: The classes to name the labels with.

    Returns:
        The label map with spacing and affine.

    Raises:
        MissingFileError: When nothing is at ``path`` or the folder holds no NIfTI.
        ShapeError: When the per-class files differ in shape or affine.

    Examples:
        >>> import tempfile, pathlib
        >>> from medcurric.io import write_nifti
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> m = np.zeros((2, 3, 4), np.uint8); m[0, 1, 1] = 1
        >>> write_nifti(m, d / "liver.nii.gz"); write_nifti(m * 0, d / "spleen.nii.gz")
        >>> lm = read_totalsegmentator(d)
        >>> int(lm.array[0, 1, 1]), lm.class_map.name_of(5)
        (5, 'liver')
    """
    from medcurric.vocabulary.classmap import ClassMap

    p = Path(path)
    if p.is_file():
        return read_nifti_labels(p, class_map=class_map, fallback=ClassMap.totalsegmentator())
    if not p.is_dir():
        raise MissingFileError(
            f"Expected a TotalSegmentator output (a .nii.gz file or a folder of per-class "
            f"files) at '{p}', but nothing is there."
        )
    files = {}
    for f in sorted(p.iterdir()):
        stem = _nifti_stem(f)
        if stem is not None and f.is_file():
            files[stem] = f
    if not files:
        raise MissingFileError(f"Expected per-class files <class>.nii.gz in '{p}', but found none.")
    from medcurric.io._classmaps import class_map_from_names, lookup_label

    if class_map is None:
        total = ClassMap.totalsegmentator()
        if all(n in total.names for n in files):
            class_map = total
    if class_map is None:
        labels = {n: i + 1 for i, n in enumerate(files)}
        class_map = class_map_from_names({i: n for n, i in labels.items()})
    else:
        labels = {n: lookup_label(class_map, n, where=str(files[n])) for n in files}
    out: np.ndarray | None = None
    affine: np.ndarray = np.eye(4)
    reorientation: Reorientation | None = None
    dtype = np.uint8 if class_map.max_label < 256 else np.uint16
    for name, label in sorted(labels.items(), key=lambda t: t[1]):
        img, r = _load(files[name])
        if out is None:
            reorientation, affine = r, img.affine
            out = np.zeros(r.canonical_shape, dtype=dtype)
        elif (
            reorientation is None
            or r.shape != reorientation.shape
            or not np.allclose(img.affine, affine, atol=1e-4)
        ):
            raise ShapeError(
                f"Expected every per-class file in '{p}' to share one grid, but "
                f"'{files[name].name}' "
                f"has shape {r.shape} and a different affine."
            )
        data = _take(img.dataobj, None, files[name])
        if data.ndim != 3:
            raise DataFormatError(
                f"Expected a 3D mask in '{files[name]}', but got shape {data.shape}."
            )
        out[r.apply(data) > 0] = label
    assert out is not None and reorientation is not None
    return LabelMap(
        array=out,
        class_map=class_map,
        spacing=reorientation.spacing(),
        affine=reorientation.affine,
        source=str(p),
    )


def read_label_map(path: str | os.PathLike[str], *, class_map: ClassMap | None = None) -> LabelMap:
    """Read an organ label map from whatever is at ``path``.

    * ``*.nii`` / ``*.nii.gz`` file or a folder of them: :func:`read_totalsegmentator`
      (a multilabel NIfTI without names falls back to the TotalSegmentator map
      unless ``class_map`` is given);
    * ``*.dcm`` file: :func:`~medcurric.io.read_dicom_seg`;
    * ``*.npy`` file: an integer ``[y, x]`` or ``[z, y, x]`` array, already canonical,
      named by ``class_map`` (default TotalSegmentator's ``total``), spacing unknown;
    * folder of ``*.png``: :func:`~medcurric.io.read_png_masks`.

    Args:
        path: File or folder.
        class_map: Optional class map naming the labels.

    Returns:
        The label map.

    Raises:
        MissingFileError: When nothing readable is at ``path``.
    """
    p = Path(path)
    if p.is_file():
        if _nifti_stem(p) is not None:
            return read_totalsegmentator(_check_file(p), class_map=class_map)
        if p.suffix.lower() == ".dcm":
            from medcurric.io.dicom import read_dicom_seg

            return read_dicom_seg(p, class_map=class_map)
        if p.suffix.lower() == ".npy":
            return _read_npy_labels(p, class_map)
        raise DataFormatError(
            f"Expected a .nii, .nii.gz, .dcm or .npy label map at '{p}', but got a '{p.suffix}' file."
        )
    if p.is_dir():
        entries = [f for f in p.iterdir() if f.is_file()]
        if any(_nifti_stem(f) is not None for f in entries):
            return read_totalsegmentator(p, class_map=class_map)
        if any(f.suffix.lower() == ".png" for f in entries):
            from medcurric.io.png import read_png_masks

            return read_png_masks(p, class_map=class_map)
    raise MissingFileError(
        f"Expected a label map at '{p}' (a NIfTI file, a DICOM SEG, or a folder of per-class "
        "NIfTI or PNG masks), but found none."
    )


def _read_npy_labels(path: Path, class_map: ClassMap | None) -> LabelMap:
    from medcurric.vocabulary.classmap import ClassMap

    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"'{path}' is not a plain numpy array file: {exc}") from exc
    names = class_map if class_map is not None else ClassMap.totalsegmentator()
    return LabelMap(array, names, source=str(path))
