"""Exact voxel overlap between boxes and label maps (organ segmentations).

A *label map* holds one integer label per pixel/voxel, indexed ``[y, x]`` or
``[z, y, x]``; label ``0`` is the background and is kept as column 0 of every
result, so column ``l`` always means label ``l``. A *mask stack* (``binary=True``)
holds one channel per organ, ``[L, y, x]`` or ``[L, z, y, x]``, nonzero meaning
inside; channels may overlap and there is no implicit background column.

Pixels belong to a box by the centre rule of :mod:`medcurric.geometry.boxes`.
Three cases are supported:

* 2D boxes ``[N, 4]`` on a 2D label map ``[H, W]``;
* 3D boxes ``[N, 6]`` on a volume ``[D, H, W]``;
* 2D boxes on one slice of a volume: pass ``slice_index`` (one int for all boxes,
  or one per box), e.g. DeepLesion key slices on a TotalSegmentator volume.

Counting runs in compiled kernels on the CPU (numba) and with torch operations
on other devices; numpy in -> numpy out, torch in -> torch out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

import numpy as np
import torch

from medcurric.errors import DataFormatError, InvalidBoxError, ShapeError, WrongTypeError
from medcurric.geometry.boxes import (
    BoxesLike,
    _as_boxes,
    _axis_sizes,
    _check_boxes,
    _np,
    _pixel_ranges,
)

__all__ = ["MAX_LABEL", "Overlap", "box_mask_overlap", "label_histogram"]

#: Largest label value a label map may hold. Results have one column per label value
#: (``[N, max label + 1]``), so one stray voxel labelled 5e8 would ask for gigabytes;
#: every uint8/uint16 map fits. Compact larger ids first:
#: ``np.unique(label_map, return_inverse=True)``.
MAX_LABEL = 65535

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Overlap(Generic[ArrayT]):
    """Voxel counts shared by ``N`` boxes and ``L`` labels (or mask channels).

    Attributes:
        intersection: int64 ``[N, L]``: voxels of label ``l`` inside box ``n``.
        box_area: int64 ``[N]``: voxels inside box ``n`` by the centre rule (after
            clipping), so ``intersection.sum(1) == box_area`` for label maps.
        label_area: int64 ``[L]``: voxels of each label in the whole map (2D and 3D
            cases) or in the slice (one ``slice_index`` for all boxes), or
            ``[N, L]`` in the slice of each box when ``slice_index`` is per box.

    Shape:
        - intersection: ``[N, L]``; box_area: ``[N]``; label_area: ``[L]`` or ``[N, L]``.

    Examples:
        >>> import numpy as np
        >>> lab = np.zeros((4, 4), dtype=np.uint8); lab[:, 2:] = 1
        >>> ov = box_mask_overlap([[0, 0, 4, 2]], lab)
        >>> ov.intersection.tolist(), ov.box_area.tolist(), ov.label_area.tolist()
        ([[4, 4]], [8], [8, 8])
        >>> ov.ioa().tolist(), ov.iou().tolist()
        ([[0.5, 0.5]], [[0.3333333333333333, 0.3333333333333333]])
    """

    intersection: ArrayT
    box_area: ArrayT
    label_area: ArrayT

    @property
    def num_boxes(self) -> int:
        """Number of boxes ``N``."""
        return int(self.intersection.shape[0])

    @property
    def num_labels(self) -> int:
        """Number of labels (columns) ``L``, background included."""
        return int(self.intersection.shape[1])

    def iou(self) -> ArrayT:
        """Intersection over union of each box with each label, float64 ``[N, L]``.

        ``union = box_area + label_area - intersection``; 0 where the union is empty.

        Returns:
            float64 ``[N, L]`` in ``[0, 1]`` (same array type and device as the fields).
        """
        inter = self.intersection
        union = self.box_area[:, None] + self.label_area - inter
        return _safe_div(inter, union)

    def ioa(self) -> ArrayT:
        """Intersection over box area: the fraction of each box inside each label.

        Returns:
            float64 ``[N, L]`` in ``[0, 1]``; 0 for boxes that cover no voxel.
        """
        return _safe_div(self.intersection, self.box_area[:, None])


def _safe_div(num: Any, den: Any) -> Any:
    if isinstance(num, torch.Tensor):
        num64 = num.to(torch.float64)
        den64 = torch.as_tensor(den, device=num.device).to(torch.float64).expand_as(num64)
        return torch.where(den64 > 0, num64 / den64.clamp(min=1), torch.zeros_like(num64))
    num_np = np.asarray(num, dtype=np.float64)
    den_np = np.broadcast_to(np.asarray(den, dtype=np.float64), num_np.shape)
    out = np.zeros(num_np.shape, dtype=np.float64)
    np.divide(num_np, den_np, out=out, where=den_np > 0)
    return out


# ---------------------------------------------------------------------------
# Label map preparation
# ---------------------------------------------------------------------------

_INT_HINT = (
    "Label maps must hold non-negative integer labels; cast with "
    "np.rint(label_map).astype(np.int32) (a NIfTI read with get_fdata() is float: "
    "use np.asarray(img.dataobj) instead)."
)


def _as_label_array(label_map: Any, *, name: str = "label_map") -> np.ndarray | torch.Tensor:
    if isinstance(label_map, torch.Tensor):
        if label_map.is_floating_point() or label_map.is_complex():
            raise WrongTypeError(
                f"Expected an integer {name}, but got dtype {label_map.dtype}. {_INT_HINT}"
            )
        return label_map
    try:
        arr = np.asarray(label_map)
    except (TypeError, ValueError) as exc:
        raise WrongTypeError(
            f"Expected {name} as a numpy array or torch tensor, but got {type(label_map).__name__}."
        ) from exc
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise WrongTypeError(f"Expected an integer {name}, but got dtype {arr.dtype}. {_INT_HINT}")
    return arr


def _kernel_labels(arr: np.ndarray, *, name: str = "label_map") -> np.ndarray:
    """A C-contiguous array the kernels accept (uint8, uint16, int32 or int64), same values.

    Signed small types are reinterpreted as unsigned after checking for negatives;
    bool is reinterpreted as uint8.
    """
    arr = np.ascontiguousarray(arr)
    dt = arr.dtype
    if dt == np.bool_:
        return arr.view(np.uint8)
    if dt in (np.uint8, np.uint16, np.int32, np.int64):
        return arr
    if dt in (np.int8, np.int16):
        if arr.size and int(arr.min()) < 0:
            raise _negative_error(arr, name)
        return arr.view(np.uint8 if dt == np.int8 else np.uint16)
    if dt == np.uint32 or dt == np.uint64:
        if arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise DataFormatError(f"{name} holds labels too large for int64 (max {arr.max()}).")
        return arr.astype(np.int64)
    return arr.astype(np.int64)  # other integer types (e.g. platform longs)


def _negative_error(arr: np.ndarray | torch.Tensor, name: str) -> DataFormatError:
    flat = arr.reshape(-1)
    pos = int(np.flatnonzero(_np(flat < 0))[0])
    where = np.unravel_index(pos, tuple(arr.shape))
    return DataFormatError(
        f"Expected non-negative labels in {name} (0 = background), but found "
        f"{int(flat[pos])} at index {tuple(int(i) for i in where)}. Map ignore/unknown values "
        "to a label id >= 0 (e.g. np.where(lab < 0, 0, lab)) before matching."
    )


def _too_large_error(value: int, num_labels: int, name: str) -> DataFormatError:
    return DataFormatError(
        f"Expected labels in [0, {num_labels}) for num_labels={num_labels}, but {name} holds "
        f"label {value}. Raise num_labels or leave it as None (max label + 1)."
    )


def _label_cap_error(value: int, name: str) -> DataFormatError:
    return DataFormatError(
        f"Expected labels <= MAX_LABEL = {MAX_LABEL} in {name} (results have one column per "
        f"label value), but it holds label {value}. Renumber the labels first: "
        "uniq, codes = np.unique(label_map, return_inverse=True); codes.reshape(label_map.shape)."
    )


def _histogram_np(arr: np.ndarray) -> np.ndarray:
    """Full histogram (length max + 1) of a kernel-ready contiguous label array."""
    from medcurric.geometry import _kernels

    flat = arr.reshape(-1)
    if flat.dtype == np.uint8 or flat.dtype == np.uint16:
        nbins = 256 if flat.dtype == np.uint8 else 65536
        item = flat.dtype.itemsize
        counts = np.zeros(nbins, dtype=np.int64)
        per_word = 8 // item
        head = (-flat.ctypes.data // item) % per_word if flat.size else 0
        head = min(head, flat.size)
        nw = (flat.size - head) // per_word
        if head:
            _kernels.hist_small(flat[:head], counts)
        if nw:
            words = flat[head : head + nw * per_word].view(np.uint64)
            if flat.dtype == np.uint8:
                _kernels.hist_u8_words(words, counts)
            else:
                _kernels.hist_u16_words(words, counts)
        tail = flat[head + nw * per_word :]
        if tail.size:
            _kernels.hist_small(tail, counts)
        nz = np.flatnonzero(counts)
        return counts[: int(nz[-1]) + 1] if nz.size else counts[:0]
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0:
        raise _negative_error(arr, "label_map")
    if hi > MAX_LABEL:
        raise _label_cap_error(hi, "label_map")
    counts = np.zeros(hi + 1, dtype=np.int64)
    _kernels.hist_runs(flat, counts)
    return counts


def _fit_length(counts: np.ndarray, num_labels: int | None, name: str) -> np.ndarray:
    """Pad or check a histogram against ``num_labels``."""
    if num_labels is None:
        return counts
    if counts.shape[0] > num_labels:
        raise _too_large_error(int(counts.shape[0]) - 1, num_labels, name)
    out = np.zeros(num_labels, dtype=np.int64)
    out[: counts.shape[0]] = counts
    return out


def _check_num_labels(num_labels: int | None) -> int | None:
    if num_labels is None:
        return None
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)):
        raise WrongTypeError(f"Expected num_labels as an int or None, but got {num_labels!r}.")
    if num_labels < 0:
        raise DataFormatError(f"Expected num_labels >= 0, but got {num_labels}.")
    if num_labels > MAX_LABEL + 1:
        raise DataFormatError(
            f"Expected num_labels <= MAX_LABEL + 1 = {MAX_LABEL + 1}, but got {num_labels}."
        )
    return int(num_labels)


@overload
def label_histogram(label_map: torch.Tensor, num_labels: int | None = ...) -> torch.Tensor: ...
@overload
def label_histogram(
    label_map: np.ndarray | Sequence[Any], num_labels: int | None = ...
) -> np.ndarray: ...
def label_histogram(
    label_map: np.ndarray | torch.Tensor | Sequence[Any], num_labels: int | None = None
) -> np.ndarray | torch.Tensor:
    """Voxel count of every label in a label map (whole-volume organ sizes).

    On the CPU a compiled kernel reads uint8/uint16 maps a machine word at a time
    and counts runs of one label in a register, close to memory speed on real
    segmentations (which are long runs of one label).

    Args:
        label_map: Integer (or bool) label map of any shape; label 0 = background.
        num_labels: Length ``L`` of the result; ``None`` means max label + 1.

    Returns:
        int64 ``[L]``; ``counts[l]`` is the number of voxels with label ``l``.

    Raises:
        WrongTypeError: For float or non-numeric maps.
        DataFormatError: For negative labels, labels ``>= num_labels``, or labels
            (or ``num_labels - 1``) above :data:`MAX_LABEL`.

    Shape:
        - label_map: any -> ``[L]``.

    Examples:
        >>> import numpy as np
        >>> label_histogram(np.array([[0, 2], [2, 2]], dtype=np.uint8)).tolist()
        [1, 0, 3]
        >>> label_histogram(np.array([1, 1]), num_labels=4).tolist()
        [0, 2, 0, 0]
    """
    nl = _check_num_labels(num_labels)
    arr = _as_label_array(label_map)
    if isinstance(arr, torch.Tensor):
        if arr.device.type == "cpu":
            return torch.from_numpy(label_histogram(_torch_cpu_numpy(arr), nl))
        return _histogram_torch(arr, nl, "label_map")
    return _fit_length(_histogram_np(_kernel_labels(arr)), nl, "label_map")


def _torch_cpu_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().resolve_conj().resolve_neg().numpy()


def _may_be_negative(t: torch.Tensor) -> bool:
    """Whether a non-empty tensor's dtype is signed (unsigned torch dtypes lack ``min``)."""
    return t.numel() > 0 and t.dtype.is_signed


