"""Datasets on disk: detections plus a folder of organ masks, grouped into cases.

A *case* is one organ label map and the lesion records drawn on it.
:func:`find_cases` groups records by the mask file they belong to (paths from the
detection file are joined under the masks folder and may not leave it);
:func:`load_case` reads that mask and puts every record in the label map's
canonical coordinates; :func:`iter_cases` and :func:`load_dataset` do both.

Which mask belongs to which record:

* ``deeplesion``: for series ``S`` (``000001_01_01``) and key slice ``k``, the first
  of ``S_<a>-<b>.nii.gz`` with ``a <= k <= b`` (the sub-volumes DeepLesion's
  ``DL_save_nifti.py`` writes, three-digit numbers), ``S.nii.gz`` / ``S.nii``
  (the whole series, slice number 1 first), or a folder ``S/`` (TotalSegmentator's
  per-class output of that file). The key slice is counted along the file's
  stored slice axis (``k - a``, or ``k - 1`` for a whole series) and converted to
  the reoriented volume's ``z`` through the file's affine.
* ``coco`` / ``csv``: the record's ``image`` without its extension(s), e.g. image
  ``ct/case7.png`` or ``ct/case7.nii.gz`` -> ``<masks>/ct/case7`` + ``.nii.gz``,
  ``.nii``, ``.dcm`` (DICOM SEG) or a folder (per-class NIfTI or PNG masks).
  ``slice_index`` is the canonical ``z`` (towards superior) unless
  ``slice_order="stored"`` says it counts along the file's stored slice axis.

A case may also hold its label map in memory (``Case(label_map=...)``), which is how
:func:`medcurric.testing.phantom_dataset` offers the synthetic phantom as a dataset.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from medcurric._options import StrEnum, look_up_option
from medcurric._paths import safe_join
from medcurric.errors import DataFormatError, MedcurricWarning, MissingFileError, UnsafePathError
from medcurric.io.orientation import Reorientation
from medcurric.io.records import LabelMap, LesionRecord
from medcurric.vocabulary.classmap import ClassMap

if TYPE_CHECKING:
    from medcurric.io.detections import RecordError

__all__ = [
    "Case",
    "DetectionFormat",
    "LoadedCase",
    "SliceOrder",
    "detect_detection_format",
    "find_cases",
    "iter_cases",
    "load_case",
    "load_dataset",
    "read_detections",
]

_NIFTI = (".nii.gz", ".nii")


class DetectionFormat(StrEnum):
    """Detection file formats :func:`read_detections` reads."""

    DEEPLESION = "deeplesion"
    COCO = "coco"
    CSV = "csv"


class SliceOrder(StrEnum):
    """What a record's ``slice_index`` counts: canonical ``z`` or the file's stored slice axis."""

    CANONICAL = "canonical"
    STORED = "stored"


@dataclass
class Case:
    """One organ label map (a file or in memory) and the lesion records drawn on it.

    Attributes:
        key: A name unique within the dataset (the mask path, or ``missing:<image>``).
        records: The lesions, as read from the detection file.
        mask: The mask file or folder, or ``None`` (in memory, or not found).
        label_map: The label map itself, for a case held in memory.
        error: Why the case cannot be read (no mask found, a path leaving the root).
        first_slice: Record id -> stored slice number of the mask's first slice
            (a DeepLesion sub-volume ``S_<a>-<b>`` starts at ``a``).
        stored_slices: Whether 2D records' ``slice_index`` counts along the file's
            stored slice axis (converted to canonical ``z`` on loading).
        fmt: The detection format the records came from, if known.
    """

    key: str
    records: list[LesionRecord]
    mask: Path | None = None
    label_map: LabelMap | None = None
    error: str | None = None
    first_slice: dict[str, int] = field(default_factory=dict)
    stored_slices: bool = False
    fmt: DetectionFormat | None = None


@dataclass
class LoadedCase:
    """A case read from disk: the label map and the records in its coordinates.

    Attributes:
        case: The case it was read from.
        label_map: The organ label map (canonical ``[z, y, x]`` for volumes).
        records: The lesions; a 2D record's ``slice_index`` is the label map's ``z``.
        vertical: Whether the label map holds the whole volume (``False`` for a slab
            of slices, where upper/lower wording is not possible).
        key_slices: Record id -> ``slice_index`` in the whole volume, for records whose
            ``slice_index`` was shifted into a slab.
    """

    case: Case
    label_map: LabelMap
    records: list[LesionRecord]
    vertical: bool = True
    key_slices: dict[str, int | None] = field(default_factory=dict)


def read_detections(
    path: str | os.PathLike[str],
    fmt: DetectionFormat | str | None = None,
    *,
    rejects: list[RecordError] | None = None,
) -> list[LesionRecord]:
    """Read a detection file in one of the :class:`DetectionFormat` formats.

    Args:
        path: ``DL_info.csv`` (``deeplesion``), a COCO JSON (``coco``) or a box CSV (``csv``).
        fmt: The file's format; ``None`` (or ``"auto"``) detects it with
            :func:`detect_detection_format`.
        rejects: When given, records that cannot be read are appended here (each a
            :class:`~medcurric.io.RecordError` naming the file and the record) and the
            others are returned; otherwise the first bad record raises.

    Returns:
        One record per lesion box.

    Raises:
        InvalidOptionError: When ``fmt`` is not a known format.
        DataFormatError: When the file is not a detection file (an image, a volume, a binary
            file), or does not read as ``fmt``; the message names the format it looks like.
    """
    from medcurric.io.detections import read_coco_detections, read_deeplesion, read_detection_csv

    if fmt is None or str(fmt).lower() == "auto":
        kind = detect_detection_format(path)
        likely = kind
    else:
        kind = look_up_option(fmt, DetectionFormat, name="fmt")
        likely = detect_detection_format(path) if Path(path).is_file() else kind
    readers: dict[DetectionFormat, Callable[..., list[LesionRecord]]] = {
        DetectionFormat.DEEPLESION: read_deeplesion,
        DetectionFormat.COCO: read_coco_detections,
        DetectionFormat.CSV: read_detection_csv,
    }
    try:
        return readers[kind](path, rejects=rejects)
    except DataFormatError as exc:
        if likely is kind:
            raise
        raise DataFormatError(
            f"{exc} '{path}' looks like a {likely.value} file, not {kind.value}: pass "
            f"--format {likely.value} (fmt='{likely.value}')."
        ) from exc


# leading bytes of files that are not detection files, and what they are
_BINARY_MAGIC = (
    (0, b"\x1f\x8b", "a gzip-compressed file (a .nii.gz volume?)"),
    (0, b"\x89PNG", "a PNG image"),
    (0, b"\x93NUMPY", "a NumPy .npy array"),
    (0, b"PK\x03\x04", "a zip archive"),
    (128, b"DICM", "a DICOM file"),
    (344, b"n+1\x00", "a NIfTI volume"),
    (344, b"ni1\x00", "a NIfTI header"),
)


def detect_detection_format(path: str | os.PathLike[str]) -> DetectionFormat:
    r"""Tell a detection file's format from its name and first bytes.

    A JSON object or list (or a ``.json`` name) is ``coco``; a CSV whose header has
    DeepLesion's ``File_name`` and ``Bounding_boxes`` columns is ``deeplesion``; any
    other CSV is ``csv``.

    Args:
        path: The detection file.

    Returns:
        The format it looks like.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When it is not text (a NIfTI volume, an image, an archive).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "DL_info.csv").write_text("File_name,Key_slice_index,Bounding_boxes\n")
        >>> _ = (d / "boxes.csv").write_text("image,x1,y1,x2,y2\n")
        >>> _ = (d / "ann.json").write_text('{"images": []}')
        >>> [detect_detection_format(d / n).value for n in ("DL_info.csv", "boxes.csv", "ann.json")]
        ['deeplesion', 'csv', 'coco']
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected a detection file at '{p}', but it does not exist.")
    with p.open("rb") as fh:
        head = fh.read(65536)
    for offset, magic, what in _BINARY_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            raise DataFormatError(
                f"'{p}' is {what}, not a detection file. Pass the lesion boxes (DL_info.csv, "
                "a COCO JSON or a box CSV) as --detections and the organ masks as --masks DIR."
            )
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the 64 KiB boundary
            raise DataFormatError(
                f"'{p}' is not UTF-8 text (byte {exc.start}), so not a detection file; expected "
                "DL_info.csv, a COCO JSON or a box CSV."
            ) from None
        text = head[: exc.start].decode("utf-8-sig")
    if "\x00" in text:
        raise DataFormatError(
            f"'{p}' holds NUL bytes (a binary file), not a detection file; expected DL_info.csv, "
            "a COCO JSON or a box CSV."
        )
    body = text.lstrip()
    if body.startswith(("{", "[")) or p.suffix.lower() == ".json":
        return DetectionFormat.COCO
    header = {c.strip().strip('"').lower() for c in body.split("\n", 1)[0].split(",")}
    if {"file_name", "bounding_boxes"} <= header:
        return DetectionFormat.DEEPLESION
    return DetectionFormat.CSV


