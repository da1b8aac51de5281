"""NIfTI volumes and label maps through nibabel, reoriented to the canonical axes.

Uncompressed ``.nii`` files are memory-mapped: reading a label map costs nothing
until voxels are touched, and :func:`read_nifti_slices` reads only the axial
slices asked for (nibabel slices ``dataobj`` without loading the rest).
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcurric._optional import require
from medcurric.errors import DataFormatError, MissingFileError, ShapeError
from medcurric.io._zlib import inflate_into
from medcurric.io.orientation import Reorientation
from medcurric.io.records import LabelMap, Volume

if TYPE_CHECKING:
    from medcurric.vocabulary import ClassMap

__all__ = [
    "label_names_from_nifti",
    "read_nifti",
    "read_nifti_labels",
    "read_nifti_slices",
    "write_nifti",
]

_LABEL_RE = re.compile(
    r"<Label\b[^>]*?\bKey\s*=\s*\"(-?\d+)\"[^>]*>\s*(?:<!\[CDATA\[(.*?)\]\]>|([^<]*?))\s*</Label>",
    re.DOTALL,
)


def _nib() -> Any:
    return require("nibabel", feature="reading NIfTI files")


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"Expected a NIfTI file at '{p}', but no such file exists.")
    return p


def _parse_label_extension(content: bytes) -> dict[int, str] | None:
    """Label names from one header extension, or ``None`` if it holds none we know."""
    names = _parse_label_extension_cached(bytes(content))
    return None if names is None else dict(names)


@functools.lru_cache(maxsize=32)
def _parse_label_extension_cached(content: bytes) -> dict[int, str] | None:
    """:func:`_parse_label_extension`, parsed once per distinct extension (callers copy)."""
    text = content.decode("utf-8", errors="replace").strip("\x00 \n\t\r")
    if "<Label" in text:
        names: dict[int, str] = {}
        for key, cdata, plain in _LABEL_RE.findall(text):
            name = cdata if cdata else html.unescape(plain)
            if name.strip():
                names[int(key)] = name.strip()
        return names or None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(obj, dict) and isinstance(obj.get("labels"), dict):
            obj = obj["labels"]
        if isinstance(obj, dict):
            try:
                out = {int(k): str(v) for k, v in obj.items() if str(v).strip()}
            except (TypeError, ValueError):
                return None
            return out or None
    return None


def label_names_from_nifti(path: str | os.PathLike[str]) -> dict[int, str] | None:
    """Read label names stored in a NIfTI header extension, if any.

    Two layouts are recognised: the CARET-style XML ``<LabelTable>`` that
    TotalSegmentator writes into multilabel outputs (``<Label Key="5" ...>
    <![CDATA[liver]]></Label>``), and a JSON object mapping label ids to names
    (optionally under a ``"labels"`` key). The XML is read with a pattern, never
    with an XML parser that would expand entities.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``{label id: name}``, or ``None`` when no extension holds label names.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "seg.nii.gz"
        >>> write_nifti(np.zeros((2, 3, 4), np.uint8), f, label_names={5: "liver"})
        >>> label_names_from_nifti(f)
        {5: 'liver'}
    """
    nib = _nib()
    return _names_from_header(nib.load(str(_check_file(path))).header)


def _names_from_header(header: Any) -> dict[int, str] | None:
    for ext in getattr(header, "extensions", []):
        names = _parse_label_extension(ext.get_content() if hasattr(ext, "get_content") else b"")
        if names:
            return names
    return None


def _load(path: Path) -> tuple[Any, Reorientation]:
    nib = _nib()
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise DataFormatError(f"'{path}' could not be read as NIfTI by nibabel: {exc}") from exc
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise ShapeError(f"Expected a 3D NIfTI volume, but '{path}' has shape {shape}.")
    return img, Reorientation.from_affine(img.affine, shape[:3])


#: Deflate cannot expand data by more than about 1032 : 1: a gzip trailer claiming
#: more than that times the file's size is damaged (and must not reserve memory).
_MAX_DEFLATE_RATIO = 1032


def _inflate_gzip_nifti(path: Path) -> tuple[Any, np.ndarray] | None:
    """``(header, data)`` of a single-member gzip NIfTI-1 file, inflated in one pass.

    The compressed file is read whole and inflated by zlib straight into one
    preallocated, writeable buffer (zlib checks the gzip CRC-32 and length), and
    the data is a view of that buffer in the file's (Fortran) order, unscaled.
    Returns ``None`` when the fast path does not apply (not gzip, several gzip
    members, NIfTI-2, scaled data, a size that does not add up), so the caller
    falls back to nibabel.
    """
    import io

    nib = _nib()
    raw = path.read_bytes()
    if len(raw) < 18 or raw[:2] != b"\x1f\x8b":
        return None
    size = int.from_bytes(raw[-4:], "little")  # ISIZE: length mod 2**32
    if size < 352 or size > _MAX_DEFLATE_RATIO * len(raw):
        return None
    buf = np.empty(size, dtype=np.uint8)
    if not inflate_into(raw, buf):
        return None  # damaged, truncated, several members: let nibabel read it and report
    if int.from_bytes(buf[:4].tobytes(), "little") != 348 and (
        int.from_bytes(buf[:4].tobytes(), "big") != 348
    ):
        return None  # NIfTI-2 or not NIfTI-1
    little = int.from_bytes(buf[:4].tobytes(), "little") == 348
    # vox_offset (float32 at byte 108) says where the extensions end and the data begin
    vox_offset = float(buf[108:112].view("<f4" if little else ">f4")[0])
    if not (np.isfinite(vox_offset) and 0 <= vox_offset <= size):
        return None
    try:
        header = nib.Nifti1Header.from_fileobj(
            io.BytesIO(buf[: max(int(vox_offset), 348)].tobytes())
        )
    except Exception:
        return None
    if bytes(header["magic"]) != b"n+1\x00":
        return None
    slope, inter = header.get_slope_inter()
    if (slope is not None and slope != 1.0) or (inter is not None and inter != 0.0):
        return None
    dtype = header.get_data_dtype()
    shape = tuple(int(n) for n in header.get_data_shape())
    count = int(np.prod(shape)) if shape else 0
    offset = int(header.get_data_offset())
    if offset + count * dtype.itemsize > size or dtype.hasobject:
        return None
    arr = buf[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape, order="F")
    return header, arr


def _frame_index(shape: tuple[int, ...], frame: int | None, path: Path) -> tuple[Any, ...]:
    extra = shape[3:]
    if not extra or all(n == 1 for n in extra):
        return (slice(None),) * 3 + (0,) * len(extra)
    if frame is None:
        raise ShapeError(
            f"Expected a 3D volume, but '{path}' has shape {shape}; pass frame=<index> to pick one."
        )
    if len(extra) != 1 or not 0 <= frame < extra[0]:
        raise ShapeError(
            f"Expected frame in [0, {extra[0] - 1}] for shape {shape}, but got {frame}."
        )
    return (slice(None),) * 3 + (frame,)


def read_nifti(
    path: str | os.PathLike[str], *, frame: int | None = None, dtype: Any = np.float32
) -> Volume:
    """Read a NIfTI image as a canonical ``[z, y, x]`` :class:`~medcurric.io.Volume`.

    The scaling in the header (``scl_slope``/``scl_inter``) is applied, so CT
    volumes come back in HU.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        frame: For 4D files, the volume to read.
        dtype: Output dtype.

    Returns:
        The reoriented volume with spacing ``(sz, sy, sx)`` and the matching affine.

    Raises:
        MissingFileError: When the file does not exist.
        ShapeError: When the image is not 3D and no ``frame`` is given.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "ct.nii.gz"
        >>> write_nifti(np.arange(24, dtype=np.int16).reshape(2, 3, 4), f, spacing=(5.0, 0.7, 0.7))
        >>> v = read_nifti(f)
        >>> v.shape, v.spacing, float(v.array[1, 2, 3])
        ((2, 3, 4), (5.0, 0.7, 0.7), 23.0)
    """
    p = _check_file(path)
    img, r = _load(p)
    index = _frame_index(tuple(int(n) for n in img.shape), frame, p)
    data = np.asarray(img.dataobj[index], dtype=dtype)
    return Volume(
        array=np.ascontiguousarray(r.apply(data)),
        spacing=r.spacing(),
        affine=r.affine,
        source=str(p),
    )


def _as_labels(data: Any, path: Path) -> np.ndarray:
    arr = np.asanyarray(data)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return arr
    # Float-stored label maps (a common export): accept exact integers only.
    rounded = np.rint(arr)
    if not np.array_equal(rounded, arr):
        raise DataFormatError(
            f"Expected integer labels in '{path}', but it holds non-integer values "
            f"(dtype {arr.dtype}). Pass a label map, not an image or a probability map."
        )
    return rounded.astype(np.int32)


def _resolve_class_map(
    names: Mapping[int, str] | None,
    class_map: ClassMap | None,
    labels_present: Iterable[int] | None,
) -> ClassMap:
    from medcurric.io._classmaps import class_map_from_names

    if class_map is not None:
        return class_map
    if names:
        return class_map_from_names(names)
    present = sorted(int(v) for v in (labels_present if labels_present is not None else []) if v)
    return class_map_from_names({v: f"label_{v}" for v in present})


def _relabel(
    data: np.ndarray, names: Mapping[int, str], class_map: ClassMap, path: Path
) -> np.ndarray:
    """Map the file's label ids to ``class_map``'s ids through the names in its header."""
    from medcurric.io._classmaps import lookup_label

    mapping = {k: lookup_label(class_map, v, where=str(path)) for k, v in names.items() if k > 0}
    if all(k == v for k, v in mapping.items()):
        return data
    top = max(int(data.max(initial=0)), *mapping)
    lut = np.zeros(top + 1, dtype=np.uint8 if class_map.max_label < 256 else np.uint16)
    for k, v in mapping.items():
        lut[k] = v
    return lut[np.asarray(data)]


def read_nifti_labels(
    path: str | os.PathLike[str],
    *,
    class_map: ClassMap | None = None,
    mmap: bool = True,
    z_range: tuple[int, int] | None = None,
    fallback: ClassMap | None = None,
) -> LabelMap:
    """Read a NIfTI label map as a canonical ``[z, y, x]`` :class:`~medcurric.io.LabelMap`.

    Label names come from a header extension when the file has one (see
    :func:`label_names_from_nifti`), else from ``class_map``, else each label
    ``n`` present is named ``"label_n"``. With both an extension and
    ``class_map``, the file's labels are renumbered to ``class_map``'s ids by
    name (a name it lacks raises). Uncompressed files are memory-mapped (the array is a view on
    the file) when ``mmap`` is true and the file stores integers unscaled.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        class_map: Names of the labels (for example ``ClassMap.totalsegmentator()``).
        mmap: Memory-map uncompressed files.
        z_range: ``(z0, z1)``: read only the canonical slices ``z0 <= z < z1`` (one
            slice of the file's data proxy, so an uncompressed file is read for those
            slices only); the affine is shifted so voxel ``z = 0`` is slice ``z0``.
        fallback: Class map used when neither ``class_map`` nor the header names the labels.

    Returns:
        The reoriented label map (or slab) with spacing and affine.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When the file holds non-integer values.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "seg.nii"
        >>> a = np.zeros((2, 3, 4), np.uint8); a[1, 1, 2] = 5
        >>> write_nifti(a, f, label_names={5: "liver"})
        >>> lm = read_nifti_labels(f)
        >>> lm.array.shape, int(lm.array[1, 1, 2]), lm.class_map.name_of(5)
        ((2, 3, 4), 5, 'liver')
    """
    p = _check_file(path)
    nib = _nib()
    fast = (
        _inflate_gzip_nifti(p) if z_range is None and p.name.lower().endswith(".nii.gz") else None
    )
    if fast is not None:  # whole gzip file: one inflate into one buffer, no second copy
        header, dataobj = fast
        img_affine = header.get_best_affine()
    else:
        try:
            img = nib.load(str(p), mmap=mmap)
        except Exception as exc:
            raise DataFormatError(f"'{p}' could not be read as NIfTI by nibabel: {exc}") from exc
        header, dataobj, img_affine = img.header, img.dataobj, img.affine
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) != 3 and not (len(shape) > 3 and all(n == 1 for n in shape[3:])):
        raise ShapeError(f"Expected a 3D label map, but '{p}' has shape {shape}.")
    r = Reorientation.from_affine(img_affine, shape[:3])
    affine = r.affine
    if z_range is None:
        data = _as_labels(dataobj, p)
        if data.ndim > 3:
            data = data.reshape(shape[:3])
        canonical = r.apply(data)
    else:
        z0, z1 = int(z_range[0]), int(z_range[1])
        nz = r.canonical_shape[0]
        if not 0 <= z0 < z1 <= nz:
            raise ShapeError(f"Expected 0 <= z0 < z1 <= {nz} for '{p}', but got z_range {z_range}.")
        axis, first = r.stored_slice(z0)
        _, last = r.stored_slice(z1 - 1)
        lo, hi = min(first, last), max(first, last) + 1
        index: list[Any] = [slice(None)] * 3 + [0] * (len(shape) - 3)
        index[axis] = slice(lo, hi)
        data = _as_labels(dataobj[tuple(index)], p)
        canonical = r.apply_slab(data)
        shift = np.eye(4)
        shift[2, 3] = z0
        affine = affine @ shift
    names = _names_from_header(header)
    if class_map is None and not names and fallback is not None:
        class_map = fallback
    if class_map is not None and names:
        canonical = _relabel(canonical, names, class_map, p)
    present = np.unique(canonical) if class_map is None and not names else None
    return LabelMap(
        array=canonical,
        class_map=_resolve_class_map(names, class_map, present),
        spacing=r.spacing(),
        affine=affine,
        source=str(p),
    )


def read_nifti_slices(
    path: str | os.PathLike[str], z: Sequence[int] | int
) -> tuple[dict[int, np.ndarray], Reorientation]:
    """Read only some canonical axial slices of a NIfTI file.

    Each slice is taken through nibabel's array proxy, so an uncompressed file
    is read for those slices only (a compressed one is decompressed up to them).

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        z: Canonical slice indices (``z`` runs towards superior).

    Returns:
        ``({z: slice [y, x]}, reorientation)``; the reorientation carries the
        canonical affine, spacing and shape.

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "seg.nii"
        >>> a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
        >>> write_nifti(a, f)
        >>> slices, r = read_nifti_slices(f, [1])
        >>> bool((slices[1] == a[1]).all()), r.canonical_shape
        (True, (2, 3, 4))
    """
    p = _check_file(path)
    img, r = _load(p)
    zs = [z] if isinstance(z, (int, np.integer)) else list(z)
    nz = r.canonical_shape[0]
    out: dict[int, np.ndarray] = {}
    extra = (0,) * (len(img.shape) - 3)
    for zi in zs:
        zi = int(zi)
        if not 0 <= zi < nz:
            raise ShapeError(f"Expected slice indices in [0, {nz - 1}] for '{p}', but got {zi}.")
        axis, index = r.stored_slice(zi)
        sl: list[Any] = [slice(None)] * 3
        sl[axis] = slice(index, index + 1)
        block = np.asanyarray(img.dataobj[(*sl, *extra)])
        out[zi] = np.ascontiguousarray(r.apply_slab(block)[0])
    return out, r


def _label_extension_xml(names: Mapping[int, str]) -> bytes:
    body = "".join(
        f'<Label Key="{int(k)}" Red="1" Green="0" Blue="0" Alpha="1">'
        f"<![CDATA[{str(v).replace(']]>', ']] >')}]]></Label>\n"
        for k, v in sorted(names.items())
    )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?> <CaretExtension>   '
        '<VolumeInformation Index="0">   <LabelTable>\n'
        + body
        + "  </LabelTable>  <VolumeType><![CDATA[Label]]></VolumeType>   "
        "</VolumeInformation></CaretExtension>\n"
    )
    return xml.encode("utf-8")


def write_nifti(
    array: np.ndarray,
    path: str | os.PathLike[str],
    *,
    affine: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    label_names: Mapping[int, str] | None = None,
) -> None:
    """Write a canonical ``[z, y, x]`` array to NIfTI (the inverse of the readers).

    The file stores voxels ``(i, j, k) = (x, y, z)`` with ``affine``; without one,
    the affine is ``diag(-sx, -sy, sz)`` (x towards left, y towards posterior).
    ``label_names`` are written as a TotalSegmentator-style header extension.

    Args:
        array: ``[z, y, x]`` voxels.
        path: Output ``.nii`` or ``.nii.gz`` file.
        affine: Canonical affine (voxel ``(x, y, z, 1)`` -> RAS+ mm).
        spacing: ``(sz, sy, sx)`` in mm, used when ``affine`` is not given (default 1 mm).
        label_names: ``{label id: name}`` to store in the header.
    """
    nib = _nib()
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ShapeError(f"Expected a [z, y, x] array, but got shape {arr.shape}.")
    if affine is None:
        sz, sy, sx = (1.0, 1.0, 1.0) if spacing is None else (float(s) for s in spacing)
        affine = np.diag([-sx, -sy, sz, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), np.asarray(affine, float))
    if label_names:
        img.header.extensions.append(
            nib.nifti1.Nifti1Extension(0, _label_extension_xml(label_names))
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
