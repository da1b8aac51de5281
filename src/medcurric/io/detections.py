"""Detection datasets -> :class:`~medcurric.io.LesionRecord` lists.

Three formats are read: DeepLesion's ``DL_info.csv``, COCO-style detection JSON
and a plain CSV of (image, box, label) rows (VinDr-CXR column names are
accepted too). Every record gets a stable id derived from its source row, so a
rerun over the same file gives the same ids. All text read from the files is
kept as data.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcurric.errors import DataFormatError, MissingFileError
from medcurric.io.records import LesionRecord

__all__ = [
    "DEEPLESION_TYPES",
    "RecordError",
    "read_coco_detections",
    "read_deeplesion",
    "read_detection_csv",
]

#: DeepLesion ``Coarse_lesion_type`` codes; ``-1`` (every train-split lesion) is unknown.
DEEPLESION_TYPES: dict[int, str] = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}

_SPLITS = {1: "train", 2: "val", 3: "test"}


@dataclass(frozen=True)
class RecordError:
    """One record of a detection file that could not be read, and why.

    Readers given a ``rejects`` list append one of these per bad record and carry on
    with the next record; without it they raise the :class:`DataFormatError`.

    Attributes:
        path: The detection file.
        where: The record within it (``"line 7"``, ``"annotations[3]"``).
        id: The record's id when it could be worked out, else ``"<file>:<where>"``.
        reason: The error message, naming the file and the record.
        image: The record's image, when it could be read.
    """

    path: str
    where: str
    id: str
    reason: str
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The rejects-file line: ``id``, ``image``, ``error``, ``reason``, ``file``, ``where``."""
        return {
            "id": self.id,
            "image": self.image,
            "error": "DataFormatError",
            "reason": self.reason,
            "file": self.path,
            "where": self.where,
        }


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a message (a 5000-character name stays readable)."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


class _Ids:
    """Record ids handed out so far: a repeated id is an error naming where it first came."""

    def __init__(self) -> None:
        self.first: dict[str, str] = {}

    def claim(self, rid: str, where: str) -> None:
        if rid in self.first:
            raise DataFormatError(
                f"{where}: expected a unique record id, but {_short(rid)!r} was already "
                f"used at {self.first[rid]}."
            )
        self.first[rid] = where


def _checked(record: LesionRecord, where: str) -> LesionRecord:
    """The record, or a ``DataFormatError`` when its text cannot be written as UTF-8 JSON."""
    try:
        json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataFormatError(
            f"{where}: expected UTF-8 text, but the record holds a lone surrogate "
            f"({exc.object[exc.start : exc.end]!r})."
        ) from exc
    except ValueError as exc:
        raise DataFormatError(f"{where}: expected finite numbers ({exc}).") from exc
    return record


def _collect(
    parse: Callable[[], LesionRecord | None],
    *,
    path: Path,
    where: str,
    records: list[LesionRecord],
    rejects: list[RecordError] | None,
    ids: _Ids,
) -> None:
    """Parse one record into ``records``; a bad one raises, or goes to ``rejects`` when given.

    ``parse`` returns ``None`` for a row that holds no lesion. Values of the wrong type
    (``TypeError``, ``ValueError``) count as format errors of that record. A record whose
    id was used before is rejected under ``"<id>@<where>"``, so both stay traceable.
    """
    label = f"{path}: {where}"
    record = None
    try:
        try:
            record = parse()
        except DataFormatError:
            raise
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise DataFormatError(f"{label}: a value has the wrong type or form ({exc}).") from exc
        if record is None:
            return
        record = _checked(record, label)
        ids.claim(record.id, label)
    except DataFormatError as exc:
        if rejects is None:
            raise
        if record is None:
            rid, image = f"{path.name}:{where}", None
        else:  # parsed but unusable (repeated id, lone surrogate): keep its id traceable
            rid, image = f"{_short(record.id)}@{where}", _short(record.image)
        rejects.append(RecordError(str(path), where, rid, str(exc), image))
        return
    records.append(record)


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected {what} at '{p}', but no such file exists.")
    return p


