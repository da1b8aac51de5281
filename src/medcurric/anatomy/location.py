"""Where a lesion lies within its host organ, in patient terms, and how big it is.

:func:`describe_location` turns a lesion box, the host organ's mask and the
geometry (spacing, affine) into a :class:`Location`: the side of the body
(read from the affine, never from the array's column order), the sub-region
when the class map has one (lung lobe, vertebral level, Couinaud liver segment),
the position within the organ in thirds along each patient axis (upper/lower,
anterior/posterior, and right/left for unpaired organs or medial/lateral for
lateral ones), the in-plane size in millimetres and a short phrase such as
``"right posterior part of the"`` that a seed sentence completes with the organ.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, InvalidBoxError, ShapeError, WrongTypeError
from medcurric.io.records import LabelMap
from medcurric.vocabulary.classmap import ClassMap

__all__ = ["Location", "OrganExtents", "ViewPlane", "describe_location", "organ_extents"]

_LOBE = re.compile(r"^lung_(upper|middle|lower)_lobe_(left|right)$")
_VERTEBRA = re.compile(r"^vertebra(?:e)?_([A-Za-z]\d+)$")
_LIVER_SEGMENT = re.compile(r"^liver_segment_(\d+)$")
_MIDLINE_FRACTION = 0.05

# World (RAS) extent of each label: label -> (min xyz, max xyz), both float64 [3].
Extents = Mapping[int, tuple[np.ndarray, np.ndarray]]


class ViewPlane(StrEnum):
    """What a 2D image without an affine shows: an axial slice or a frontal (coronal) radiograph.

    Axial: columns run towards the patient's left, rows towards posterior.
    Coronal (chest X-ray, PA display): columns run towards the patient's left, rows towards inferior.
    """

    AXIAL = "axial"
    CORONAL = "coronal"


@dataclass(frozen=True)
class Location(JsonRecord):
    """Where a lesion lies, in patient terms.

    Attributes:
        organ: Host class or group name (``None`` when unknown).
        laterality: ``"right"``, ``"left"`` or ``"midline"``: the side of the patient's body,
            from the organ's name when it has a side, else from the lesion centre's RAS ``x``
            relative to the body's midline; ``None`` when it cannot be told.
        region: Class name of the sub-region (``"lung_lower_lobe_right"``, ``"vertebrae_L2"``,
            ``"liver_segment_4"``), if the class map has one there.
        region_phrase: The sub-region in words (``"lower lobe"``, ``"L2 vertebra"``, ``"segment 4"``).
        vertical: ``"upper"``, ``"middle"`` or ``"lower"`` third of the organ (superior-inferior).
        anterior_posterior: ``"anterior"``, ``"middle"`` or ``"posterior"`` third.
        transverse: ``"right"``/``"middle"``/``"left"`` third for unpaired organs, or
            ``"medial"``/``"middle"``/``"lateral"`` for organs on one side.
        relative_position: Fractions ``(towards right, towards anterior, towards superior)``
            of the lesion centre within the organ's extent (may fall outside [0, 1] for a
            lesion beside the organ); ``None`` without an organ.
        size_mm: ``(long axis, short axis)`` of the box in-plane, in millimetres.
        centre_mm: The box centre in patient RAS+ millimetres.
        phrase: The location in words, to be followed by the organ, e.g.
            ``"right posterior part of the"``; ``""`` when nothing can be said.

    Examples:
        >>> loc = Location(organ="liver", laterality="right", transverse="right",
        ...                anterior_posterior="posterior", phrase="right posterior part of the")
        >>> Location.from_json(loc.to_json()) == loc
        True
    """

    organ: str | None = None
    laterality: str | None = None
    region: str | None = None
    region_phrase: str | None = None
    vertical: str | None = None
    anterior_posterior: str | None = None
    transverse: str | None = None
    relative_position: tuple[float, float, float] | None = None
    size_mm: tuple[float, float] | None = None
    centre_mm: tuple[float, ...] | None = None
    phrase: str = ""


class OrganExtents(Mapping[int, tuple[np.ndarray, np.ndarray]]):
    """Read-only ``{label: (min_xyz, max_xyz)}`` world extents, with derived boxes cached.

    What :func:`organ_extents` returns. Describing many lesions of one label map
    needs the same unions again and again (an organ's member labels, such as the
    five lung lobes, and the whole body for the midline); they are computed once
    per mapping and kept. The mapping is read-only, and so are its arrays, so a
    cached union can never go stale.

    Args:
        boxes: ``{label: (min_xyz, max_xyz)}`` in RAS+ mm (copied).

    Examples:
        >>> ext = OrganExtents({1: ([0, 0, 0], [1, 2, 3]), 2: ([-1, 1, 1], [0, 5, 2])})
        >>> [v.tolist() for v in ext.union((1, 2))]
        [[-1.0, 0.0, 0.0], [1.0, 5.0, 3.0]]
        >>> ext.union((9,)) is None, len(ext), sorted(ext)
        (True, 2, [1, 2])
    """

    __slots__ = ("_body", "_boxes", "_unions")

    def __init__(self, boxes: Mapping[int, tuple[Any, Any]]) -> None:
        self._start({int(k): (_frozen(v[0]), _frozen(v[1])) for k, v in boxes.items()})

    def _start(self, boxes: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Take ``boxes`` (read-only corners) as they are, with nothing cached yet."""
        self._boxes = boxes
        self._unions: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray] | None] = {}
        self._body: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_arrays(cls, labels: Sequence[int], lo: np.ndarray, hi: np.ndarray) -> OrganExtents:
        """From ``[n]`` labels and their ``[n, 3]`` float64 min/max corners, without copying.

        The arrays are made read-only and the mapping's values are their rows.
        """
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        keys = [int(k) for k in labels]
        if lo.shape != (len(keys), 3) or hi.shape != (len(keys), 3):
            raise ShapeError(
                f"Expected lo and hi of shape ({len(keys)}, 3), but got {lo.shape} and {hi.shape}."
            )
        lo.flags.writeable = False
        hi.flags.writeable = False
        out = cls.__new__(cls)
        out._start({lab: (lo[i], hi[i]) for i, lab in enumerate(keys)})
        return out

    def __getitem__(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        return self._boxes[label]

    def __iter__(self) -> Iterator[int]:
        return iter(self._boxes)

    def __len__(self) -> int:
        return len(self._boxes)

    def __contains__(self, label: object) -> bool:
        return label in self._boxes

    def __repr__(self) -> str:
        return f"OrganExtents({len(self._boxes)} labels: {sorted(self._boxes)})"

    def union(self, members: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """Min/max RAS corner over the boxes of ``members`` present; ``None`` if none is."""
        key = tuple(int(m) for m in members)
        if key not in self._unions:
            boxes = [self._boxes[m] for m in key if m in self._boxes]
            self._unions[key] = (
                (
                    _frozen(np.min([bx[0] for bx in boxes], axis=0)),
                    _frozen(np.max([bx[1] for bx in boxes], axis=0)),
                )
                if boxes
                else None
            )
        return self._unions[key]

    def body(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Min/max RAS corner over every label's box (the body); ``None`` when empty."""
        if self._body is None and self._boxes:
            self._body = (
                _frozen(np.min([v[0] for v in self._boxes.values()], axis=0)),
                _frozen(np.max([v[1] for v in self._boxes.values()], axis=0)),
            )
        return self._body


def _frozen(values: Any) -> np.ndarray:
    a = np.array(values, dtype=np.float64)
    if a.shape != (3,):
        raise ShapeError(f"Expected an (x, y, z) corner of 3 numbers, but got shape {a.shape}.")
    a.flags.writeable = False
    return a


def organ_extents(labels: np.ndarray, affine: np.ndarray) -> OrganExtents:
    """World (RAS+ mm) extent of every label of a label map, in one pass over the array.

    Each label's voxel bounding box (voxel edges, not centres) is mapped through
    the affine and its corners' minimum and maximum per RAS axis are kept. Pass
    the result to :func:`describe_location` as ``extents`` to describe many
    lesions of one image without rescanning it.

    Args:
        labels: Integer ``[y, x]`` or ``[z, y, x]`` label map.
        affine: 4 x 4 voxel ``(x, y, z, 1)`` -> RAS+ mm (for a 2D map, ``z`` is 0).

    Returns:
        ``{label: (min_xyz, max_xyz)}`` for every label present (background
        excluded), as a read-only :class:`OrganExtents`.

    Examples:
        >>> a = np.zeros((4, 5), np.uint8); a[1:3, 0:2] = 7
        >>> lo, hi = organ_extents(a, np.diag([-1.0, -1.0, 1.0, 1.0]))[7]
        >>> lo.tolist(), hi.tolist()
        ([-1.5, -2.5, 0.0], [0.5, -0.5, 0.0])
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ShapeError(f"Expected a label map [y, x] or [z, y, x], but got shape {arr.shape}.")
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataFormatError(f"Expected an integer label map, but got dtype {arr.dtype}.")
    if arr.size == 0:
        return OrganExtents({})
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        n_labels = 1 << (8 * arr.dtype.itemsize)  # every value fits: no extra pass for the max
    else:
        if arr.min() < 0:
            raise DataFormatError(
                "Expected non-negative labels, but the label map has negative values."
            )
        n_labels = int(arr.max()) + 1
    ids: np.ndarray | None = None
    if n_labels > _DENSE_LABELS:
        # the bounds hold one row per label value: renumber a sparse label space first
        ids = np.unique(arr)
        if ids[0] != 0:
            ids = np.concatenate([np.zeros(1, dtype=ids.dtype), ids])
        arr = np.searchsorted(ids, arr).astype(np.int32 if ids.size < 2**31 else np.int64)
        n_labels = int(ids.size)
    lo, hi = _label_bounds(arr, n_labels)
    aff = np.asarray(affine, dtype=np.float64)
    present = np.flatnonzero(hi[:, 0] >= 0)
    labels_present = present if ids is None else ids[present]
    # bounds are array-axis (z, y, x) indices; the box is in voxel edges, x first
    lo_xyz = lo[present][:, ::-1].astype(np.float64)
    hi_xyz = hi[present][:, ::-1].astype(np.float64) + 1.0
    if arr.ndim == 2:  # as _world_box: a 2D map spans z in [0, 1)
        lo_xyz = np.concatenate([lo_xyz, np.full((present.size, 1), 0.5)], axis=1)
        hi_xyz = np.concatenate([hi_xyz, np.full((present.size, 1), 0.5)], axis=1)
    # the 8 corners (edges at index - 0.5) of every label's box, mapped at once
    pick = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=bool)
    corners = np.where(pick[None], hi_xyz[:, None, :], lo_xyz[:, None, :]) - 0.5  # [n, 8, 3]
    world = corners @ aff[:3, :3].T + aff[:3, 3]
    return OrganExtents.from_arrays(labels_present.tolist(), world.min(axis=1), world.max(axis=1))


#: Label maps whose largest label is above this are renumbered to their labels present
#: before the one-pass bounds (which keep one row per label value): bounded memory.
_DENSE_LABELS = 1 << 16


def _label_bounds(arr: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the smallest and largest index along each array axis (one pass, any strides)."""
    from medcurric.anatomy._bounds import label_bounds_3d

    a3 = arr if arr.ndim == 3 else arr[None]
    # walk the array in memory order: put the axis with the smallest stride last
    order = tuple(int(i) for i in np.argsort([-abs(s) for s in a3.strides], kind="stable"))
    lo, hi = label_bounds_3d(np.transpose(a3, order), n_labels)
    inverse = np.argsort(order)
    lo, hi = lo[:, inverse], hi[:, inverse]
    if arr.ndim == 2:
        lo, hi = lo[:, 1:], hi[:, 1:]
    return lo, hi


def _world_box(
    lo_xyz: Sequence[float], hi_xyz: Sequence[float], aff: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RAS min/max over the corners of a voxel-edge box (edges at index - 0.5)."""
    lo = list(lo_xyz) + [0.5] * (3 - len(lo_xyz))
    hi = list(hi_xyz) + [0.5] * (3 - len(hi_xyz))
    corners = np.array(
        [
            [a - 0.5, b - 0.5, c - 0.5, 1.0]
            for a in (lo[0], hi[0])
            for b in (lo[1], hi[1])
            for c in (lo[2], hi[2])
        ]
    )
    world = corners @ aff.T
    return world[:, :3].min(axis=0), world[:, :3].max(axis=0)


def _default_affine(ndim: int, spacing: Sequence[float] | None, view: ViewPlane) -> np.ndarray:
    sp = [1.0] * ndim if spacing is None else [float(s) for s in spacing]
    if ndim == 3:
        sz, sy, sx = sp
        return np.diag([-sx, -sy, sz, 1.0])
    sy, sx = sp
    if view is ViewPlane.AXIAL:
        return np.diag([-sx, -sy, 1.0, 1.0])
    aff = np.zeros((4, 4))
    aff[0, 0] = -sx  # columns -> patient's left
    aff[2, 1] = -sy  # rows -> inferior
    aff[1, 2] = 1.0  # (unused) depth -> anterior
    aff[3, 3] = 1.0
    return aff


def _thirds(f: float, low: str, high: str) -> str:
    if f < 1.0 / 3.0:
        return low
    if f > 2.0 / 3.0:
        return high
    return "middle"


@functools.lru_cache(maxsize=1024)
def _name_side(name: str | None) -> str | None:
    """``"left"``/``"right"`` when the name says so (``kidney_left``), else ``None``."""
    if name is None:
        return None
    tokens = name.lower().replace("-", "_").replace(" ", "_").split("_")
    has_left, has_right = "left" in tokens, "right" in tokens
    if has_left != has_right:
        return "left" if has_left else "right"
    return None


@functools.lru_cache(maxsize=1024)
def _region_phrase(name: str) -> str | None:
    m = _LOBE.match(name)
    if m:
        return f"{m.group(1)} lobe"
    m = _VERTEBRA.match(name)
    if m:
        return f"{m.group(1).upper()} vertebra"
    m = _LIVER_SEGMENT.match(name)
    if m:
        return f"segment {int(m.group(1))}"
    return None


def _resolve_organ(organ: Any, cm: ClassMap | None) -> str | None:
    if organ is None:
        return None
    if hasattr(organ, "outcome") and hasattr(organ, "organ"):  # an OrganMatch
        return None if organ.organ is None else str(organ.organ)
    if isinstance(organ, (int, np.integer)) and not isinstance(organ, bool):
        if cm is None:
            raise WrongTypeError(
                "Got an organ label id but no class map to name it; pass class_map."
            )
        return cm.name_of(int(organ))
    if isinstance(organ, str):
        return organ
    raise WrongTypeError(
        f"Expected organ to be a class/group name, a label id, an OrganMatch or None, "
        f"but got {type(organ).__name__}."
    )


def describe_location(
    box: Sequence[float] | np.ndarray,
    label_map_or_mask: LabelMap | np.ndarray,
    organ: Any,
    *,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    class_map: ClassMap | None = None,
    slice_index: int | None = None,
    extents: Extents | None = None,
    view: ViewPlane | str = ViewPlane.AXIAL,
    vertical: bool = True,
) -> Location:
    """Describe where a lesion box lies within its host organ.

    Args:
        box: ``(x1, y1, x2, y2)`` pixels (on slice ``slice_index`` of a volume, or
            on a 2D map) or ``(x1, y1, z1, x2, y2, z2)`` voxels.
        label_map_or_mask: A :class:`~medcurric.io.LabelMap`, an integer label
            array (with ``class_map``), or a boolean mask of the organ alone.
        organ: The host: a class or group name of the class map, a label id, an
            :class:`~medcurric.anatomy.OrganMatch` (unmatched gives a location without
            organ-relative words), or ``None``.
        spacing: Millimetres per array axis; defaults to the LabelMap's. Without
            any, sizes are not given.
        affine: 4 x 4 voxel ``(x, y, z, 1)`` -> RAS+ mm; defaults to the LabelMap's,
            else the canonical ``diag(-sx, -sy, sz)`` (x towards left, y posterior).
            Left and right follow the affine, not the array's column order.
        class_map: Names of the labels; defaults to the LabelMap's.
        slice_index: Key slice of a 2D box on a volume.
        extents: Precomputed :func:`organ_extents` of the label map (saves a pass
            over the volume when describing many lesions of one image, and the
            :class:`OrganExtents` it returns keeps each organ's union across calls);
            any ``{label: (min_xyz, max_xyz)}`` mapping is accepted.
        view: For 2D maps without an affine: ``"axial"`` or ``"coronal"``.
        vertical: Say upper/middle/lower. Pass ``False`` when the label map is a slab
            that holds only part of the organ along the superior-inferior axis.

    Returns:
        The :class:`Location`.

    Raises:
        ShapeError: When the box, map and slice do not fit together.
        InvalidBoxError: For a box that is not finite or inverted.

    Examples:
        >>> from medcurric.testing import make_phantom
        >>> ph = make_phantom()
        >>> r = ph.key_slice_lesions[0]
        >>> loc = describe_location(r.box, ph.label_map(), "liver", slice_index=r.slice_index)
        >>> loc.laterality, loc.size_mm, loc.phrase
        ('right', (15.0, 15.0), 'central part of the')
    """
    view_plane = look_up_option(view, ViewPlane, name="view")
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape[0] not in (4, 6):
        raise ShapeError(f"Expected a box of 4 or 6 numbers, but got {b.shape[0]}.")
    bl = b.tolist()  # Python floats: the same IEEE arithmetic, without numpy's per-call cost
    if not all(map(math.isfinite, bl)):
        raise InvalidBoxError(f"Expected a finite box, but got {bl}.")
    d = len(bl) // 2
    if any(bl[d + i] < bl[i] for i in range(d)):
        raise InvalidBoxError(f"Expected x2 >= x1 (and y2 >= y1, z2 >= z1), but got {bl}.")

    cm: ClassMap | None
    if isinstance(label_map_or_mask, LabelMap):
        arr = label_map_or_mask.array
        cm = class_map if class_map is not None else label_map_or_mask.class_map
        spacing = spacing if spacing is not None else label_map_or_mask.spacing
        affine = affine if affine is not None else label_map_or_mask.affine
    else:
        arr = np.asarray(label_map_or_mask)
        cm = class_map
    if arr.ndim not in (2, 3):
        raise ShapeError(f"Expected a label map [y, x] or [z, y, x], but got shape {arr.shape}.")
    is_mask = arr.dtype == np.bool_
    if spacing is not None and len(spacing) != arr.ndim:
        if len(spacing) == 2 and arr.ndim == 3:
            spacing = (1.0, *spacing)
        else:
            raise ShapeError(f"Expected {arr.ndim} spacing values, but got {tuple(spacing)}.")
    aff = (
        np.asarray(affine, dtype=np.float64)
        if affine is not None
        else _default_affine(arr.ndim, spacing, view_plane)
    )
    if aff.shape != (4, 4):
        raise ShapeError(f"Expected a 4 x 4 affine, but got shape {aff.shape}.")

    # Box centre as a continuous voxel index (x, y, z); pixel c covers [c, c + 1).
    if d == 2:
        cx, cy = (bl[0] + bl[2]) / 2 - 0.5, (bl[1] + bl[3]) / 2 - 0.5
        if arr.ndim == 3:
            if slice_index is None:
                raise ShapeError("Got a 2D box on a volume; pass slice_index (the key slice).")
            if not 0 <= int(slice_index) < arr.shape[0]:
                raise ShapeError(
                    f"Expected slice_index in [0, {arr.shape[0] - 1}], but got {slice_index}."
                )
            cz = float(slice_index)
        else:
            cz = 0.0
    else:
        if arr.ndim != 3:
            raise ShapeError(f"Got a 3D box but a 2D map of shape {arr.shape}.")
        cx, cy, cz = ((bl[i] + bl[3 + i]) / 2 - 0.5 for i in range(3))
    centre = (aff @ np.array([cx, cy, cz, 1.0])).tolist()
    centre_mm = tuple(round(v, 3) for v in centre[:3])

    size_mm = None
    if spacing is not None:
        sy, sx = float(spacing[-2]), float(spacing[-1])
        w_mm = (bl[d] - bl[0]) * sx
        h_mm = (bl[d + 1] - bl[1]) * sy
        size_mm = (round(max(w_mm, h_mm), 2), round(min(w_mm, h_mm), 2))

    organ_name = _resolve_organ(organ, cm)
    members: tuple[int, ...] = ()
    if is_mask:
        ext_all = organ_extents(arr.astype(np.uint8), aff) if extents is None else _extents(extents)
        members = (1,) if organ_name is not None or organ is None else ()
    else:
        ext_all = organ_extents(arr, aff) if extents is None else _extents(extents)
        if organ_name is not None:
            if cm is None:
                raise WrongTypeError(
                    "Got an integer label map but no class map; pass class_map or a LabelMap."
                )
            members = cm.member_labels(cm.resolve(organ_name))

    # Organ extent (union of members) in RAS.
    united = ext_all.union(members)
    rel = None
    use_vertical = bool(vertical)
    vertical_word: str | None = None
    ap = transverse = None
    side_of_name = _name_side(organ_name)
    if united is not None:
        lo, hi = united[0].tolist(), united[1].tolist()
        f = [(centre[i] - lo[i]) / max(hi[i] - lo[i], 1e-9) for i in range(3)]  # towards R, A, S
        rel = (round(f[0], 4), round(f[1], 4), round(f[2], 4))
        planar_coronal = arr.ndim == 2 and view_plane is ViewPlane.CORONAL and affine is None
        planar_axial = arr.ndim == 2 and not planar_coronal
        if not planar_axial and use_vertical:
            vertical_word = _thirds(f[2], "lower", "upper")
        if not planar_coronal:
            ap = _thirds(f[1], "posterior", "anterior")
        if side_of_name == "right":
            transverse = _thirds(f[0], "medial", "lateral")
        elif side_of_name == "left":
            transverse = _thirds(f[0], "lateral", "medial")
        else:
            transverse = _thirds(f[0], "left", "right")

    # Sub-region: the member (lobe, vertebra, liver segment) holding most of the box.
    region = None
    if organ_name is not None and cm is not None and not is_mask:
        if _region_phrase(organ_name) is not None:
            region = organ_name
        elif len(members) > 1:
            region = _dominant_member(arr, b, slice_index, members, cm)
    region_phrase = None if region is None else _region_phrase(region)
    if region is not None and side_of_name is None:
        side_of_name = _name_side(region)

    # Side of the body: from the name, else from the centre vs the body's midline.
    laterality = side_of_name
    if laterality is None and ext_all and not is_mask:
        body_lo, body_hi = ext_all.body()  # type: ignore[misc]  # not empty here
        mid = (float(body_lo[0]) + float(body_hi[0])) / 2
        width = max(float(body_hi[0]) - float(body_lo[0]), 1e-9)
        dx = centre[0] - mid
        if abs(dx) <= _MIDLINE_FRACTION * width:
            laterality = "midline"
        else:
            laterality = "right" if dx > 0 else "left"  # RAS: +x is the patient's right

    if region_phrase is not None and organ_name is not None and region != organ_name:
        phrase = f"{region_phrase} of the"
    else:
        words = [w for w in (transverse, vertical_word, ap) if w is not None and w != "middle"]
        if (
            not words
            and transverse == "middle"
            and vertical_word in (None, "middle")
            and ap in (None, "middle")
        ):
            words = ["central"]
        phrase = f"{' '.join(words)} part of the" if words else ""
    if organ_name is None:
        phrase = ""
    return Location(
        organ=organ_name,
        laterality=laterality,
        region=region,
        region_phrase=region_phrase,
        vertical=vertical_word,
        anterior_posterior=ap,
        transverse=transverse,
        relative_position=rel,
        size_mm=size_mm,
        centre_mm=centre_mm,
        phrase=phrase,
    )


def _extents(extents: Extents) -> OrganExtents:
    if isinstance(extents, OrganExtents):
        return extents
    if not isinstance(extents, Mapping):
        raise WrongTypeError(
            "Expected extents as returned by organ_extents ({label: (min_xyz, max_xyz)}), "
            f"but got {type(extents).__name__}."
        )
    return OrganExtents(extents)


def _dominant_member(
    arr: np.ndarray, b: np.ndarray, slice_index: int | None, members: tuple[int, ...], cm: ClassMap
) -> str | None:
    d = b.shape[0] // 2
    if d == 2:
        plane = arr[int(slice_index)] if arr.ndim == 3 and slice_index is not None else arr
        y0, y1 = _span(b[1], b[3], plane.shape[0])
        x0, x1 = _span(b[0], b[2], plane.shape[1])
        crop = plane[y0:y1, x0:x1]
    else:
        z0, z1 = _span(b[2], b[5], arr.shape[0])
        y0, y1 = _span(b[1], b[4], arr.shape[1])
        x0, x1 = _span(b[0], b[3], arr.shape[2])
        crop = arr[z0:z1, y0:y1, x0:x1]
    if crop.size == 0:
        return None
    # counts of the members only (a bincount would be as long as the crop's largest label)
    counts = {m: int(np.count_nonzero(crop == m)) for m in members}
    best = max(members, key=lambda m: (counts[m], -m))
    if counts[best] == 0:
        return None
    return cm.name_of(best)


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Indices of pixels whose centre lies in ``[lo, hi)``, clipped to ``[0, n)``."""
    i0 = max(0, math.ceil(lo - 0.5))
    i1 = min(n, math.ceil(hi - 0.5))
    return i0, max(i0, i1)