def _histogram_torch(t: torch.Tensor, num_labels: int | None, name: str) -> torch.Tensor:
    flat = t.reshape(-1)
    if flat.numel() == 0:
        return torch.zeros(num_labels or 0, dtype=torch.int64, device=t.device)
    if _may_be_negative(t) and bool((flat.min() < 0).item()):
        raise _negative_error(t.cpu(), name)
    top = int(flat.max().item()) if flat.dtype.itemsize > 2 else 0  # small dtypes always fit
    if top > MAX_LABEL:
        raise _label_cap_error(top, name)
    counts = torch.bincount(flat.to(torch.int64), minlength=num_labels or 0)
    if num_labels is not None and counts.shape[0] > num_labels:
        raise _too_large_error(int(counts.shape[0]) - 1, num_labels, name)
    return counts


# ---------------------------------------------------------------------------
# box_mask_overlap
# ---------------------------------------------------------------------------


def _slice_indices(slice_index: Any, n: int, depth: int) -> np.ndarray:
    """Per-box slice indices as int64 ``[N]``, validated against ``depth``."""
    if isinstance(slice_index, torch.Tensor):
        slice_index = slice_index.detach().cpu().numpy()
    if isinstance(slice_index, (bool, np.bool_)):
        raise WrongTypeError(
            f"Expected slice_index as an int or one int per box, but got {slice_index!r}."
        )
    arr = np.asarray(slice_index)
    if not np.issubdtype(arr.dtype, np.integer):
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            arr = arr.astype(np.int64)
        else:
            raise WrongTypeError(
                f"Expected slice_index as an int or one int per box, but got {slice_index!r}."
            )
    if arr.ndim == 0:
        arr = np.full(n, int(arr), dtype=np.int64)
    elif arr.shape != (n,):
        raise ShapeError(
            f"Expected slice_index as one int or {n} ints (one per box), but got shape {arr.shape}."
        )
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= depth)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidBoxError(
            f"Expected slice_index in [0, {depth}) (the volume's depth, axis 0 of [z, y, x]), "
            f"but box {i} has slice_index {int(arr[i])}."
        )
    return arr


