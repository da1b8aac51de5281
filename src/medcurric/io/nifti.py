"""NIfTI volumes and label maps through nibabel, reoriented to the canonical axes.

Uncompressed ``.nii`` files are memory-mapped: reading a label map costs nothing
until voxels are touched, and :func:`read_nifti_slices` reads only the axial
slices asked for (nibabel slices ``dataobj`` without loading the rest).

``.nii.gz`` files are inflated with isal (``pip install 'medcurric[io]'``; stdlib
:mod:`zlib` where it is missing), header first: nibabel's header class parses it,
the size it declares (``vox_offset`` plus dims x bytes per voxel, at most
:data:`MAX_DECLARED_BYTES`) is reserved, and the data are inflated into exactly
that. A stream that is truncated, damaged, or holds more than declared (trailing
data, a decompression bomb) raises :class:`~medcurric.errors.DataFormatError`
naming the file, without inflating more than one byte past the declared size.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcurric._optional import require
from medcurric.errors import DataFormatError, MissingFileError, ShapeError
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

# The Key attribute of one <Label ...> tag (matched within the tag's text only).
_KEY_RE = re.compile(r"\bKey\s*=\s*\"(-?\d{1,18})\"")
_SPACE_RE = re.compile(r"\s*")


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
        names = dict(_xml_labels(text))
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


def _xml_labels(text: str) -> Iterator[tuple[int, str]]:
    """``(key, name)`` of each ``<Label Key="k">name</Label>`` (name plain or CDATA) in ``text``.

    One forward scan with ``str.find``: every search starts where the last one ended, so
    the time is linear in the text (a backtracking pattern was quadratic on untrusted headers).
    """
    pos = 0
    while True:
        start = text.find("<Label", pos)
        if start < 0:
            return
        after = start + len("<Label")
        if after < len(text) and (text[after].isalnum() or text[after] == "_"):
            pos = after  # <LabelTable> and the like
            continue
        close = text.find(">", after)
        if close < 0:
            return
        pos = close + 1
        key = _KEY_RE.search(text, after, close)
        if key is None:
            continue
        body = _SPACE_RE.match(text, pos).end()  # type: ignore[union-attr]  # \s* always matches
        if text.startswith("<![CDATA[", body):
            stop = text.find("]]>", body + len("<![CDATA["))
            if stop < 0:
                return
            name = text[body + len("<![CDATA[") : stop]
            pos = _SPACE_RE.match(text, stop + len("]]>")).end()  # type: ignore[union-attr]
        else:
            stop = text.find("<", body)
            if stop < 0:
                return
            name = html.unescape(text[body:stop])
            pos = stop
        if text.startswith("</Label>", pos):
            pos += len("</Label>")
            if name.strip():
                yield int(key.group(1)), name.strip()


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
    p = _check_file(path)
    if p.name.lower().endswith(".nii.gz"):  # the header only
        stream = _GzipStream(p.read_bytes(), p, _inflater())
        return _names_from_header(_gzip_header(stream, p)[0])
    try:
        header = _nib().load(str(p)).header
    except Exception as exc:
        raise DataFormatError(f"'{p}' could not be read as NIfTI by nibabel: {exc}") from exc
    return _names_from_header(header)


def _names_from_header(header: Any) -> dict[int, str] | None:
    for ext in getattr(header, "extensions", []):
        names = _parse_label_extension(ext.get_content() if hasattr(ext, "get_content") else b"")
        if names:
            return names
    return None


def _open(path: Path, *, mmap: bool = True) -> tuple[Any, Any, np.ndarray]:
    """``(header, data, affine)`` of a NIfTI file, the data scaled as nibabel scales it.

    ``.nii.gz`` files are inflated whole by :func:`_inflate_gzip_nifti` (checked
    against their declared size); other files give nibabel's lazy array proxy.
    """
    if path.name.lower().endswith(".nii.gz"):
        header, raw = _inflate_gzip_nifti(path)
        try:  # nibabel checks the scaling and the affine only here (scl_inter = NaN...)
            return header, _scaled(header, raw), header.get_best_affine()
        except Exception as exc:
            if isinstance(exc, MemoryError):
                raise
            raise DataFormatError(f"'{path}' has a NIfTI header nibabel refuses: {exc}") from exc
    nib = _nib()
    try:
        img = nib.load(str(path), mmap=mmap)
    except Exception as exc:
        raise DataFormatError(f"'{path}' could not be read as NIfTI by nibabel: {exc}") from exc
    return img.header, img.dataobj, img.affine


def _load(path: Path) -> tuple[Any, Reorientation]:
    """The lazy nibabel image and its reorientation (only the header is read here)."""
    nib = _nib()
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise DataFormatError(f"'{path}' could not be read as NIfTI by nibabel: {exc}") from exc
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise ShapeError(f"Expected a 3D NIfTI volume, but '{path}' has shape {shape}.")
    return img, Reorientation.from_affine(img.affine, shape[:3])


def _take(dataobj: Any, index: tuple[Any, ...] | None, path: Path) -> np.ndarray:
    """``dataobj[index]`` (all of it for ``None``) as an array; a file cut short is named."""
    try:
        return np.asanyarray(dataobj if index is None else dataobj[index])
    except MemoryError:
        raise
    except Exception as exc:  # a file cut short, a damaged stream, a scaling nibabel refuses
        raise DataFormatError(f"'{path}' could not be read as NIfTI by nibabel: {exc}") from exc


#: Largest header-plus-data size (``vox_offset`` + dims x bytes per voxel) a gzip NIfTI
#: may declare before it is inflated; raise it to read larger files on purpose.
MAX_DECLARED_BYTES = 4 << 30
#: Compressed input fed to the inflater per call, and output asked of it per call:
#: small steps keep both in cache and bound what one call can produce.
_IN_STEP = 1 << 18
_OUT_STEP = 1 << 18


@functools.cache
def _inflater() -> Any:
    """The zlib-compatible module that inflates gzip NIfTI: isal where installed, else zlib."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib
    return isal_zlib