def _stem(image: str) -> str:
    for suffix in (".nii.gz", ".nii", ".png", ".dcm", ".npy", ".jpg", ".jpeg"):
        if image.lower().endswith(suffix):
            return image[: -len(suffix)]
    return image


def _find_mask(root: Path, rel: str) -> Path | None:
    # each candidate is checked whole: a link named "<stem>.nii.gz" may point out of the root
    for suffix in (*_NIFTI, ".dcm"):
        cand = safe_join(root, rel + suffix)
        if cand.is_file():
            return cand
    base = safe_join(root, rel)
    if base.is_dir():
        return base
    return None


def _deeplesion_mask(root: Path, record: LesionRecord) -> tuple[Path | None, int]:
    series = str(record.extra.get("series", ""))
    if not series:
        raise DataFormatError(f"Record {record.id!r} has no DeepLesion series in extra['series'].")
    key = int(record.slice_index or 0)
    safe_join(root, series)  # refuse series names that leave the root
    for f in sorted(root.glob(f"{glob.escape(series)}_*")):
        tail = f.name[len(series) + 1 :]
        for suffix in _NIFTI:
            if tail.endswith(suffix):
                lo_hi = tail[: -len(suffix)].split("-")
                if len(lo_hi) == 2 and all(t.isdigit() for t in lo_hi):
                    lo, hi = int(lo_hi[0]), int(lo_hi[1])
                    if lo <= key <= hi:
                        return safe_join(root, f"{series}_{tail}"), lo  # a link may leave root
    return _find_mask(root, series), 1