def _kernel_ranges(ranges_xyz: np.ndarray) -> np.ndarray:
    """``[N, K, 2]`` x, y(, z) ranges -> kernel order ``[N, 6]`` (z0, z1, y0, y1, x0, x1)."""
    n, k = ranges_xyz.shape[:2]
    out = np.zeros((n, 6), dtype=np.int64)
    out[:, 4:6] = ranges_xyz[:, 0]
    out[:, 2:4] = ranges_xyz[:, 1]
    if k == 3:
        out[:, 0:2] = ranges_xyz[:, 2]
    else:
        out[:, 1] = 1
    return out


#: Costs (ns, measured with benchmarks/bench_overlap.py on a 2-core AMD EPYC VM) of
#: the two strategies for counting boxes on one plane: per-box crops read each
#: covered pixel (word-at-a-time for uint8 maps), summed-area tables cost one
#: entry per pixel and label to build, then four lookups per (box, label).
_CROP_NS_PER_PIXEL_U8 = 0.35
_CROP_NS_PER_PIXEL = 2.5
_CROP_NS_PER_ROW = 3.0
_SAT_NS_PER_ENTRY = 2.6
_SAT_NS_PER_LOOKUP = 5.0
_SAT_MAX_BYTES = 256 * 2**20


def _use_sat(
    ranges: np.ndarray, plane_shape: tuple[int, ...], num_bins: int, *, word_kernel: bool = True
) -> bool:
    """Whether summed-area tables beat per-box crops for boxes on one plane (cost model)."""
    h, w = plane_shape[-2:]
    entries = (h + 1) * (w + 1) * num_bins
    if num_bins == 0 or entries * 4 > _SAT_MAX_BYTES:
        return False
    extent = ranges[:, 1::2] - ranges[:, 0::2]
    pixels = float(np.prod(extent, axis=1).sum())
    rows = float((extent[:, 0] * extent[:, 1]).sum())
    per_pixel = _CROP_NS_PER_PIXEL_U8 if word_kernel else _CROP_NS_PER_PIXEL
    crop = per_pixel * pixels + _CROP_NS_PER_ROW * rows
    sat = _SAT_NS_PER_ENTRY * entries + _SAT_NS_PER_LOOKUP * ranges.shape[0] * num_bins
    return sat < crop


