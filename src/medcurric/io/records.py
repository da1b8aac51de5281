"""Typed records that flow between the library's stages.

Conventions used everywhere in medcurric:

* 2D boxes are ``(x1, y1, x2, y2)`` in pixels of the image they were drawn on;
  3D boxes are ``(x1, y1, z1, x2, y2, z2)`` in voxels.
* Arrays are indexed ``[y, x]`` (a slice) or ``[z, y, x]`` (a volume).
* ``spacing`` is given per array axis in millimetres: ``(sy, sx)`` or ``(sz, sy, sx)``.
* ``affine`` is a 4 x 4 matrix mapping homogeneous voxel coordinates in
  ``(x, y, z, 1)`` order (column, row, slice) to patient RAS+ millimetres, the
  NIfTI world convention. Readers reorient volumes so that ``x`` runs towards
  the patient's left, ``y`` towards posterior and ``z`` towards superior (the
  orientation of axial CT slices as radiologists view them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, ShapeError

if TYPE_CHECKING:
    from medcurric.vocabulary.classmap import ClassMap

__all__ = ["LabelMap", "LesionRecord", "Volume"]


@dataclass(frozen=True)
class LesionRecord(JsonRecord):
    """One annotated lesion from a detection dataset.

    Attributes:
        id: Stable identifier, unique within a dataset (readers derive it from the source row).
        image: Reference to the image, a path relative to the dataset root or an identifier.
        box: ``(x1, y1, x2, y2)`` pixels on the (key) slice, or ``(x1, y1, z1, x2, y2, z2)`` voxels.
        lesion_type: Lesion type as text; ``"lesion"`` when unknown.
        slice_index: Index of the key slice in the volume, for 2D boxes on a volume.
        spacing: Millimetres per pixel along each array axis (``(sy, sx)`` or ``(sz, sy, sx)``).
        modality: Imaging modality, e.g. ``"CT"``, ``"MR"``, ``"CXR"``.
        window: Display window ``(low, high)`` in stored units (HU for CT), if the dataset gives one.
        split: Dataset split (``"train"``, ``"val"``, ``"test"``) if known.
        source: Name of the dataset or reader that produced the record.
        extra: Any further fields from the source, kept verbatim as data.

    Examples:
        >>> r = LesionRecord(id="a1", image="001.png", box=(10.0, 20.0, 30.0, 40.0))
        >>> LesionRecord.from_json(r.to_json()) == r
        True
    """

    id: str
    image: str
    box: tuple[float, ...]
    lesion_type: str = "lesion"
    slice_index: int | None = None
    spacing: tuple[float, ...] | None = None
    modality: str = "CT"
    window: tuple[float, float] | None = None
    split: str | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.box) not in (4, 6):
            raise DataFormatError(
                f"Expected a box of 4 (x1, y1, x2, y2) or 6 (x1, y1, z1, x2, y2, z2) numbers for "
                f"lesion {self.id!r}, but got {len(self.box)}."
            )
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))

    @property
    def ndim(self) -> int:
        """2 for a slice box, 3 for a volume box."""
        return 2 if len(self.box) == 4 else 3


@dataclass
class LabelMap:
    """An integer label map with its class names and geometry.

    Attributes:
        array: Integer labels, ``[y, x]`` or ``[z, y, x]``; 0 is background.
        class_map: Names of the labels.
        spacing: Millimetres per voxel along each array axis.
        affine: 4 x 4 voxel ``(x, y, z, 1)`` -> patient RAS+ mm matrix, if known.
        source: Where the map came from (file path or description).
    """

    array: np.ndarray
    class_map: ClassMap
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim not in (2, 3):
            raise ShapeError(
                f"Expected a label map of shape [y, x] or [z, y, x], but got shape {arr.shape}."
            )
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise DataFormatError(
                f"Expected an integer label map, but got dtype {arr.dtype}. "
                "Round or cast probabilities/one-hot masks to integer labels first."
            )
        self.array = arr
        if self.spacing is not None:
            if len(self.spacing) != arr.ndim:
                raise ShapeError(
                    f"Expected {arr.ndim} spacing values (one per array axis), but got {self.spacing}."
                )
            self.spacing = tuple(float(s) for s in self.spacing)
        if self.affine is not None:
            aff = np.asarray(self.affine, dtype=np.float64)
            if aff.shape != (4, 4):
                raise ShapeError(f"Expected a 4 x 4 affine, but got shape {aff.shape}.")
            self.affine = aff

    @property
    def ndim(self) -> int:
        """2 or 3."""
        return int(self.array.ndim)

    def replace(self, **changes: Any) -> LabelMap:
        """Return a copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


@dataclass
class Volume:
    """An image volume (or slice) with its geometry, as the readers return it.

    Attributes:
        array: Intensities, ``[y, x]`` or ``[z, y, x]``, reoriented so that ``x`` runs towards the
            patient's left, ``y`` towards posterior and ``z`` towards superior. CT values are HU.
        spacing: Millimetres per voxel along each array axis.
        affine: 4 x 4 voxel ``(x, y, z, 1)`` -> patient RAS+ mm matrix of ``array``, if known.
        source: Where the volume came from (file path or description).
        modality: Imaging modality if the file says (``"CT"``, ``"MR"``, ...), else ``""``.

    Examples:
        >>> v = Volume(np.zeros((2, 3, 4), np.float32), spacing=(2.0, 1.0, 1.0))
        >>> v.shape, v.ndim
        ((2, 3, 4), 3)
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    source: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim not in (2, 3):
            raise ShapeError(
                f"Expected a volume of shape [y, x] or [z, y, x], but got shape {arr.shape}."
            )
        self.array = arr
        if self.spacing is not None:
            if len(self.spacing) != arr.ndim:
                raise ShapeError(
                    f"Expected {arr.ndim} spacing values (one per array axis), "
                    f"but got {self.spacing}."
                )
            self.spacing = tuple(float(s) for s in self.spacing)
        if self.affine is not None:
            aff = np.asarray(self.affine, dtype=np.float64)
            if aff.shape != (4, 4):
                raise ShapeError(f"Expected a 4 x 4 affine, but got shape {aff.shape}.")
            self.affine = aff

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(int(n) for n in self.array.shape)

    @property
    def ndim(self) -> int:
        """2 or 3."""
        return int(self.array.ndim)