def find_cases(
    records: Sequence[LesionRecord],
    masks: str | os.PathLike[str],
    *,
    fmt: DetectionFormat | str = DetectionFormat.CSV,
    slice_order: SliceOrder | str = SliceOrder.CANONICAL,
) -> list[Case]:
    """Group ``records`` by the mask under ``masks`` each one is drawn on.

    Records whose mask cannot be found (or whose path would leave ``masks``) are
    grouped into cases with an ``error`` instead of raising, so a caller can skip or
    reject them and carry on.

    Args:
        records: Lesion records, from :func:`read_detections` or a reader of your own.
        masks: The folder of organ masks.
        fmt: The detection format the records came from (it decides the mask naming;
            the default, ``csv``, is the image-path rule ``coco`` shares).
        slice_order: What ``slice_index`` counts for ``coco`` / ``csv`` records
            (DeepLesion key slices always count along the stored axis).

    Returns:
        The cases, in the order their first record appears.

    Raises:
        MissingFileError: When ``masks`` is not a folder.
    """
    kind = look_up_option(fmt, DetectionFormat, name="fmt")
    order = look_up_option(slice_order, SliceOrder, name="slice_order")
    root = Path(masks)
    if not root.is_dir():
        raise MissingFileError(f"Expected a folder of masks at '{root}', but it does not exist.")
    deeplesion = kind is DetectionFormat.DEEPLESION
    stored = deeplesion or order is SliceOrder.STORED
    cases: dict[str, Case] = {}
    found: dict[tuple[str, int | None], tuple[Path | None, int, str | None]] = {}
    for r in records:
        cache_key = (r.image, r.slice_index if deeplesion else None)
        if cache_key not in found:
            try:
                if deeplesion:
                    path, start = _deeplesion_mask(root, r)
                else:
                    path, start = _find_mask(root, _stem(r.image)), 0
                error = (
                    None if path is not None else f"no mask for image {r.image!r} under '{root}'"
                )
            except (UnsafePathError, DataFormatError) as exc:
                path, start, error = None, 0, str(exc)
            except OSError as exc:  # a name too long for the file system, a loop of links
                name = (
                    r.image
                    if len(r.image) <= 120
                    else f"{r.image[:120]}...({len(r.image)} characters)"
                )
                path, start = None, 0
                error = f"cannot look up the mask of image {name!r} under '{root}': {exc.strerror}"
            found[cache_key] = (path, start, error)
        path, start, error = found[cache_key]
        key = str(path) if path is not None else f"missing:{r.image}"
        case = cases.setdefault(
            key, Case(key=key, records=[], mask=path, stored_slices=stored, fmt=kind)
        )
        case.records.append(r)
        case.first_slice[r.id] = start
        if error is not None:
            case.error = error
    return list(cases.values())