def _counts_np(
    vol: np.ndarray, ranges: np.ndarray, num_bins: int, *, plane: int | None, strategy: str | None
) -> np.ndarray:
    """int64 ``[N, num_bins]`` label counts of each box in a kernel-ready ``[D, H, W]`` volume.

    Raises DataFormatError if a box holds a label outside ``[0, num_bins)``.
    """
    from medcurric.geometry import _kernels

    out = np.zeros((ranges.shape[0], num_bins), dtype=np.int64)
    if ranges.shape[0] == 0:
        return out
    flat = vol.reshape(-1)
    word_kernel = vol.dtype == np.uint8 and flat.size % 8 == 0 and flat.ctypes.data % 8 == 0
    use_sat = (
        strategy == "sat"
        if strategy is not None
        else (plane is not None and _use_sat(ranges, vol.shape, num_bins, word_kernel=word_kernel))
    )
    if use_sat and plane is not None:
        sheet = vol[plane]
        if sheet.size and int(sheet.max()) >= num_bins:
            raise _too_large_error(int(sheet.max()), num_bins, "label_map")
        sat = _kernels.label_sat(sheet, num_bins)
        _kernels.sat_lookup(sat, ranges, out)
        return out
    if word_kernel:
        wide = np.zeros((ranges.shape[0], 256), dtype=np.int64)
        _kernels.box_label_counts_u8(
            flat.view(np.uint64), np.asarray(vol.shape, dtype=np.int64), ranges, wide
        )
        extra = np.flatnonzero(wide[:, num_bins:].any(axis=0))
        if extra.size:
            raise _too_large_error(int(extra[-1]) + num_bins, num_bins, "label_map")
        out[:, : min(num_bins, 256)] = wide[:, :num_bins]
        return out
    bad = int(_kernels.box_label_counts(vol, ranges, out))
    if bad >= 0:
        value = int(vol.reshape(-1)[bad])
        if value < 0:
            raise _negative_error(vol, "label_map")
        raise _too_large_error(value, num_bins, "label_map")
    return out


