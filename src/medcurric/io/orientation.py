"""Reorient voxel arrays to the library's canonical axes and keep the affine right.

Files store voxels in any order and direction; their affine says where each voxel
lies in patient RAS+ millimetres. medcurric works on arrays indexed ``[z, y, x]``
where ``x`` runs towards the patient's left, ``y`` towards posterior and ``z``
towards superior: the axial slices look as radiologists view them (and as DICOM
pixel data and DeepLesion PNG key slices are stored), so a box drawn in image
pixels lands on the same voxels whatever the file's orientation. In NIfTI
axis-code terms the voxel axes ``(x, y, z)`` are ``("L", "P", "S")``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medcurric.errors import ShapeError

__all__ = ["CANONICAL_AXCODES", "Reorientation", "orientation_codes", "reorient_to_canonical"]

#: Axis codes of the canonical voxel axes ``(x, y, z)``: towards Left, Posterior, Superior.
CANONICAL_AXCODES: tuple[str, str, str] = ("L", "P", "S")

# Per world (RAS) axis: the code of its positive and negative direction.
_CODES = (("R", "L"), ("A", "P"), ("S", "I"))
# Direction each canonical axis must point in, as a sign of the RAS world axis it follows.
_CANONICAL_SIGN = (-1.0, -1.0, 1.0)


def _axis_assignment(affine: np.ndarray) -> tuple[list[int], list[float]]:
    """For each voxel axis, the RAS world axis it is closest to and the sign of that direction."""
    rzs = np.ascontiguousarray(np.asarray(affine, dtype=np.float64)[:3, :3])
    world, signs = _axis_assignment_of(rzs.tobytes())  # cases of a dataset share a few affines
    return list(world), list(signs)


@functools.lru_cache(maxsize=256)
def _axis_assignment_of(rzs_bytes: bytes) -> tuple[tuple[int, ...], tuple[float, ...]]:
    rzs = np.frombuffer(rzs_bytes, dtype=np.float64).reshape(3, 3)
    zooms = np.sqrt((rzs**2).sum(axis=0))
    if not np.all(np.isfinite(rzs)) or np.any(zooms == 0):
        raise ShapeError(
            f"Expected an affine whose 3 x 3 part has non-zero, finite columns, but got\n{rzs}."
        )
    rs = rzs / zooms
    # Nearest orthogonal matrix (as nibabel.orientations.io_orientation does) then a greedy,
    # largest-cosine-first assignment of voxel axes to distinct world axes.
    u, _, vt = np.linalg.svd(rs)
    r = np.abs(u @ vt)
    signed = u @ vt
    world = [-1, -1, -1]
    taken_w: set[int] = set()
    order = np.dstack(np.unravel_index(np.argsort(-r, axis=None), r.shape))[0]
    for w, v in order:
        if world[v] == -1 and w not in taken_w:
            world[v] = int(w)
            taken_w.add(int(w))
    signs = [float(np.sign(signed[world[v], v]) or 1.0) for v in range(3)]
    return tuple(world), tuple(signs)


def orientation_codes(affine: np.ndarray) -> tuple[str, str, str]:
    """Return the direction each voxel axis ``(i, j, k)`` points in, as RAS+ letters.

    Args:
        affine: 4 x 4 voxel -> RAS+ mm matrix.

    Returns:
        Three letters out of ``R/L``, ``A/P``, ``S/I`` (nibabel's ``aff2axcodes`` convention).

    Examples:
        >>> orientation_codes(np.diag([-1.0, -1.0, 2.0, 1.0]))
        ('L', 'P', 'S')
        >>> orientation_codes(np.eye(4))
        ('R', 'A', 'S')
    """
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ShapeError(f"Expected a 4 x 4 affine, but got shape {aff.shape}.")
    world, signs = _axis_assignment(aff)
    return tuple(_CODES[w][0 if s > 0 else 1] for w, s in zip(world, signs, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class Reorientation:
    """How a stored ``(i, j, k)`` voxel grid maps onto the canonical ``[z, y, x]`` array.

    Attributes:
        source_axis: For canonical ``(x, y, z)``, the stored axis (0, 1 or 2) it comes from.
        flip: For canonical ``(x, y, z)``, whether the stored axis runs the other way.
        shape: The stored grid's shape ``(ni, nj, nk)``.
        affine: The canonical array's affine (voxel ``(x, y, z, 1)`` -> RAS+ mm).
        source_affine: The stored grid's affine.

    Examples:
        >>> r = Reorientation.from_affine(np.eye(4), (4, 3, 2))  # stored RAS
        >>> r.canonical_shape, r.flip
        ((2, 3, 4), (True, True, False))
        >>> r.to_canonical_index((0, 0, 1))   # (z, y, x)
        (1, 2, 3)
    """

    source_axis: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    affine: np.ndarray
    source_affine: np.ndarray

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: Sequence[int]) -> Reorientation:
        """Work out the reorientation of a stored grid of ``shape`` with ``affine``.

        Args:
            affine: The stored grid's 4 x 4 voxel ``(i, j, k, 1)`` -> RAS+ mm matrix.
            shape: The stored grid's shape, at least 3 axes (extra axes are ignored).

        Returns:
            The reorientation.
        """
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ShapeError(f"Expected a 4 x 4 affine, but got shape {aff.shape}.")
        if len(shape) < 3:
            raise ShapeError(
                f"Expected a stored grid of at least 3 axes, but got shape {tuple(shape)}."
            )
        ni, nj, nk = (int(n) for n in shape[:3])
        world, signs = _axis_assignment(aff)
        source = [world.index(c) for c in range(3)]  # canonical c follows world axis c
        flip = [signs[source[c]] != _CANONICAL_SIGN[c] for c in range(3)]
        dims = (ni, nj, nk)
        # stored_ijk = T @ canonical_xyz (homogeneous)
        t = np.zeros((4, 4))
        t[3, 3] = 1.0
        for c in range(3):
            s = source[c]
            if flip[c]:
                t[s, c] = -1.0
                t[s, 3] = dims[s] - 1
            else:
                t[s, c] = 1.0
        return cls(
            source_axis=(source[0], source[1], source[2]),
            flip=(flip[0], flip[1], flip[2]),
            shape=dims,
            affine=aff @ t,
            source_affine=aff,
        )

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Shape ``(nz, ny, nx)`` of the canonical array."""
        return (
            self.shape[self.source_axis[2]],
            self.shape[self.source_axis[1]],
            self.shape[self.source_axis[0]],
        )

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Return the canonical ``[z, y, x]`` view of stored ``(i, j, k)`` data (no copy).

        Args:
            data: Stored voxels, shape ``(ni, nj, nk)``.

        Returns:
            A view indexed ``[z, y, x]``.
        """
        if tuple(data.shape[:3]) != self.shape or data.ndim != 3:
            raise ShapeError(f"Expected stored data of shape {self.shape}, but got {data.shape}.")
        return self._apply(data)

    def apply_slab(self, data: np.ndarray) -> np.ndarray:
        """Like :meth:`apply` for a slab: stored data with fewer voxels along the z source axis.

        The slab's slices come out in canonical (inferior -> superior) order.
        """
        want = list(self.shape)
        want[self.source_axis[2]] = data.shape[self.source_axis[2]] if data.ndim == 3 else -1
        if data.ndim != 3 or tuple(data.shape) != tuple(want):
            raise ShapeError(
                f"Expected a stored slab shaped like {self.shape}, but got {data.shape}."
            )
        return self._apply(data)

    def _apply(self, data: np.ndarray) -> np.ndarray:
        sx, sy, sz = self.source_axis
        out = np.transpose(data, (sz, sy, sx))
        flips = [ax for ax, c in ((0, 2), (1, 1), (2, 0)) if self.flip[c]]
        return np.flip(out, axis=tuple(flips)) if flips else out

    def invert(self, canonical: np.ndarray) -> np.ndarray:
        """Return stored ``(i, j, k)`` data from a canonical ``[z, y, x]`` array (undoes apply)."""
        want = self.canonical_shape
        if tuple(canonical.shape) != want:
            raise ShapeError(
                f"Expected a canonical array of shape {want}, but got {canonical.shape}."
            )
        flips = [ax for ax, c in ((0, 2), (1, 1), (2, 0)) if self.flip[c]]
        arr = np.flip(canonical, axis=tuple(flips)) if flips else canonical
        # arr axes are (z, y, x) = stored axes (sz, sy, sx); put them back in stored order.
        sx, sy, sz = self.source_axis
        perm = np.argsort([sz, sy, sx])
        return np.transpose(arr, tuple(int(p) for p in perm))

    def to_canonical_index(self, ijk: Sequence[int]) -> tuple[int, int, int]:
        """Map a stored voxel index ``(i, j, k)`` to the canonical ``(z, y, x)`` array index."""
        xyz = []
        for c in range(3):
            s = self.source_axis[c]
            v = int(ijk[s])
            xyz.append(self.shape[s] - 1 - v if self.flip[c] else v)
        return (xyz[2], xyz[1], xyz[0])

    def stored_slice(self, z: int) -> tuple[int, int]:
        """Return ``(stored axis, stored index)`` of canonical axial slice ``z``."""
        s = self.source_axis[2]
        return s, (self.shape[s] - 1 - int(z)) if self.flip[2] else int(z)

    def canonical_z(self, stored_index: int) -> int:
        """Return the canonical slice index of a slice counted along the stored S-I axis."""
        s = self.source_axis[2]
        return self.shape[s] - 1 - int(stored_index) if self.flip[2] else int(stored_index)

    def spacing(self) -> tuple[float, float, float]:
        """Millimetres per canonical array axis ``(sz, sy, sx)``."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def reorient_to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient stored ``(i, j, k)`` voxels to a canonical ``[z, y, x]`` array and its affine.

    Args:
        data: Voxels in storage order, shape ``(ni, nj, nk)`` (NIfTI/nibabel order).
        affine: 4 x 4 voxel ``(i, j, k, 1)`` -> RAS+ mm matrix of ``data``.

    Returns:
        ``(array, affine)``: a view indexed ``[z, y, x]`` with ``x`` towards the patient's left,
        ``y`` posterior, ``z`` superior, and the affine mapping ``(x, y, z, 1)`` to RAS+ mm.

    Examples:
        >>> data = np.arange(24).reshape(4, 3, 2)            # stored RAS: i right, j anterior
        >>> arr, aff = reorient_to_canonical(data, np.eye(4))
        >>> arr.shape
        (2, 3, 4)
        >>> int(arr[0, 0, 0]) == int(data[3, 2, 0])          # x=0 is the rightmost stored i
        True
        >>> (aff @ [0, 0, 0, 1])[:3].tolist()                 # same place in the patient
        [3.0, 2.0, 0.0]
    """
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ShapeError(f"Expected stored data with 3 axes (i, j, k), but got shape {arr.shape}.")
    r = Reorientation.from_affine(affine, arr.shape)
    return r.apply(arr), r.affine