class _GzipStream:
    """The members of one gzip file inflated in order, never more output than asked for.

    Zero bytes between or after members are skipped, as :mod:`gzip` does; anything
    else that is not a gzip member, a failed CRC or a member cut short raises
    :class:`DataFormatError` naming the file.
    """

    def __init__(self, raw: bytes, path: Path, lib: Any) -> None:
        self._raw = memoryview(raw)
        self._at = 0  # next byte of raw to feed
        self._pending: bytes | memoryview = b""  # fed to the inflater, not yet consumed
        self._path = path
        self._lib = lib
        self._member: Any = None  # the decompressobj of the member being read
        self._done = False

    def _feed(self) -> bool:
        """Move the next slice of the file into ``_pending``; ``False`` at its end."""
        if self._at >= len(self._raw):
            return False
        self._pending = self._raw[self._at : self._at + _IN_STEP]
        self._at += len(self._pending)
        return True

    def _next_member(self) -> bool:
        """Start the member after the current one; ``False`` where only zeros remain."""
        self._pending = bytes(self._pending).lstrip(b"\x00")
        while not self._pending:
            if not self._feed():
                return False
            self._pending = bytes(self._pending).lstrip(b"\x00")
        self._member = self._lib.decompressobj(31)
        return True

    def readinto(self, out: memoryview) -> int:
        """Fill ``out``; fewer bytes than ``len(out)`` only where the stream has ended."""
        filled, size = 0, len(out)
        while filled < size and not self._done:
            if self._member is None or self._member.eof:
                if self._member is not None:
                    self._pending = self._member.unused_data
                if not self._next_member():
                    self._done = True
                    break
            if not self._pending and not self._feed():
                raise DataFormatError(
                    f"'{self._path}' is a truncated gzip stream: it ends inside a member."
                )
            try:
                chunk = self._member.decompress(self._pending, min(_OUT_STEP, size - filled))
            except self._lib.error as exc:
                raise DataFormatError(
                    f"'{self._path}' is not an intact gzip stream ({exc})."
                ) from exc
            self._pending = self._member.unconsumed_tail
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def read(self, n: int) -> bytes:
        """Up to ``n`` inflated bytes (fewer only where the stream has ended)."""
        buf = bytearray(n)
        return bytes(buf[: self.readinto(memoryview(buf))])