def _counts_torch(
    vol: torch.Tensor, ranges: np.ndarray, num_bins: int, binary: bool
) -> torch.Tensor:
    """Pure-torch per-box counts (any device). ``vol`` is ``[D, H, W]`` or ``[L, D, H, W]``."""
    rows = []
    for z0, z1, y0, y1, x0, x1 in ranges.tolist():
        if binary:
            crop = vol[:, z0:z1, y0:y1, x0:x1]
            rows.append((crop != 0).sum(dim=(1, 2, 3)))
        else:
            crop = vol[z0:z1, y0:y1, x0:x1].reshape(-1).to(torch.int64)
            if crop.numel() and int(crop.max().item()) >= num_bins:  # before bincount allocates
                raise _too_large_error(int(crop.max().item()), num_bins, "label_map")
            counts = torch.bincount(crop, minlength=num_bins)
            if counts.shape[0] > num_bins:
                raise _too_large_error(int(counts.shape[0]) - 1, num_bins, "label_map")
            rows.append(counts)
    if not rows:
        return torch.zeros((0, num_bins), dtype=torch.int64, device=vol.device)
    return torch.stack(rows).to(torch.int64)


def _use_torch_kernels(t: torch.Tensor) -> bool:
    """Whether a tensor is counted with torch operations (non-CPU devices) or compiled kernels."""
    return t.device.type != "cpu"