def _numbers(text: str, *, where: str, n: int | None = None) -> list[float]:
    """Parse ``"1.5, 2, 3"`` into floats; ``n`` checks the count."""
    parts = [t for t in str(text).replace(";", ",").split(",") if t.strip()]
    try:
        values = [float(t) for t in parts]
    except ValueError as exc:
        raise DataFormatError(
            f"{where}: expected comma-separated numbers, but got {text!r}."
        ) from exc
    if n is not None and len(values) != n:
        raise DataFormatError(f"{where}: expected {n} numbers, but got {len(values)} in {text!r}.")
    return _finite(values, where=where)


def _finite(values: list[float], *, where: str) -> list[float]:
    """The values, or a ``DataFormatError`` naming the record when one is NaN or infinite."""
    if not all(math.isfinite(v) for v in values):
        raise DataFormatError(f"{where}: expected finite numbers, but got {values}.")
    return values


def _read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise DataFormatError(f"{path}: expected a header row, but the file is empty.")
        for number, row in enumerate(reader, start=2):
            yield number, {(k or "").strip(): (v or "").strip() for k, v in row.items()}


def read_deeplesion(
    path: str | os.PathLike[str],
    *,
    image_root: str = "Images_png",
    rejects: list[RecordError] | None = None,
) -> list[LesionRecord]:
    r"""Read DeepLesion's ``DL_info.csv``.

    Each row is one lesion on a key slice. ``File_name`` ``"000001_01_01_109.png"``
    names the series folder ``000001_01_01`` and the slice file ``109.png``; the
    record's ``image`` is ``"<image_root>/000001_01_01/109.png"``. Ids are
    ``"<File_name stem>#<n>"`` where ``n`` counts the rows of the same key slice
    in file order (a slice can carry several lesions).

    ``slice_index`` is DeepLesion's ``Key_slice_index``, the slice *number* within
    the series (as in the PNG file names), not an index into a reoriented
    volume; ``extra["slice_range"]`` gives the numbers of the first and last slice
    of the sub-volume around it (the files ``DL_save_nifti.py`` writes one NIfTI
    for). ``spacing`` is ``(sz, sy, sx)`` from ``Spacing_mm_px_`` (given there as
    ``"x, y, z"``). ``Coarse_lesion_type`` -1 (unknown) reads ``"lesion"``.

    Args:
        path: The ``DL_info.csv`` file.
        image_root: Folder prefix of the slice PNGs in ``image``.
        rejects: When given, a row that cannot be read (a NaN box, a repeated id, text
            that is not UTF-8) is appended here as a :class:`RecordError` and skipped;
            otherwise it raises.

    Returns:
        One record per row, in file order.

    Raises:
        MissingFileError: When ``path`` does not exist.
        DataFormatError: When a required column is missing, or a value cannot be parsed
            and ``rejects`` is ``None``.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "DL_info.csv"
        >>> _ = f.write_text(
        ...     "File_name,Key_slice_index,Bounding_boxes,Coarse_lesion_type,Spacing_mm_px_,"
        ...     "DICOM_windows,Train_Val_Test,Slice_range\n"
        ...     '000001_01_01_109.png,109,"233.5, 95.3, 248.1, 110.2",4,"0.78, 0.78, 5",'
        ...     '"-175, 275",3,"103, 115"\n')
        >>> r = read_deeplesion(f)[0]
        >>> r.id, r.image, r.lesion_type, r.slice_index
        ('000001_01_01_109#0', 'Images_png/000001_01_01/109.png', 'liver', 109)
        >>> r.spacing, r.window, r.split
        ((5.0, 0.78, 0.78), (-175.0, 275.0), 'test')
    """
    p = _existing(path, "DeepLesion's DL_info.csv")
    required = ("File_name", "Key_slice_index", "Bounding_boxes")
    records: list[LesionRecord] = []
    counts: dict[str, int] = {}
    ids = _Ids()
    for number, row in _read_rows(p):
        missing = [c for c in required if c not in row]
        if missing:
            raise DataFormatError(
                f"{p}: expected DeepLesion columns {list(required)}, but {missing} are missing; "
                f"found {sorted(row)}."
            )

        def parse(number: int = number, row: dict[str, str] = row) -> LesionRecord:
            where = f"{p}:{number}"
            name = row["File_name"]
            stem = name[:-4] if name.lower().endswith(".png") else name
            n = counts.get(stem, 0)  # counted first, so a bad row does not shift the next ids
            counts[stem] = n + 1
            series, _, slice_no = stem.rpartition("_")
            if not series or not slice_no.isdigit():
                raise DataFormatError(
                    f"{where}: expected File_name like '000001_01_01_109.png', but got {name!r}."
                )
            try:
                key = int(float(row["Key_slice_index"]))
            except (ValueError, OverflowError) as exc:
                raise DataFormatError(
                    f"{where}: expected an integer Key_slice_index, but got {row['Key_slice_index']!r}."
                ) from exc
            box = _numbers(row["Bounding_boxes"], where=f"{where} Bounding_boxes", n=4)
            code = -1
            if row.get("Coarse_lesion_type"):
                try:
                    code = int(float(row["Coarse_lesion_type"]))
                except (ValueError, OverflowError) as exc:
                    raise DataFormatError(
                        f"{where}: expected an integer Coarse_lesion_type (1..8 or -1), "
                        f"but got {row['Coarse_lesion_type']!r}."
                    ) from exc
            spacing = None
            if row.get("Spacing_mm_px_"):
                sx, sy, sz = _numbers(row["Spacing_mm_px_"], where=f"{where} Spacing_mm_px_", n=3)
                spacing = (sz, sy, sx)
            window = None
            if row.get("DICOM_windows"):
                lo, hi = _numbers(row["DICOM_windows"], where=f"{where} DICOM_windows", n=2)
                window = (lo, hi)
            split = None
            if row.get("Train_Val_Test"):
                code_text = str(row["Train_Val_Test"]).strip()
                split = _SPLITS.get(
                    int(code_text) if code_text.isascii() and code_text.isdigit() else -1, code_text
                )
            extra: dict[str, Any] = {"series": series, "coarse_type": code, "file_name": name}
            if row.get("Slice_range"):
                lo_s, hi_s = _numbers(row["Slice_range"], where=f"{where} Slice_range", n=2)
                extra["slice_range"] = [int(lo_s), int(hi_s)]
            for column, keyname in (
                ("Patient_index", "patient_index"),
                ("Study_index", "study_index"),
                ("Series_ID", "series_id"),
                ("Possibly_noisy", "possibly_noisy"),
                ("Patient_gender", "patient_gender"),
                ("Patient_age", "patient_age"),
            ):
                if row.get(column):
                    extra[keyname] = row[column]
            for column, keyname in (
                ("Measurement_coordinates", "measurement_coordinates"),
                ("Lesion_diameters_Pixel_", "lesion_diameters_px"),
                ("Normalized_lesion_location", "normalized_location"),
                ("Image_size", "image_size"),
            ):
                if row.get(column):
                    extra[keyname] = _numbers(row[column], where=f"{where} {column}")
            return LesionRecord(
                id=f"{stem}#{n}",
                image=f"{image_root}/{series}/{slice_no}.png"
                if image_root
                else f"{series}/{slice_no}.png",
                box=tuple(box),
                lesion_type=DEEPLESION_TYPES.get(code, "lesion"),
                slice_index=key,
                spacing=spacing,
                modality="CT",
                window=window,
                split=split,
                source="deeplesion",
                extra=extra,
            )

        _collect(parse, path=p, where=f"line {number}", records=records, rejects=rejects, ids=ids)
    return records