def _gzip_header(stream: _GzipStream, path: Path) -> tuple[Any, bytes, int]:
    """Inflate and parse the header of a gzip NIfTI file, and check the size it declares.

    Returns:
        The nibabel header (NIfTI-1 or NIfTI-2 class, extensions included), the data
        bytes inflated along with it, and the declared data size in bytes.
    """
    import io

    nib = _nib()
    head = stream.read(540)  # the longer fixed header (NIfTI-2)
    kind = next(
        (k for k in (nib.Nifti1Header, nib.Nifti2Header) if k.may_contain_header(head)), None
    )
    if kind is None:
        raise DataFormatError(
            f"Expected a NIfTI-1 or NIfTI-2 header at the start of '{path}', "
            f"but its first bytes are {head[:8]!r}."
        )
    fixed_size = kind.template_dtype.itemsize
    try:
        fixed = kind(head[:fixed_size])
        offset = int(fixed.get_data_offset())
        dtype = fixed.get_data_dtype()
        shape = tuple(int(n) for n in fixed.get_data_shape())
        magic = bytes(fixed["magic"])
    except Exception as exc:
        raise DataFormatError(f"'{path}' has a NIfTI header nibabel refuses: {exc}") from exc
    if not magic.startswith((b"n+1", b"n+2")):
        raise DataFormatError(
            f"Expected a single-file NIfTI ('n+1' or 'n+2' magic) in '{path}', "
            f"but its magic is {magic!r}."
        )
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else 0
    if offset + nbytes > MAX_DECLARED_BYTES:
        raise DataFormatError(
            f"'{path}' declares {offset + nbytes} bytes of header and data (shape {shape}, "
            f"{dtype}, vox_offset {offset}), more than medcurric.io.nifti.MAX_DECLARED_BYTES "
            f"= {MAX_DECLARED_BYTES}. Raise that limit to read it on purpose."
        )
    if offset < fixed_size:
        raise DataFormatError(
            f"Expected the data of '{path}' to start after its {fixed_size}-byte header, "
            f"but vox_offset is {offset}."
        )
    if offset > len(head):
        head += stream.read(offset - len(head))
    try:
        header = kind.from_fileobj(io.BytesIO(head[:offset]))
    except Exception as exc:
        raise DataFormatError(f"'{path}' has a NIfTI header nibabel refuses: {exc}") from exc
    return header, head[offset:], nbytes


def _inflate_gzip_nifti(path: Path, lib: Any = None) -> tuple[Any, np.ndarray]:
    """``(header, data)`` of a gzip NIfTI-1 or NIfTI-2 file, the data unscaled in file order.

    The header is inflated first and parsed by nibabel's header class; the size it
    declares is checked against :data:`MAX_DECLARED_BYTES` before any data is
    inflated, and the data are inflated into one array of exactly that size. A
    stream that ends early, holds more than declared, or fails its CRC is refused,
    so memory stays bounded by the declared size whatever the stream holds.

    Args:
        path: A gzip-compressed single-file NIfTI (``.nii.gz``).
        lib: A zlib-compatible module to inflate with (default: isal, else zlib).

    Returns:
        The nibabel header and the ``(i, j, k, ...)`` data, unscaled, in the file's dtype.

    Raises:
        DataFormatError: When the file is not an intact gzip NIfTI file, or declares
            more than :data:`MAX_DECLARED_BYTES`.
    """
    stream = _GzipStream(path.read_bytes(), path, _inflater() if lib is None else lib)
    header, early, nbytes = _gzip_header(stream, path)
    shape, dtype = header.get_data_shape(), header.get_data_dtype()
    data = np.empty(nbytes, np.uint8)
    filled = min(len(early), nbytes)
    data[:filled] = np.frombuffer(early[:filled], np.uint8)
    if len(early) <= nbytes:
        filled += stream.readinto(data.data[filled:])
    if filled < nbytes:
        raise DataFormatError(
            f"'{path}' declares {nbytes} bytes of data (shape {shape}, {dtype}) but its "
            f"stream holds only {filled}: the file is truncated."
        )
    if len(early) > nbytes or stream.read(1):  # the last read also checks the CRC
        raise DataFormatError(
            f"'{path}' declares {nbytes} bytes of data (shape {shape}, {dtype}) but its "
            f"stream holds more: trailing data, or a damaged header."
        )
    return header, data.view(dtype).reshape(shape, order="F")