@overload
def box_mask_overlap(
    boxes: BoxesLike,
    label_map: torch.Tensor,
    *,
    slice_index: int | Sequence[int] | np.ndarray | torch.Tensor | None = ...,
    num_labels: int | None = ...,
    clip: bool = ...,
    binary: bool = ...,
    label_area: np.ndarray | torch.Tensor | Sequence[int] | None = ...,
) -> Overlap[torch.Tensor]: ...
@overload
def box_mask_overlap(
    boxes: BoxesLike,
    label_map: np.ndarray | Sequence[Any],
    *,
    slice_index: int | Sequence[int] | np.ndarray | torch.Tensor | None = ...,
    num_labels: int | None = ...,
    clip: bool = ...,
    binary: bool = ...,
    label_area: np.ndarray | torch.Tensor | Sequence[int] | None = ...,
) -> Overlap[np.ndarray]: ...
def box_mask_overlap(
    boxes: BoxesLike,
    label_map: np.ndarray | torch.Tensor | Sequence[Any],
    *,
    slice_index: int | Sequence[int] | np.ndarray | torch.Tensor | None = None,
    num_labels: int | None = None,
    clip: bool = False,
    binary: bool = False,
    label_area: np.ndarray | torch.Tensor | Sequence[int] | None = None,
) -> Overlap[Any]:
    """Exact voxel overlap of every box with every label of a label map.

    Args:
        boxes: ``[N, 4]`` 2D or ``[N, 6]`` 3D xyxy boxes in pixels (centre rule).
        label_map: Integer/bool label map ``[H, W]`` or ``[D, H, W]`` (any integer
            dtype, labels >= 0, 0 = background kept as column 0), or with
            ``binary=True`` a mask stack ``[L, H, W]`` / ``[L, D, H, W]``.
        slice_index: For 2D boxes on a volume: the z index of the slice the boxes
            lie on, one int for all boxes or one per box. Must be ``None`` otherwise.
        num_labels: Number of columns ``L``; ``None`` means max label + 1 over the
            whole map (independent of the boxes). Labels ``>= L`` raise. With
            ``binary=True`` it must equal the number of channels if given.
        clip: Clip boxes to the image instead of raising for boxes outside it.
        binary: Treat ``label_map`` as a stack of (possibly overlapping) masks, one
            channel per label; nonzero means inside.
        label_area: Precomputed ``label_area`` (``[L]`` or ``[N, L]``), for example
            ``label_histogram(volume)`` reused across many calls on one map; taken
            as given. ``L`` is then its length.

    Returns:
        An :class:`Overlap` with int64 ``intersection [N, L]``, ``box_area [N]``
        and ``label_area``; numpy arrays for a numpy/list ``label_map``, torch
        tensors on the map's device for a torch ``label_map``.

    Raises:
        ShapeError: On box/map dimension mismatches (e.g. 2D boxes on a volume
            without ``slice_index``), or wrong ``slice_index``/``label_area`` shapes.
        InvalidBoxError: On NaN/inf, inverted, or (without ``clip``) outside boxes,
            or a ``slice_index`` outside the volume.
        DataFormatError: On negative labels, labels ``>= num_labels``, or labels
            (or ``num_labels - 1``) above :data:`MAX_LABEL`.
        WrongTypeError: On a float label map or a non-numeric input.

    Shape:
        - boxes: ``[N, 4]`` or ``[N, 6]``; label_map: ``[H, W]``, ``[D, H, W]`` (or
          ``[L, ...]`` with ``binary``) -> intersection ``[N, L]``.

    Examples:
        >>> import numpy as np
        >>> vol = np.zeros((3, 4, 4), dtype=np.uint8); vol[1:, 1:3, 1:3] = 5
        >>> ov = box_mask_overlap([[0, 0, 0, 4, 4, 3]], vol)
        >>> ov.intersection[:, [0, 5]].tolist(), ov.box_area.tolist()
        ([[40, 8]], [48])
        >>> float(box_mask_overlap([[1, 1, 3, 3]], vol, slice_index=2).ioa()[0, 5])
        1.0
    """
    nl = _check_num_labels(num_labels)
    lm = _as_label_array(label_map)
    is_t = isinstance(lm, torch.Tensor)
    spatial = tuple(int(s) for s in (lm.shape[1:] if binary else lm.shape))
    if len(spatial) not in (2, 3):
        want = "[L, H, W] or [L, D, H, W] (binary=True)" if binary else "[H, W] or [D, H, W]"
        raise ShapeError(f"Expected label_map of shape {want}, but got {tuple(lm.shape)}.")
    b = _as_boxes(boxes)
    dims = 2 if b.shape[1] == 4 else 3
    if dims == 3 and len(spatial) == 2:
        raise ShapeError(
            f"Expected 2D boxes [N, 4] for a 2D label map of shape {spatial}, but got 3D boxes "
            f"of shape {tuple(b.shape)}."
        )
    if dims == 3 and slice_index is not None:
        raise ShapeError(
            "slice_index is only for 2D boxes [N, 4] on a volume; got 3D boxes [N, 6]."
        )
    if dims == 2 and len(spatial) == 3 and slice_index is None:
        raise ShapeError(
            f"Expected slice_index for 2D boxes [N, 4] on a volume of shape {spatial} "
            "(which z slice the boxes lie on), or 3D boxes [N, 6]."
        )
    if len(spatial) == 2 and slice_index is not None:
        raise ShapeError(
            f"slice_index is only for volumes, but label_map is 2D with shape {spatial}. "
            "Drop slice_index, or pass the whole volume."
        )
    plane_shape = spatial[-2:] if dims == 2 else spatial
    _check_boxes(b, plane_shape, inside=not clip)
    n = int(b.shape[0])
    b_np = _np(b)
    ranges = _kernel_ranges(_pixel_ranges(b_np, _axis_sizes(plane_shape, dims)))
    slices: np.ndarray | None = None  # per box, or the one shared slice
    per_box = False
    if dims == 2 and len(spatial) == 3:
        slices = _slice_indices(slice_index, n, spatial[0])
        ranges[:, 0] = slices
        ranges[:, 1] = slices + 1
        per_box = np.ndim(_np(slice_index)) > 0
        if not per_box:
            slices = _slice_indices(slice_index, 1, spatial[0])
    box_area = np.prod(ranges[:, 1::2] - ranges[:, 0::2], axis=1).astype(np.int64)

    given_area: np.ndarray | torch.Tensor | None = None
    if label_area is not None:
        given_area = (
            label_area
            if isinstance(label_area, torch.Tensor)
            else np.asarray(label_area, dtype=np.int64)
        )
        if given_area.ndim not in (1, 2) or (given_area.ndim == 2 and given_area.shape[0] != n):
            raise ShapeError(
                f"Expected label_area of shape [L] or [N, L] with N = {n}, but got "
                f"{tuple(given_area.shape)}."
            )
        if nl is not None and given_area.shape[-1] != nl:
            raise ShapeError(
                f"label_area has {given_area.shape[-1]} labels but num_labels={nl}; they must agree."
            )
        nl = int(given_area.shape[-1])

    if binary:
        channels = int(lm.shape[0])
        if nl is not None and nl != channels:
            raise ShapeError(
                f"Expected num_labels={nl} to equal the number of mask channels, but the stack "
                f"has {channels} (shape {tuple(lm.shape)})."
            )
        result = _binary_overlap(lm, ranges, slices, spatial)
        inter, areas = result
    else:
        inter, areas = _label_overlap(lm, ranges, slices, spatial, nl, need_area=given_area is None)
    if given_area is not None:
        areas = given_area
    elif per_box and areas.ndim == 1:
        # one slice_index per box: keep the documented [N, L] shape even if all agree
        areas = (
            areas[None, :].expand(n, -1).clone()
            if isinstance(areas, torch.Tensor)
            else np.repeat(areas[None, :], n, axis=0)
        )
    if is_t:
        assert isinstance(lm, torch.Tensor)
        dev = lm.device
        return Overlap(
            intersection=torch.as_tensor(inter, device=dev),
            box_area=torch.from_numpy(box_area).to(dev),
            label_area=torch.as_tensor(areas, device=dev).to(torch.int64),
        )
    return Overlap(
        intersection=inter, box_area=box_area, label_area=np.asarray(areas, dtype=np.int64)
    )