def read_coco_detections(
    path: str | os.PathLike[str],
    *,
    modality: str = "CT",
    source: str = "coco",
    rejects: list[RecordError] | None = None,
) -> list[LesionRecord]:
    """Read a COCO-style detection JSON (``images``, ``annotations``, ``categories``).

    ``bbox`` is COCO's ``[x, y, width, height]`` and is converted to xyxy. The
    record id is ``"<image file_name>#<annotation id>"``. Optional image keys
    ``slice_index`` and ``spacing`` (per array axis, mm) and annotation key
    ``slice_index`` are used when present; other annotation keys go to ``extra``.

    Args:
        path: The JSON file.
        modality: Modality written into each record.
        source: Name written into each record's ``source``.
        rejects: When given, an annotation that cannot be read (a NaN ``bbox``, an unknown
            image, a repeated id, text that is not UTF-8) is appended here as a
            :class:`RecordError` and skipped; otherwise it raises.

    Returns:
        One record per annotation, in file order.

    Raises:
        MissingFileError: When ``path`` does not exist.
        DataFormatError: When the structure is not COCO detection JSON, or an annotation
            cannot be read and ``rejects`` is ``None``.

    Examples:
        >>> import json, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "det.json"
        >>> _ = f.write_text(json.dumps({
        ...     "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        ...     "annotations": [{"id": 7, "image_id": 1, "bbox": [10, 20, 5, 8], "category_id": 2}],
        ...     "categories": [{"id": 2, "name": "nodule"}]}))
        >>> r = read_coco_detections(f)[0]
        >>> r.id, r.box, r.lesion_type
        ('a.png#7', (10.0, 20.0, 15.0, 28.0), 'nodule')
    """
    p = _existing(path, "a COCO detection JSON file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{p}: expected COCO JSON, but it does not parse ({exc}).") from exc
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise DataFormatError(
            f"{p}: expected a JSON object with 'images' and 'annotations' (COCO detection format)."
        )
    images = {im["id"]: im for im in data["images"] if isinstance(im, dict) and "id" in im}
    categories = {
        c["id"]: str(c.get("name", c["id"]))
        for c in data.get("categories", [])
        if isinstance(c, dict) and "id" in c
    }
    records: list[LesionRecord] = []
    ids = _Ids()
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise DataFormatError(
            f"{p}: expected 'annotations' to be a list, but got {type(annotations).__name__}."
        )
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        parse = functools.partial(
            _coco_record, ann, f"{p}: {where}", i, images, categories, modality, source
        )
        _collect(parse, path=p, where=where, records=records, rejects=rejects, ids=ids)
    return records


