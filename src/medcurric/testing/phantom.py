"""A deterministic synthetic CT phantom with TotalSegmentator labels and lesions of known host.

The phantom is a torso made of ellipsoids and cylinders (body fat, liver,
gallbladder, spleen, kidneys, stomach, pancreas, aorta, inferior vena cava,
vertebrae T8-L5, five lung lobes, heart, trachea, esophagus, sternum, bladder),
each carrying its TotalSegmentator v2 label id, plus ten spherical lesions placed
relative to the organs so that their host and the matcher's outcome are known
by design (:attr:`Phantom.expected`): inside the liver (small and large), the
left kidney, a lung lobe and a vertebra; straddling the liver's edge and just
beside the left kidney (``adjacent``); in abdominal fat (``unmatched``); and a
mass spanning three lobes of the right lung (``inside`` only at group level).

Geometry follows :doc:`/conventions`: arrays are ``[z, y, x]`` with ``x`` running
towards the patient's left, ``y`` towards posterior and ``z`` towards superior.
The affine maps voxel indices ``(x, y, z, 1)`` (integer index = voxel centre, as
in NIfTI) to RAS+ millimetres: RAS ``x`` grows towards the patient's *right* and
``y`` towards *anterior*, the opposite of the array's x and y, so the affine is
``diag(-sx, -sy, +sz)`` plus a translation putting the volume's centre at the origin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medcurric.errors import DataFormatError, ShapeError
from medcurric.io.datasets import Case
from medcurric.io.records import LabelMap, LesionRecord
from medcurric.vocabulary.classmap import ClassMap

__all__ = ["ExpectedHost", "Phantom", "make_phantom", "phantom_dataset"]

#: Field of view in millimetres along (z, y, x) for the default spacing.
FOV_MM = (320.0, 384.0, 384.0)
_BODY_HU = -100  # fat
_AIR_HU = -1000
_WINDOWS = {
    "abdomen": (-160.0, 240.0),
    "lung": (-1350.0, 150.0),
    "bone": (-450.0, 1050.0),
}


@dataclass(frozen=True)
class ExpectedHost:
    """The designed host of a phantom lesion (what a correct matcher must find).

    With the default matcher (``ioa``, ``min_score=0.5``, ``adjacent_mm=5``).

    Attributes:
        outcome: Expected outcome at organ level.
        organs: Acceptable host classes at organ level (one for a clear case,
            several for a lesion spanning structures, empty when unmatched).
        group: Expected host at group level (lobes -> ``lung_right``, ...).
        group_outcome: Expected outcome at group level.
    """

    outcome: str
    organs: tuple[str, ...]
    group: str | None
    group_outcome: str

    @property
    def organ(self) -> str | None:
        """The single expected organ, or ``None`` when unmatched or ambiguous."""
        return self.organs[0] if len(self.organs) == 1 else None


@dataclass
class Phantom:
    """A synthetic CT volume with labels, geometry and lesions of known host.

    Attributes:
        hu: Hounsfield units, int16 ``[z, y, x]``.
        labels: TotalSegmentator v2 label ids, uint8 ``[z, y, x]`` (0 = background,
            including fat; lesions keep the label of the organ they lie in).
        class_map: ``ClassMap.totalsegmentator()``.
        spacing: ``(sz, sy, sx)`` millimetres.
        affine: 4 x 4 voxel ``(x, y, z, 1)`` -> RAS+ mm.
        lesions: One :class:`~medcurric.io.LesionRecord` per lesion with a 3D box
            ``(x1, y1, z1, x2, y2, z2)`` (voxels covering the lesion).
        key_slice_lesions: The same lesions as 2D boxes on their key (central)
            slice, with ``slice_index``; ids end in ``-key``.
        expected: Lesion id (of :attr:`lesions`) -> :class:`ExpectedHost`.
        seed: The seed it was built from.
    """

    hu: np.ndarray
    labels: np.ndarray
    class_map: ClassMap
    spacing: tuple[float, float, float]
    affine: np.ndarray
    lesions: tuple[LesionRecord, ...]
    key_slice_lesions: tuple[LesionRecord, ...]
    expected: dict[str, ExpectedHost] = field(default_factory=dict)
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        d, h, w = self.labels.shape
        return int(d), int(h), int(w)

    @property
    def lesion_boxes(self) -> np.ndarray:
        """3D lesion boxes ``[N, 6]`` ``(x1, y1, z1, x2, y2, z2)``, in :attr:`lesions` order."""
        return np.array([r.box for r in self.lesions], dtype=np.float64).reshape(-1, 6)

    @property
    def key_slice_boxes(self) -> np.ndarray:
        """2D key-slice boxes ``[N, 4]`` ``(x1, y1, x2, y2)``, in :attr:`lesions` order."""
        return np.array([r.box for r in self.key_slice_lesions], dtype=np.float64).reshape(-1, 4)

    @property
    def key_slices(self) -> np.ndarray:
        """The key slice (z index) of each lesion, int64 ``[N]``."""
        return np.array([r.slice_index for r in self.key_slice_lesions], dtype=np.int64)

    def boxes(self, mode: str = "3d") -> np.ndarray:
        """Lesion boxes for ``mode="3d"`` (``[N, 6]``) or ``mode="2d"`` (``[N, 4]`` on :attr:`key_slices`)."""
        if mode == "3d":
            return self.lesion_boxes
        if mode == "2d":
            return self.key_slice_boxes
        raise DataFormatError(f"Expected mode '3d' or '2d', but got {mode!r}.")

    def label_map(self) -> LabelMap:
        """The labels as a :class:`~medcurric.io.LabelMap` with class map, spacing and affine."""
        return LabelMap(
            array=self.labels,
            class_map=self.class_map,
            spacing=self.spacing,
            affine=self.affine,
            source=f"medcurric phantom (seed={self.seed})",
        )


# ----------------------------------------------------------------------------- geometry


class _Canvas:
    """Paints shapes given in patient millimetres onto the label and HU arrays.

    Patient frame: ``u`` towards the patient's left (array x), ``v`` towards
    posterior (array y), ``w`` towards superior (array z); origin at the volume centre.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.shape = shape
        self.spacing = spacing
        # voxel-centre coordinates per array axis (z, y, x) -> (w, v, u)
        self.axes = [(np.arange(n) + 0.5 - n / 2.0) * s for n, s in zip(shape, spacing, strict=False)]
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.hu = np.full(shape, _AIR_HU, dtype=np.float32)

    def _window(self, centre_uvw: Sequence[float], half_uvw: Sequence[float]) -> tuple[slice, ...] | None:
        out = []
        for axis in range(3):
            c, h = centre_uvw[2 - axis], half_uvw[2 - axis]
            coords = self.axes[axis]
            i0 = int(np.searchsorted(coords, c - h, side="left"))
            i1 = int(np.searchsorted(coords, c + h, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def ellipsoid(self, centre: Sequence[float], semi: Sequence[float]) -> tuple[tuple[slice, ...], np.ndarray] | None:
        win = self._window(centre, semi)
        if win is None:
            return None
        w = (self.axes[0][win[0]] - centre[2]) / semi[2]
        v = (self.axes[1][win[1]] - centre[1]) / semi[1]
        u = (self.axes[2][win[2]] - centre[0]) / semi[0]
        q = w[:, None, None] ** 2 + v[None, :, None] ** 2 + u[None, None, :] ** 2
        return win, q <= 1.0

    def cylinder(self, centre_uv: Sequence[float], semi_uv: Sequence[float], w_range: Sequence[float]) -> tuple[tuple[slice, ...], np.ndarray] | None:
        mid = (w_range[0] + w_range[1]) / 2.0
        half = (w_range[1] - w_range[0]) / 2.0
        win = self._window((centre_uv[0], centre_uv[1], mid), (semi_uv[0], semi_uv[1], half))
        if win is None:
            return None
        v = (self.axes[1][win[1]] - centre_uv[1]) / semi_uv[1]
        u = (self.axes[2][win[2]] - centre_uv[0]) / semi_uv[0]
        disc = (v[:, None] ** 2 + u[None, :] ** 2) <= 1.0
        n_z = win[0].stop - win[0].start
        return win, np.broadcast_to(disc, (n_z, *disc.shape))

    def index(self, point_uvw: Sequence[float]) -> tuple[int, int, int]:
        """``(z, y, x)`` index of the voxel containing a point (clipped to the volume)."""
        out = []
        for axis in range(3):
            n, sp = self.shape[axis], self.spacing[axis]
            out.append(int(np.clip(math.floor(point_uvw[2 - axis] / sp + n / 2.0), 0, n - 1)))
        return out[0], out[1], out[2]

    def snap(self, point_uvw: Sequence[float]) -> tuple[float, float, float]:
        """The centre of the voxel containing a point, so a lesion's key slice passes through its centre."""
        z, y, x = self.index(point_uvw)
        return float(self.axes[2][x]), float(self.axes[1][y]), float(self.axes[0][z])

    def paint(self, shape: tuple[tuple[slice, ...], np.ndarray] | None, label: int | None, hu: float) -> None:
        if shape is None:
            return
        win, mask = shape
        if label is not None:
            self.labels[win][mask] = label
        self.hu[win][mask] = hu


def _jitter(rng: np.random.Generator, centre: Sequence[float], semi: Sequence[float], *, move: float = 3.0,
            scale: float = 0.04) -> tuple[tuple[float, ...], tuple[float, ...]]:
    c = tuple(float(x + rng.uniform(-move, move)) for x in centre)
    s = tuple(float(x * (1.0 + rng.uniform(-scale, scale))) for x in semi)
    return c, s


# ----------------------------------------------------------------------------- builder


def make_phantom(
    seed: int = 0,
    shape: Sequence[int] = (64, 128, 128),
    spacing: Sequence[float] | None = None,
) -> Phantom:
    """Build the synthetic CT phantom.

    Args:
        seed: Seeds the small random jitter of organ positions/sizes and the image
            noise; the same seed always gives the same phantom.
        shape: ``(D, H, W)``; at least ``(32, 64, 64)`` (coarser voxels blur the
            designed gaps between lesions and organs).
        spacing: ``(sz, sy, sx)`` millimetres; default ``FOV / shape`` for a
            320 x 384 x 384 mm field of view, i.e. ``(5, 3, 3)`` for the default shape.

    Returns:
        The :class:`Phantom`.

    Raises:
        ShapeError: For a shape or spacing that is not three values, or too small.

    Examples:
        >>> ph = make_phantom()
        >>> ph.hu.dtype, ph.labels.shape, ph.spacing
        (dtype('int16'), (64, 128, 128), (5.0, 3.0, 3.0))
        >>> ph.lesion_boxes.shape, ph.expected["liver-small"].organ
        ((10, 6), 'liver')
        >>> ph.affine[:3, :3].diagonal().tolist()  # x -> patient left = RAS -x
        [-3.0, -3.0, 5.0]
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 1:
        raise ShapeError(f"Expected shape (D, H, W) of three positive ints, but got {tuple(shape)}.")
    if shp[0] < 32 or shp[1] < 64 or shp[2] < 64:
        raise ShapeError(
            f"Expected a shape of at least (32, 64, 64), so that the lesions and the gaps that "
            f"decide their designed outcomes stay resolved, but got {shp}."
        )
    if spacing is None:
        sp = tuple(f / n for f, n in zip(FOV_MM, shp, strict=False))
    else:
        sp = tuple(float(s) for s in spacing)
        if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
            raise ShapeError(f"Expected spacing (sz, sy, sx) of three positive numbers, but got {spacing}.")
    spacing3: tuple[float, float, float] = (sp[0], sp[1], sp[2])
    rng = np.random.default_rng(seed)
    cm = ClassMap.totalsegmentator()
    lab = cm.label_of
    cv = _Canvas((shp[0], shp[1], shp[2]), spacing3)

    # body: elliptic cylinder of fat over the whole z range
    cv.paint(cv.cylinder((0.0, 0.0), (165.0, 120.0), (-1e4, 1e4)), None, _BODY_HU)

    organs: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}

    def organ(name: str, centre: Sequence[float], semi: Sequence[float], hu: float) -> None:
        c, s = _jitter(rng, centre, semi)
        organs[name] = (c, s)
        cv.paint(cv.ellipsoid(c, s), lab(name), hu)

    # vertebrae T8..L5: elliptic cylinders 26 mm tall with 6 mm discs, from the bottom up
    levels = ["L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8"]
    spine_v = 75.0 + rng.uniform(-2, 2)
    for k, level in enumerate(levels):
        w0 = -155.0 + 32.0 * k
        name = f"vertebrae_{level}"
        organs[name] = ((0.0, spine_v, w0 + 13.0), (18.0, 16.0, 13.0))
        cv.paint(cv.cylinder((0.0, spine_v), (18.0, 16.0), (w0, w0 + 26.0)), lab(name), 450.0)
    organ("liver", (-65.0, -5.0, -15.0), (80.0, 75.0, 65.0), 90.0)
    organ("gallbladder", (-45.0, -60.0, -45.0), (14.0, 14.0, 25.0), 10.0)
    organ("spleen", (85.0, 45.0, 15.0), (30.0, 28.0, 45.0), 100.0)
    organ("stomach", (45.0, -35.0, 10.0), (45.0, 35.0, 30.0), 25.0)
    organ("pancreas", (10.0, 18.0, -25.0), (55.0, 11.0, 12.0), 80.0)
    organ("kidney_left", (65.0, 55.0, -65.0), (26.0, 24.0, 50.0), 140.0)
    organ("kidney_right", (-65.0, 55.0, -85.0), (26.0, 24.0, 50.0), 140.0)
    organ("urinary_bladder", (0.0, -45.0, -150.0), (40.0, 35.0, 30.0), 5.0)
    cv.paint(cv.cylinder((-22.0, 35.0), (12.0, 12.0), (-110.0, 40.0)), lab("inferior_vena_cava"), 120.0)
    cv.paint(cv.cylinder((15.0, 44.0), (11.0, 11.0), (-110.0, 110.0)), lab("aorta"), 160.0)

    # lungs, split into lobes by an oblique fissure (and a horizontal one on the right)
    for side, centre, semi in (("left", (80.0, 15.0, 100.0), (55.0, 85.0, 75.0)),
                               ("right", (-80.0, 15.0, 95.0), (60.0, 85.0, 80.0))):
        c, s = _jitter(rng, centre, semi)
        organs[f"lung_{side}"] = (c, s)
        shape_ = cv.ellipsoid(c, s)
        if shape_ is None:
            continue
        win, mask = shape_
        dw = (cv.axes[0][win[0]] - c[2])[:, None, None]
        dv = (cv.axes[1][win[1]] - c[1])[None, :, None]
        upper_side = (dw - 0.8 * dv + 10.0) > 0  # anterior-superior of the oblique fissure
        upper_side = np.broadcast_to(upper_side, mask.shape)
        lobe = np.where(upper_side, lab(f"lung_upper_lobe_{side}"), lab(f"lung_lower_lobe_{side}"))
        if side == "right":
            middle = upper_side & np.broadcast_to(dw < 5.0, mask.shape)
            lobe = np.where(middle, lab("lung_middle_lobe_right"), lobe)
        cv.labels[win][mask] = lobe[mask].astype(np.uint8)
        cv.hu[win][mask] = -850.0
    organ("heart", (15.0, -25.0, 80.0), (55.0, 45.0, 50.0), 50.0)
    cv.paint(cv.cylinder((0.0, -5.0), (9.0, 9.0), (120.0, 1e4)), lab("trachea"), _AIR_HU)
    cv.paint(cv.cylinder((4.0, 40.0), (7.0, 7.0), (30.0, 1e4)), lab("esophagus"), 30.0)
    cv.paint(cv.ellipsoid((0.0, -108.0, 90.0), (15.0, 7.0, 55.0)), lab("sternum"), 500.0)

    # lesions: (id, host description, centre, radius mm, HU, lesion type, window)
    liver_c, liver_s = organs["liver"]
    kl_c, _ = organs["kidney_left"]
    rl_c, rl_s = organs["lung_right"]
    ll_c, _ = organs["lung_left"]
    l2_c, _ = organs["vertebrae_L2"]

    def at(c: Sequence[float], du: float, dv: float, dw: float) -> tuple[float, float, float]:
        return cv.snap((c[0] + du, c[1] + dv, c[2] + dw))

    # lung mass: centred on the right lung's oblique fissure, 8 mm from its lateral wall
    mass_w = cv.snap((0.0, 0.0, rl_c[2] - 6.0))[2]
    mass_centre = cv.snap((rl_c[0] - (rl_s[0] - 8.0), rl_c[1] + (mass_w - rl_c[2] + 10.0) / 0.8, mass_w))
    # beside the left kidney: one empty voxel column (or none for coarse voxels) between them
    kz, ky, kx = cv.index(kl_c)
    row = np.flatnonzero(cv.labels[kz, ky] == lab("kidney_left"))
    sx = spacing3[2]
    near_r = 6.0
    gap = 1 if 1.5 * sx <= 4.5 else 0
    near_x = int(row.max()) + 1 + gap + math.floor(near_r / sx) if row.size else kx
    near_centre = (float(cv.axes[2][min(near_x, shp[2] - 1)]), float(cv.axes[1][ky]), float(cv.axes[0][kz]))

    designs: list[tuple[str, tuple[float, float, float], float, float, str, str, ExpectedHost]] = [
        ("liver-small", at(liver_c, -15, 10, -10), 6.0, 30.0, "liver", "abdomen",
         ExpectedHost("inside", ("liver",), "liver", "inside")),
        ("liver-large", at(liver_c, -25, -5, -5), 22.0, 35.0, "liver", "abdomen",
         ExpectedHost("inside", ("liver",), "liver", "inside")),
        ("kidney-left", at(kl_c, 0, 0, -15), 9.0, 10.0, "kidney", "abdomen",
         ExpectedHost("inside", ("kidney_left",), "kidney_left", "inside")),
        ("lung-rll", at(rl_c, -10, 45, -35), 5.0, 20.0, "lung", "lung",
         ExpectedHost("inside", ("lung_lower_lobe_right",), "lung_right", "inside")),
        ("lung-lul", at(ll_c, 5, -30, 35), 6.0, 25.0, "lung", "lung",
         ExpectedHost("inside", ("lung_upper_lobe_left",), "lung_left", "inside")),
        ("spine-l2", cv.snap(l2_c), 7.0, 900.0, "bone", "bone",
         ExpectedHost("inside", ("vertebrae_L2",), "spine", "inside")),
        ("liver-edge", at(liver_c, -(liver_s[0] + 4.0), 0, -10), 10.0, 40.0, "liver", "abdomen",
         ExpectedHost("adjacent", ("liver",), "liver", "adjacent")),
        ("kidney-near", near_centre, near_r, 45.0, "kidney", "abdomen",
         ExpectedHost("adjacent", ("kidney_left",), "kidney_left", "adjacent")),
        ("fat", cv.snap((40.0, -100.0, -90.0)), 7.0, 35.0, "soft tissue", "abdomen",
         ExpectedHost("unmatched", (), None, "unmatched")),
        ("lung-mass", mass_centre, 15.0, 35.0, "lung", "lung",
         ExpectedHost("adjacent",
                      ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"),
                      "lung_right", "inside")),
    ]

    lesions: list[LesionRecord] = []
    key_lesions: list[LesionRecord] = []
    expected: dict[str, ExpectedHost] = {}
    for lesion_id, centre, radius, hu, ltype, window, exp in designs:
        shape_ = cv.ellipsoid(centre, (radius, radius, radius))
        centre_idx = cv.index(centre)
        mask = np.zeros(shp, dtype=bool)
        if shape_ is not None:
            win, m = shape_
            mask[win] = m
        mask[centre_idx] = True  # a lesion always covers at least its centre voxel
        cv.hu[mask] = hu
        zz, yy, xx = np.nonzero(mask)
        box3 = (float(xx.min()), float(yy.min()), float(zz.min()),
                float(xx.max() + 1), float(yy.max() + 1), float(zz.max() + 1))
        key = centre_idx[0]
        rows, cols = np.nonzero(mask[key])
        box2 = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        common: dict[str, Any] = {
            "image": "phantom",
            "lesion_type": ltype,
            "modality": "CT",
            "window": _WINDOWS[window],
            "source": "medcurric-phantom",
            "extra": {"hu": hu, "diameter_mm": 2.0 * radius,
                      "centre_mm": [round(float(v), 3) for v in centre]},
        }
        lesions.append(LesionRecord(id=lesion_id, box=box3, spacing=spacing3, **common))
        key_lesions.append(LesionRecord(id=f"{lesion_id}-key", box=box2, slice_index=key,
                                        spacing=(spacing3[1], spacing3[2]), **common))
        expected[lesion_id] = exp

    noise = rng.standard_normal(shp, dtype=np.float32) * 8.0
    hu_arr = np.clip(np.rint(cv.hu + noise), -1024, 3071).astype(np.int16)
    return Phantom(
        hu=hu_arr,
        labels=cv.labels,
        class_map=cm,
        spacing=spacing3,
        affine=_affine(shp, spacing3),
        lesions=tuple(lesions),
        key_slice_lesions=tuple(key_lesions),
        expected=expected,
        seed=int(seed),
    )


def phantom_dataset(cases: int = 3) -> list[Case]:
    """Phantoms of seeds ``0 .. cases - 1`` as a dataset of in-memory cases.

    Each case holds one phantom's label map and its key-slice lesions, renamed
    ``phantom<seed>/<id>`` on image ``phantom<seed>`` (source ``medcurric-phantom``),
    ready for :func:`medcurric.seeds.write_seeds` or :func:`medcurric.io.load_case`.
    Each record carries the slice's ``(width, height)`` as ``extra["image_size"]``, so
    its seed knows the image size an Easy prompt needs.

    Examples:
        >>> cases = phantom_dataset(2)
        >>> [(c.key, len(c.records)) for c in cases], cases[0].records[0].extra["image_size"]
        ([('phantom0', 10), ('phantom1', 10)], [128, 128])
    """
    out = []
    for seed in range(cases):
        ph = make_phantom(seed=seed)
        size = [int(ph.shape[2]), int(ph.shape[1])]  # a key slice is [H, W] = shape[1:]
        records = [
            replace(r, id=f"phantom{seed}/{r.id}", image=f"phantom{seed}", source="medcurric-phantom",
                    extra={**r.extra, "image_size": size})
            for r in ph.key_slice_lesions
        ]
        out.append(Case(key=f"phantom{seed}", records=records, label_map=ph.label_map()))
    return out


def _affine(shape: tuple[int, ...], spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel ``(x, y, z, 1)`` -> RAS+ mm, with the volume centre at the origin."""
    d, h, w = shape
    sz, sy, sx = spacing
    aff = np.eye(4)
    aff[0, 0], aff[0, 3] = -sx, sx * (w / 2.0 - 0.5)
    aff[1, 1], aff[1, 3] = -sy, sy * (h / 2.0 - 0.5)
    aff[2, 2], aff[2, 3] = sz, -sz * (d / 2.0 - 0.5)
    return aff