def _as_volume(x: Any, spatial: tuple[int, ...]) -> Any:
    """Add a z axis to 2D maps: ``[H, W] -> [1, H, W]`` (also for ``[L, H, W]`` stacks)."""
    if len(spatial) == 2:
        return x[..., None, :, :]
    return x


def _label_overlap(
    lm: np.ndarray | torch.Tensor,
    ranges: np.ndarray,
    slices: np.ndarray | None,
    spatial: tuple[int, ...],
    nl: int | None,
    *,
    need_area: bool,
) -> tuple[Any, Any]:
    """Intersections and label areas for a label map (numpy or torch)."""
    n = ranges.shape[0]
    if isinstance(lm, torch.Tensor) and _use_torch_kernels(lm):
        if _may_be_negative(lm) and bool((lm.min() < 0).item()):
            raise _negative_error(lm.cpu(), "label_map")
        vol_t = _as_volume(lm, spatial)
        if need_area or nl is None:
            if slices is None:
                hist = _histogram_torch(vol_t, nl, "label_map")
                nl = int(hist.shape[0])
                area_t: Any = hist
            else:
                if nl is None:
                    nl = int(_histogram_torch(vol_t, None, "label_map").shape[0])
                area_t = _slice_areas_torch(vol_t, slices, nl)
        else:
            area_t = None
        inter_t = _counts_torch(vol_t, ranges, nl, binary=False)
        return inter_t, area_t
    arr = _torch_cpu_numpy(lm) if isinstance(lm, torch.Tensor) else lm
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise _negative_error(arr, "label_map")
    vol = _kernel_labels(_as_volume(arr, spatial))
    area: np.ndarray | None = None
    if slices is None:
        if need_area or nl is None:
            area = _fit_length(_histogram_np(vol), nl, "label_map")
            nl = int(area.shape[0])
    else:
        if nl is None:
            nl = int(vol.max()) + 1 if vol.size else 0
            if nl > MAX_LABEL + 1:
                raise _label_cap_error(nl - 1, "label_map")
        if need_area:
            area = _slice_areas_np(vol, slices, nl)
    assert nl is not None
    plane: int | None = None
    if slices is None and vol.shape[0] == 1:
        plane = 0
    elif slices is not None and n and bool(np.all(slices == slices[0])):
        plane = int(slices[0])
    inter = _counts_np(vol, ranges, nl, plane=plane, strategy=None)
    return inter, area