def _coco_record(
    ann: Any,
    where: str,
    i: int,
    images: dict[Any, dict[str, Any]],
    categories: dict[Any, str],
    modality: str,
    source: str,
) -> LesionRecord:
    """One COCO annotation as a record; ``where`` names the file and the annotation."""
    if not isinstance(ann, dict) or "bbox" not in ann or "image_id" not in ann:
        raise DataFormatError(f"{where}: expected an object with 'image_id' and 'bbox'.")
    image = images.get(ann["image_id"])
    if image is None:
        raise DataFormatError(f"{where}: image_id {ann['image_id']!r:.80} is not in 'images'.")
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise DataFormatError(
            f"{where}: expected bbox [x, y, width, height], but got {bbox!r:.200}."
        )
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError) as exc:
        raise DataFormatError(
            f"{where}: expected bbox [x, y, width, height] numbers, but got {bbox!r:.200}."
        ) from exc
    x, y, w, h = _finite(values, where=f"{where} bbox")
    file_name = str(image.get("file_name", image["id"]))
    ann_id = ann.get("id", i)
    label = categories.get(ann.get("category_id"), "lesion") if "category_id" in ann else "lesion"
    spacing = image.get("spacing")
    slice_index = ann.get("slice_index", image.get("slice_index"))
    extra = {
        k: v
        for k, v in ann.items()
        if k not in {"id", "image_id", "bbox", "category_id", "slice_index", "segmentation"}
    }
    return LesionRecord(
        id=f"{file_name}#{ann_id}",
        image=file_name,
        box=(x, y, x + w, y + h),
        lesion_type=label or "lesion",
        slice_index=None if slice_index is None else int(slice_index),
        spacing=None
        if spacing is None
        else tuple(_finite([float(s) for s in spacing], where=f"{where} spacing")),
        modality=str(image.get("modality", modality)),
        source=source,
        extra=extra,
    )


_CSV_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_id", "file_name", "filename", "path"),
    "x1": ("x1", "x_min", "xmin"),
    "y1": ("y1", "y_min", "ymin"),
    "x2": ("x2", "x_max", "xmax"),
    "y2": ("y2", "y_max", "ymax"),
    "label": ("label", "class_name", "lesion_type", "class"),
}