def _reorientation_of(path: Path) -> Reorientation | None:
    from medcurric.io.nifti import _load

    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.name.endswith(_NIFTI))
        if not files:
            return None
        path = files[0]
    if not path.name.endswith(_NIFTI):
        return None
    return _load(path)[1]


def load_case(
    case: Case, *, class_map: ClassMap | None = None, slices_only: bool = False
) -> LoadedCase:
    """Read a case's label map and put its records in the map's coordinates.

    A 2D record counted along the stored slice axis gets the canonical ``z`` (through
    the file's affine), and DeepLesion records keep their key slice in
    ``extra["key_slice"]``.

    Args:
        case: A case from :func:`find_cases` (or one holding its label map in memory).
        class_map: Names of the labels; ``None`` takes them from the files, falling back
            to TotalSegmentator's ``total`` task for a NIfTI without names.
        slices_only: For 2D records on a NIfTI file, read only the slab of slices holding
            their key slices (the records' ``slice_index`` is shifted into the slab and
            ``vertical`` is ``False``).

    Returns:
        The loaded case.

    Raises:
        MissingFileError: When the case has an ``error`` or no mask.
    """
    if case.label_map is not None:
        return LoadedCase(case, case.label_map, list(case.records))
    if case.error is not None or case.mask is None:
        raise MissingFileError(case.error or f"Case {case.key!r} has no mask and no label map.")
    from medcurric.io.nifti import read_nifti_labels
    from medcurric.io.totalseg import read_label_map

    path = case.mask
    records = list(case.records)
    if case.stored_slices and any(len(r.box) == 4 and r.slice_index is not None for r in records):
        r_or = _reorientation_of(path)
        fixed = []
        for r in records:
            if len(r.box) == 4 and r.slice_index is not None:
                k = int(r.slice_index) - case.first_slice.get(r.id, 0)
                z = r_or.canonical_z(k) if r_or is not None else k
                extra = dict(r.extra)
                if case.fmt is DetectionFormat.DEEPLESION:  # keep DeepLesion's key slice number
                    extra.setdefault("key_slice", r.slice_index)
                fixed.append(replace(r, slice_index=z, extra=extra))
            else:
                fixed.append(r)
        records = fixed
    two_d = all(len(r.box) == 4 and r.slice_index is not None for r in records)
    if slices_only and two_d and path.is_file() and path.name.endswith(_NIFTI):
        zs = [int(r.slice_index) for r in records if r.slice_index is not None]
        z0, z1 = min(zs), max(zs) + 1
        lm = read_nifti_labels(
            path, class_map=class_map, z_range=(z0, z1), fallback=ClassMap.totalsegmentator()
        )
        shifted = [replace(r, slice_index=int(r.slice_index) - z0) for r in records]  # type: ignore[arg-type]
        return LoadedCase(case, lm, shifted, False, {r.id: r.slice_index for r in records})
    return LoadedCase(case, read_label_map(path, class_map=class_map), records)