def _slice_areas_np(vol: np.ndarray, slices: np.ndarray, nl: int) -> np.ndarray:
    """Per-box label areas of each box's slice, ``[N, L]`` (int slice -> ``[L]``)."""
    uniq, inverse = np.unique(slices, return_inverse=True)
    words = _slice_words_u8(vol)
    if words is not None and uniq.size:
        per_slice = _slice_histograms_u8(words, uniq, nl)
    else:
        per_slice = (
            np.stack(
                [
                    _fit_length(_histogram_np(np.ascontiguousarray(vol[int(s)])), nl, "label_map")
                    for s in uniq
                ]
            )
            if uniq.size
            else np.zeros((0, nl), dtype=np.int64)
        )
    if uniq.size == 1:
        return per_slice[0]
    return per_slice[inverse.reshape(-1)]


def _slice_words_u8(vol: np.ndarray) -> np.ndarray | None:
    """``vol`` as ``[D, H * W / 8]`` uint64 words when every slice starts on a word, else None."""
    if vol.dtype != np.uint8 or vol.ndim != 3 or not vol.flags.c_contiguous or not vol.size:
        return None
    plane = vol.shape[1] * vol.shape[2]
    if plane % 8 or vol.ctypes.data % 8:
        return None
    return vol.reshape(vol.shape[0], plane).view(np.uint64)


def _slice_histograms_u8(words: np.ndarray, uniq: np.ndarray, nl: int) -> np.ndarray:
    """``[S, nl]`` label histograms of slices ``uniq`` (as ``_fit_length(_histogram_np(...))``)."""
    from medcurric.geometry import _kernels

    counts = np.zeros((uniq.size, 256), dtype=np.int64)
    for row, s in enumerate(uniq.tolist()):
        _kernels.hist_u8_words(words[s], counts[row])
    if nl < 256 and counts[:, nl:].any():
        row = int(np.flatnonzero(counts[:, nl:].any(axis=1))[0])  # the first, as a loop would
        raise _too_large_error(int(np.flatnonzero(counts[row])[-1]), nl, "label_map")
    if nl <= 256:
        return counts[:, :nl].copy()
    out = np.zeros((uniq.size, nl), dtype=np.int64)
    out[:, :256] = counts
    return out


def _slice_areas_torch(vol: torch.Tensor, slices: np.ndarray, nl: int) -> torch.Tensor:
    uniq, inverse = np.unique(slices, return_inverse=True)
    rows = [_histogram_torch(vol[int(s)], nl, "label_map") for s in uniq]
    if len(rows) == 1:
        return rows[0]
    if not rows:
        return torch.zeros((0, nl), dtype=torch.int64, device=vol.device)
    stacked = torch.stack(rows)
    return stacked[torch.from_numpy(inverse.reshape(-1)).to(vol.device)]


def _binary_overlap(
    lm: np.ndarray | torch.Tensor,
    ranges: np.ndarray,
    slices: np.ndarray | None,
    spatial: tuple[int, ...],
) -> tuple[Any, Any]:
    """Intersections and channel areas for a ``[L, ...]`` mask stack (numpy or torch)."""
    channels = int(lm.shape[0])
    if isinstance(lm, torch.Tensor) and _use_torch_kernels(lm):
        nz_t = _as_volume(lm, spatial) != 0  # [L, D, H, W]
        inter_t = _counts_torch(nz_t, ranges, channels, binary=True)
        if slices is None:
            return inter_t, nz_t.sum(dim=(1, 2, 3))
        uniq, inverse = np.unique(slices, return_inverse=True)
        per_slice = nz_t[:, torch.from_numpy(uniq).to(lm.device)].sum(dim=(2, 3)).T  # [S, L]
        if uniq.size == 1:
            return inter_t, per_slice[0]
        return inter_t, per_slice[torch.from_numpy(inverse.reshape(-1)).to(lm.device)]
    from medcurric.geometry import _kernels

    arr = _torch_cpu_numpy(lm) if isinstance(lm, torch.Tensor) else lm
    stack = _as_volume(arr, spatial)
    u8 = np.ascontiguousarray(stack if stack.dtype == np.bool_ else stack != 0).view(np.uint8)
    inter = np.zeros((ranges.shape[0], channels), dtype=np.int64)
    _kernels.box_mask_counts(u8, ranges, inter)
    if slices is None:
        return inter, np.count_nonzero(u8, axis=(1, 2, 3)).astype(np.int64)
    uniq, inverse = np.unique(slices, return_inverse=True)
    per = np.count_nonzero(u8[:, uniq], axis=(2, 3)).T.astype(np.int64)  # [S, L]
    if uniq.size == 1:
        return inter, per[0]
    return inter, per[inverse.reshape(-1)]