def read_detection_csv(
    path: str | os.PathLike[str],
    *,
    modality: str = "CT",
    source: str = "csv",
    skip_labels: tuple[str, ...] = ("No finding",),
    rejects: list[RecordError] | None = None,
) -> list[LesionRecord]:
    r"""Read a plain CSV of lesion boxes, one row per lesion.

    Columns (header names, case-sensitive): ``image`` (or ``image_id``,
    ``file_name``), ``x1, y1, x2, y2`` (or VinDr's ``x_min, y_min, x_max, y_max``)
    in pixels, ``label`` (or ``class_name``); optional ``id``, ``slice_index``,
    ``z1, z2`` (a 3D box in voxels), ``spacing`` (``"sz, sy, sx"`` or ``"sy, sx"``)
    and ``modality``. Other columns go to ``extra``. Rows without a box (VinDr's
    "No finding") and rows whose label is in ``skip_labels`` are skipped. Without
    an ``id`` column, ids are ``"<image>#<n>"``, counting the rows of an image; an id
    given twice, or an automatic id equal to a given one, is an error of the later row.

    Args:
        path: The CSV file.
        modality: Modality for rows without a ``modality`` column.
        source: Name written into each record's ``source``.
        skip_labels: Labels that mean "no lesion".
        rejects: When given, a row that cannot be read (a non-finite box, a repeated or
            colliding id, text that is not UTF-8) is appended here as a
            :class:`RecordError` and skipped; otherwise it raises.

    Returns:
        One record per lesion row, in file order.

    Raises:
        MissingFileError: When ``path`` does not exist.
        DataFormatError: When a required column is missing, or a value cannot be parsed
            and ``rejects`` is ``None``.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "boxes.csv"
        >>> _ = f.write_text("image,x1,y1,x2,y2,label\ncase1,1,2,11,12,cyst\ncase1,5,5,9,9,\n")
        >>> [(r.id, r.box, r.lesion_type) for r in read_detection_csv(f)]
        [('case1#0', (1.0, 2.0, 11.0, 12.0), 'cyst'), ('case1#1', (5.0, 5.0, 9.0, 9.0), 'lesion')]
    """
    p = _existing(path, "a detection CSV file")
    records: list[LesionRecord] = []
    counts: dict[str, int] = {}
    ids = _Ids()
    columns: dict[str, str] | None = None
    skip = {s.lower() for s in skip_labels}
    for number, row in _read_rows(p):
        where = f"{p}:{number}"
        if columns is None:
            columns = {}
            for key, aliases in _CSV_ALIASES.items():
                for a in aliases:
                    if a in row:
                        columns[key] = a
                        break
            missing = [k for k in ("image", "x1", "y1", "x2", "y2") if k not in columns]
            if missing:
                raise DataFormatError(
                    f"{p}: expected columns image, x1, y1, x2, y2 (or VinDr's image_id, x_min, "
                    f"y_min, x_max, y_max), but {missing} are missing; found {sorted(row)}."
                )
        image = row[columns["image"]]
        label = row.get(columns.get("label", "label"), "") or "lesion"
        if label.lower() in skip:
            continue
        raw = [row[columns[k]] for k in ("x1", "y1", "x2", "y2")]
        if any(v == "" or v.lower() == "nan" for v in raw):
            continue
        if row.get("id"):
            rid = row["id"]
        else:  # counted before parsing, so a bad row does not shift the next ids
            n = counts.get(image, 0)
            counts[image] = n + 1
            rid = f"{image}#{n}"
        parse = functools.partial(
            _csv_record, row, where, columns, image, label, raw, rid, modality, source
        )
        _collect(parse, path=p, where=f"line {number}", records=records, rejects=rejects, ids=ids)
    return records


def _csv_record(
    row: dict[str, str],
    where: str,
    columns: dict[str, str],
    image: str,
    label: str,
    raw: list[str],
    rid: str,
    modality: str,
    source: str,
) -> LesionRecord:
    """One CSV row as a record; ``where`` names the file and the line."""
    try:
        x1, y1, x2, y2 = (float(v) for v in raw)
        box: tuple[float, ...] = (x1, y1, x2, y2)
        if row.get("z1", "") != "" and row.get("z2", "") != "":
            box = (x1, y1, float(row["z1"]), x2, y2, float(row["z2"]))
    except ValueError as exc:
        raise DataFormatError(f"{where}: expected numeric box coordinates, but got {raw}.") from exc
    if not all(math.isfinite(v) for v in box):
        raise DataFormatError(f"{where}: expected finite box coordinates, but got {box}.")
    spacing = (
        tuple(_numbers(row["spacing"], where=f"{where} spacing")) if row.get("spacing") else None
    )
    slice_index = int(float(row["slice_index"])) if row.get("slice_index") else None
    used = {columns[k] for k in columns} | {
        "id",
        "z1",
        "z2",
        "spacing",
        "slice_index",
        "modality",
    }
    extra = {k: v for k, v in row.items() if k not in used and k}
    return LesionRecord(
        id=rid,
        image=image,
        box=box,
        lesion_type=label,
        slice_index=slice_index,
        spacing=spacing,
        modality=row.get("modality") or modality,
        source=source,
        extra=extra,
    )