def _scaled(header: Any, raw: np.ndarray) -> np.ndarray:
    """``raw`` with the header's scaling applied exactly as nibabel's array proxy does."""
    from nibabel.volumeutils import apply_read_scaling

    slope, inter = header.get_slope_inter()
    if slope in (None, 1.0) and inter in (None, 0.0):
        return raw
    # 0-d arrays, as the proxy passes them (nibabel's annotation says scalars)
    slope_arr: Any = np.array(1.0 if slope is None else slope)
    inter_arr: Any = np.array(0.0 if inter is None else inter)
    return apply_read_scaling(raw, slope_arr, inter_arr)


def _shape_3d(header: Any, path: Path) -> tuple[int, ...]:
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) < 3:
        raise ShapeError(f"Expected a 3D NIfTI volume, but '{path}' has shape {shape}.")
    return shape


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
    header, dataobj, img_affine = _open(p)
    shape = _shape_3d(header, p)
    r = Reorientation.from_affine(img_affine, shape[:3])
    data = np.asarray(_take(dataobj, _frame_index(shape, frame, p), p), dtype=dtype)
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
    dtype = np.uint8 if class_map.max_label < 256 else np.uint16
    top = max(int(data.max(initial=0)), *mapping)
    if top > _DENSE_RELABEL:  # a table per label value would be as long as the largest id
        values, codes = np.unique(np.asarray(data), return_inverse=True)
        table = np.array([mapping.get(int(v), 0) for v in values], dtype=dtype)
        return table[codes.reshape(data.shape)]
    lut = np.zeros(top + 1, dtype=dtype)
    for k, v in mapping.items():
        lut[k] = v
    return lut[np.asarray(data)]


#: Largest file label id relabelled through a dense lookup table; sparser ids go through
#: ``np.unique`` (memory bounded by the voxels, not by a hostile header's largest key).
_DENSE_RELABEL = 1 << 16


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
    header, dataobj, img_affine = _open(p, mmap=mmap)
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) != 3 and not (len(shape) > 3 and all(n == 1 for n in shape[3:])):
        raise ShapeError(f"Expected a 3D label map, but '{p}' has shape {shape}.")
    r = Reorientation.from_affine(img_affine, shape[:3])
    affine = r.affine
    if z_range is None:
        data = _as_labels(_take(dataobj, None, p), p)
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
        data = _as_labels(_take(dataobj, tuple(index), p), p)
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

    Each slice of an uncompressed file is taken through nibabel's array proxy, so
    the file is read for those slices only; a ``.nii.gz`` file is inflated whole.

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
    header, dataobj, img_affine = _open(p)
    shape = _shape_3d(header, p)
    r = Reorientation.from_affine(img_affine, shape[:3])
    zs = [z] if isinstance(z, (int, np.integer)) else list(z)
    nz = r.canonical_shape[0]
    out: dict[int, np.ndarray] = {}
    extra = (0,) * (len(shape) - 3)
    for zi in zs:
        zi = int(zi)
        if not 0 <= zi < nz:
            raise ShapeError(f"Expected slice indices in [0, {nz - 1}] for '{p}', but got {zi}.")
        axis, index = r.stored_slice(zi)
        sl: list[Any] = [slice(None)] * 3
        sl[axis] = slice(index, index + 1)
        block = _take(dataobj, (*sl, *extra), p)
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