def iter_cases(
    detections: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    fmt: DetectionFormat | str | None = DetectionFormat.DEEPLESION,
    slice_order: SliceOrder | str = SliceOrder.CANONICAL,
    class_map: ClassMap | None = None,
    slices_only: bool = False,
    skip_missing: bool = False,
    rejects: list[RecordError] | None = None,
) -> Iterator[LoadedCase]:
    """Read a detection file and yield its cases one label map at a time.

    Args:
        detections: The detection file (see :func:`read_detections`).
        masks: The folder of organ masks (see :func:`find_cases`).
        fmt: The detection format; ``"auto"`` detects it (:func:`detect_detection_format`).
        slice_order: What ``slice_index`` counts for ``coco`` / ``csv`` records.
        class_map: Names of the labels (see :func:`load_case`).
        slices_only: Read only the slab of slices holding the key slices.
        skip_missing: Skip cases whose mask is missing, with a
            :class:`~medcurric.errors.MedcurricWarning`, instead of raising.
        rejects: Collects the detection records that cannot be read (see
            :func:`read_detections`) instead of raising at the first.

    Yields:
        One :class:`LoadedCase` per mask, in the order of the detection file.

    Raises:
        MissingFileError: When a mask is missing and ``skip_missing`` is false.
    """
    if fmt is None or str(fmt).lower() == "auto":  # as read_detections does
        fmt = detect_detection_format(detections)
    for case in find_cases(
        read_detections(detections, fmt, rejects=rejects), masks, fmt=fmt, slice_order=slice_order
    ):
        if case.error is not None and skip_missing:
            warnings.warn(
                f"skipping {len(case.records)} lesion(s): {case.error}",
                MedcurricWarning,
                stacklevel=2,
            )
            continue
        yield load_case(case, class_map=class_map, slices_only=slices_only)


def load_dataset(
    detections: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    fmt: DetectionFormat | str | None = DetectionFormat.DEEPLESION,
    slice_order: SliceOrder | str = SliceOrder.CANONICAL,
    class_map: ClassMap | None = None,
    slices_only: bool = False,
    skip_missing: bool = False,
    rejects: list[RecordError] | None = None,
) -> list[LoadedCase]:
    """Every case of a dataset at once (:func:`iter_cases` as a list; label maps stay in memory).

    Args:
        detections: The detection file (see :func:`read_detections`).
        masks: The folder of organ masks (see :func:`find_cases`).
        fmt: The detection format.
        slice_order: What ``slice_index`` counts for ``coco`` / ``csv`` records.
        class_map: Names of the labels (see :func:`load_case`).
        slices_only: Read only the slab of slices holding the key slices.
        skip_missing: Skip cases whose mask is missing (with a warning) instead of raising.
        rejects: Collects the detection records that cannot be read instead of raising.

    Returns:
        The loaded cases.
    """
    return list(
        iter_cases(
            detections,
            masks,
            fmt=fmt,
            slice_order=slice_order,
            class_map=class_map,
            slices_only=slices_only,
            skip_missing=skip_missing,
            rejects=rejects,
        )
    )
