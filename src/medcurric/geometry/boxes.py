"""Axis-aligned boxes in pixel units: validation, clipping, conversion, IoU, masks.

Conventions (the same everywhere in medcurric, see :doc:`/conventions`):

* 2D boxes are ``[N, 4]`` ``(x1, y1, x2, y2)`` in pixels; 3D boxes are ``[N, 6]``
  ``(x1, y1, z1, x2, y2, z2)`` in voxels. Corners may be fractional.
* Images and label maps are indexed ``[y, x]`` (a slice) or ``[z, y, x]`` (a
  volume), so an ``image_shape`` is ``(H, W)`` or ``(D, H, W)``.
* A pixel ``[r, c]`` belongs to a box iff its centre ``(c + 0.5, r + 0.5)`` lies in
  ``[x1, x2) x [y1, y2)`` (the same per axis in 3D). The integer box
  ``(0, 0, 4, 2)`` therefore covers 8 pixels, and a fractional box covers pixel
  column ``c`` iff ``x1 <= c + 0.5 < x2``.
* A box lies inside an image of shape ``(H, W)`` iff ``0 <= x1 <= x2 <= W`` and
  ``0 <= y1 <= y2 <= H``. Zero-width boxes are valid (they cover no pixel).

Every function accepts numpy arrays, nested lists and torch tensors: numpy or list
in gives numpy out, a torch tensor in gives a torch tensor out on the same device
(computed with torch operations only, so CUDA tensors work too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias, overload

import numpy as np
import torch

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import InvalidBoxError, ShapeError, WrongTypeError

__all__ = [
    "BoxFormat",
    "box_area",
    "box_convert",
    "box_iou",
    "boxes_to_masks",
    "clip_boxes",
    "masks_to_boxes",
    "validate_boxes",
]

#: Anything accepted as boxes: a numpy array, a torch tensor or a nested sequence.
BoxesLike: TypeAlias = "np.ndarray | torch.Tensor | Sequence[Sequence[float]]"


class BoxFormat(StrEnum):
    """Box coordinate formats understood by :func:`box_convert`.

    In 3D every format gains the z coordinate and the depth: ``xyxy`` is
    ``(x1, y1, z1, x2, y2, z2)``, ``xywh`` is ``(x1, y1, z1, w, h, d)`` and ``cxcywh``
    is ``(cx, cy, cz, w, h, d)``.
    """

    XYXY = "xyxy"
    XYWH = "xywh"
    CXCYWH = "cxcywh"


# ---------------------------------------------------------------------------
# Private helpers shared with overlap.py
# ---------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _as_boxes(boxes: Any, *, name: str = "boxes") -> np.ndarray | torch.Tensor:
    """Return ``boxes`` as a numpy array or a torch tensor of shape ``[N, 4]``/``[N, 6]``."""
    if isinstance(boxes, torch.Tensor):
        arr: np.ndarray | torch.Tensor = boxes
        if boxes.dtype == torch.bool or boxes.is_complex():
            raise WrongTypeError(
                f"Expected {name} as a real-valued tensor, but got dtype {boxes.dtype}."
            )
    else:
        try:
            arr = np.asarray(boxes)
        except (ValueError, TypeError) as exc:
            raise WrongTypeError(
                f"Expected {name} as a numpy array, a torch tensor or a nested list of "
                f"numbers, but got {type(boxes).__name__} that numpy cannot convert ({exc})."
            ) from exc
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
        ):
            raise WrongTypeError(
                f"Expected {name} made of real numbers, but got dtype {arr.dtype}. "
                "Pass an array of floats or ints."
            )
        if arr.size == 0 and arr.ndim == 1:  # [] means no boxes
            arr = arr.reshape(0, 4).astype(np.float64)
    if arr.ndim != 2 or arr.shape[-1] not in (4, 6):
        hint = " Add a leading axis (boxes[None]) for a single box." if arr.ndim == 1 else ""
        raise ShapeError(
            f"Expected {name} of shape [N, 4] (x1, y1, x2, y2) or [N, 6] "
            f"(x1, y1, z1, x2, y2, z2) in pixel units, but got shape {tuple(arr.shape)}.{hint}"
        )
    return arr


def _float_dtype_np(dtype: np.dtype) -> np.dtype:
    """Floating dtype used for arithmetic on boxes of ``dtype`` (numpy)."""
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _float_dtype_torch(dtype: torch.dtype) -> torch.dtype:
    """Floating dtype used for arithmetic on boxes of ``dtype`` (torch)."""
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        return torch.float32
    return torch.float64


def _spatial_dims(arr: np.ndarray | torch.Tensor) -> int:
    return 2 if arr.shape[-1] == 4 else 3


def _axis_sizes(image_shape: Sequence[int], dims: int, *, name: str = "boxes") -> tuple[int, ...]:
    """Map an ``image_shape`` in array order to per-coordinate sizes ``(W, H[, D])``."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError) as exc:
        raise WrongTypeError(
            f"Expected image_shape as a sequence of ints (H, W) or (D, H, W), "
            f"but got {image_shape!r}."
        ) from exc
    if len(shape) != dims:
        kind = "[N, 4] 2D" if dims == 2 else "[N, 6] 3D"
        want = "(H, W)" if dims == 2 else "(D, H, W)"
        raise ShapeError(
            f"Expected image_shape {want} for {kind} {name}, but got {shape}. 2D boxes go "
            "with 2D images (or one slice of a volume), 3D boxes with volumes."
        )
    if any(s < 0 for s in shape):
        raise ShapeError(f"Expected a non-negative image_shape, but got {shape}.")
    return tuple(reversed(shape))


_AXES = ("x", "y", "z")


def _check_boxes(
    arr: np.ndarray | torch.Tensor,
    image_shape: Sequence[int] | None,
    *,
    name: str = "boxes",
    inside: bool = True,
) -> None:
    """Raise :class:`InvalidBoxError` for NaN/inf, inverted or (if ``inside``) outside boxes."""
    dims = _spatial_dims(arr)
    if arr.shape[0] == 0:
        if image_shape is not None:
            _axis_sizes(image_shape, dims, name=name)
        return
    if isinstance(arr, torch.Tensor):
        finite_ok = bool(torch.isfinite(arr).all())
    else:
        finite_ok = arr.dtype.kind in "iub" or bool(np.isfinite(arr).all())
    if not finite_ok:
        bad = int(np.flatnonzero(~np.isfinite(_np(arr)).all(axis=1))[0])
        raise InvalidBoxError(
            f"Expected finite {name}, but box {bad} is {_np(arr[bad]).tolist()} "
            "(NaN or infinite coordinates). Drop or repair such boxes before matching."
        )
    if bool((arr[:, dims:] < arr[:, :dims]).any()):
        bad = int(np.flatnonzero((_np(arr[:, dims:]) < _np(arr[:, :dims])).any(axis=1))[0])
        corners = "(x1, y1, x2, y2)" if dims == 2 else "(x1, y1, z1, x2, y2, z2)"
        raise InvalidBoxError(
            f"Expected {name} in xyxy format {corners} with x2 >= x1 (and so on per axis), "
            f"but box {bad} is {_np(arr[bad]).tolist()}. If your boxes are (x, y, w, h), "
            "convert them with box_convert(boxes, 'xywh', 'xyxy')."
        )
    if image_shape is None or not inside:
        return
    sizes = _axis_sizes(image_shape, dims, name=name)
    limit = _np(arr).astype(np.float64, copy=False)
    size_arr = np.asarray(sizes, dtype=np.float64)
    outside = (limit[:, :dims] < 0).any(axis=1) | (limit[:, dims:] > size_arr).any(axis=1)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        extent = " x ".join(f"{a} in [0, {s}]" for a, s in zip(_AXES, sizes, strict=False))
        raise InvalidBoxError(
            f"Expected {name} inside the image ({extent}, from image shape "
            f"{tuple(image_shape)}), but box {bad} is {limit[bad].tolist()}. "
            "Pass clip=True to clip boxes to the image instead."
        )


def _np(x: Any) -> np.ndarray:
    """A numpy view or copy of ``x`` (torch tensors are moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _pixel_ranges(boxes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Half-open integer pixel ranges covered by ``boxes`` under the centre rule.

    Args:
        boxes: float ``[N, 2 * K]`` xyxy boxes (any dims ``K``).
        sizes: ``K`` per-coordinate sizes ``(W, H[, D])`` to clip the ranges to.

    Returns:
        int64 ``[N, K, 2]``: ``ranges[n, k] = (lo, hi)`` along coordinate ``k``;
        pixel ``c`` along that axis is covered iff ``lo <= c < hi``.
    """
    k = len(sizes)
    b = np.asarray(boxes, dtype=np.float64)
    lo = np.ceil(b[:, :k] - 0.5)
    hi = np.ceil(b[:, k:] - 0.5)
    size_arr = np.asarray(sizes, dtype=np.float64)
    lo = np.clip(lo, 0, size_arr)
    hi = np.clip(hi, 0, size_arr)
    hi = np.maximum(hi, lo)
    return np.stack([lo, hi], axis=-1).astype(np.int64)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


@overload
def validate_boxes(
    boxes: torch.Tensor, image_shape: Sequence[int] | None = ..., *, name: str = ...
) -> torch.Tensor: ...
@overload
def validate_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]],
    image_shape: Sequence[int] | None = ...,
    *,
    name: str = ...,
) -> np.ndarray: ...
def validate_boxes(
    boxes: BoxesLike, image_shape: Sequence[int] | None = None, *, name: str = "boxes"
) -> np.ndarray | torch.Tensor:
    """Check boxes and return them as an array (numpy) or the same tensor (torch).

    Checks the shape (``[N, 4]`` or ``[N, 6]``), that every coordinate is finite,
    that no box is inverted (``x2 < x1``) and, when ``image_shape`` is given, that
    every box lies inside the image (``0 <= x1 <= x2 <= W`` per axis).

    Args:
        boxes: ``[N, 4]`` or ``[N, 6]`` xyxy boxes in pixels.
        image_shape: ``(H, W)`` for 2D boxes or ``(D, H, W)`` for 3D boxes; ``None``
            skips the inside-the-image check.
        name: The argument name used in error messages.

    Returns:
        The boxes, as a numpy array for numpy/list input or the unchanged tensor.

    Raises:
        ShapeError: On a wrong shape, or an ``image_shape`` of the wrong length.
        InvalidBoxError: On NaN/inf, inverted boxes, or boxes outside the image.
        WrongTypeError: When ``boxes`` is not numeric.

    Shape:
        - boxes: ``[N, 4]`` or ``[N, 6]``.

    Examples:
        >>> validate_boxes([[0, 0, 4, 2]], image_shape=(2, 4)).tolist()
        [[0, 0, 4, 2]]
        >>> validate_boxes([[0, 0, 5, 2]], image_shape=(2, 4))
        Traceback (most recent call last):
        ...
        medcurric.errors.InvalidBoxError: Expected boxes inside the image ...
    """
    arr = _as_boxes(boxes, name=name)
    _check_boxes(arr, image_shape, name=name)
    return arr


@overload
def clip_boxes(boxes: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor: ...
@overload
def clip_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]], image_shape: Sequence[int]
) -> np.ndarray: ...
def clip_boxes(boxes: BoxesLike, image_shape: Sequence[int]) -> np.ndarray | torch.Tensor:
    """Clip boxes to the image ``[0, W] x [0, H]`` (``x [0, D]`` in 3D).

    A box wholly outside the image becomes a zero-size box on the nearest edge.

    Args:
        boxes: ``[N, 4]`` or ``[N, 6]`` xyxy boxes in pixels (finite, not inverted).
        image_shape: ``(H, W)`` or ``(D, H, W)``.

    Returns:
        Clipped boxes of the same type, dtype and shape (a new array).

    Raises:
        ShapeError: On a wrong shape.
        InvalidBoxError: On NaN/inf or inverted boxes.

    Shape:
        - boxes: ``[N, 4]`` or ``[N, 6]`` -> the same.

    Examples:
        >>> clip_boxes([[-2.0, 1.0, 9.0, 3.0]], image_shape=(2, 4)).tolist()
        [[0.0, 1.0, 4.0, 2.0]]
    """
    arr = _as_boxes(boxes)
    _check_boxes(arr, image_shape, inside=False)
    dims = _spatial_dims(arr)
    sizes = _axis_sizes(image_shape, dims)
    upper = list(sizes) * 2
    if isinstance(arr, torch.Tensor):
        hi = torch.tensor(upper, dtype=arr.dtype, device=arr.device)
        return torch.minimum(torch.clamp(arr, min=0), hi)
    return np.minimum(np.maximum(arr, 0), np.asarray(upper, dtype=arr.dtype))


@overload
def box_area(boxes: torch.Tensor) -> torch.Tensor: ...
@overload
def box_area(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray: ...
def box_area(boxes: BoxesLike) -> np.ndarray | torch.Tensor:
    """Continuous area (2D) or volume (3D) of xyxy boxes, ``(x2 - x1) * (y2 - y1)``.

    This is the geometric area; the number of pixels a box covers under the
    centre rule is :attr:`Overlap.box_area <medcurric.geometry.Overlap>`. The two
    agree for integer boxes inside the image.

    Args:
        boxes: ``[N, 4]`` or ``[N, 6]`` xyxy boxes.

    Returns:
        ``[N]`` areas; float16/bfloat16 are upcast to float32, integers to int64.

    Raises:
        ShapeError: On a wrong shape.
        InvalidBoxError: On NaN/inf or inverted boxes.

    Shape:
        - boxes: ``[N, 4]`` or ``[N, 6]`` -> ``[N]``.

    Examples:
        >>> box_area([[0, 0, 4, 2], [1, 1, 1, 5]]).tolist()
        [8, 0]
    """
    arr = _as_boxes(boxes)
    _check_boxes(arr, None)
    dims = _spatial_dims(arr)
    if isinstance(arr, torch.Tensor):
        if arr.is_floating_point():
            work = arr.to(_float_dtype_torch(arr.dtype))
        else:
            work = arr.to(torch.int64)
        ext_t = work[:, dims:] - work[:, :dims]
        return ext_t.prod(dim=1)
    warr = arr.astype(
        _float_dtype_np(arr.dtype) if np.issubdtype(arr.dtype, np.floating) else np.int64,
        copy=False,
    )
    return np.prod(warr[:, dims:] - warr[:, :dims], axis=1)


def _to_xyxy_parts(arr: Any, fmt: BoxFormat, dims: int) -> tuple[Any, Any]:
    a = arr[:, :dims]
    b = arr[:, dims:]
    if fmt == BoxFormat.XYXY:
        return a, b
    if fmt == BoxFormat.XYWH:
        return a, a + b
    half = b / 2
    return a - half, a + half


def _from_xyxy_parts(lo: Any, hi: Any, fmt: BoxFormat) -> tuple[Any, Any]:
    if fmt == BoxFormat.XYXY:
        return lo, hi
    if fmt == BoxFormat.XYWH:
        return lo, hi - lo
    return (lo + hi) / 2, hi - lo


@overload
def box_convert(
    boxes: torch.Tensor, in_fmt: str | BoxFormat, out_fmt: str | BoxFormat
) -> torch.Tensor: ...
@overload
def box_convert(
    boxes: np.ndarray | Sequence[Sequence[float]],
    in_fmt: str | BoxFormat,
    out_fmt: str | BoxFormat,
) -> np.ndarray: ...
def box_convert(
    boxes: BoxesLike, in_fmt: str | BoxFormat, out_fmt: str | BoxFormat
) -> np.ndarray | torch.Tensor:
    """Convert boxes between ``xyxy``, ``xywh`` and ``cxcywh`` (2D and 3D).

    Args:
        boxes: ``[N, 4]`` or ``[N, 6]`` boxes in ``in_fmt``.
        in_fmt: A :class:`BoxFormat` or its name.
        out_fmt: A :class:`BoxFormat` or its name.

    Returns:
        Boxes in ``out_fmt``, same type and shape. ``cxcywh`` output is floating
        (integer boxes are promoted) because centres can be half-pixels.

    Raises:
        InvalidOptionError: On an unknown format ("did you mean ...?").
        ShapeError: On a wrong shape.

    Shape:
        - boxes: ``[N, 4]`` or ``[N, 6]`` -> the same.

    Examples:
        >>> box_convert([[1, 2, 3, 4]], "xywh", "xyxy").tolist()
        [[1, 2, 4, 6]]
        >>> box_convert([[0.0, 0.0, 4.0, 2.0]], "xyxy", "cxcywh").tolist()
        [[2.0, 1.0, 4.0, 2.0]]
    """
    fin = look_up_option(in_fmt, BoxFormat, name="in_fmt")
    fout = look_up_option(out_fmt, BoxFormat, name="out_fmt")
    arr = _as_boxes(boxes)
    if fin == fout:
        return arr.clone() if isinstance(arr, torch.Tensor) else arr.copy()
    dims = _spatial_dims(arr)
    if BoxFormat.CXCYWH in (fin, fout):
        if isinstance(arr, torch.Tensor):
            if not arr.is_floating_point():
                arr = arr.to(torch.get_default_dtype())
        elif not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
    lo, hi = _to_xyxy_parts(arr, fin, dims)
    first, second = _from_xyxy_parts(lo, hi, fout)
    if isinstance(arr, torch.Tensor):
        return torch.cat([first, second], dim=1)
    return np.concatenate([first, second], axis=1)


def _box_iou_torch(b1: torch.Tensor, b2: torch.Tensor, dims: int) -> torch.Tensor:
    """Broadcasting IoU with torch operations only (any device, autograd-friendly)."""
    lo = torch.maximum(b1[:, None, :dims], b2[None, :, :dims])
    hi = torch.minimum(b1[:, None, dims:], b2[None, :, dims:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    area1 = (b1[:, dims:] - b1[:, :dims]).prod(dim=1)
    area2 = (b2[:, dims:] - b2[:, :dims]).prod(dim=1)
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0)


def _box_iou_numpy(b1: np.ndarray, b2: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """IoU with the compiled SoA kernel (numpy in, numpy out)."""
    from medcurric.geometry import _kernels

    out = np.empty((b1.shape[0], b2.shape[0]), dtype=dtype)
    a = np.ascontiguousarray(b1.T, dtype=dtype)
    b = np.ascontiguousarray(b2.T, dtype=dtype)
    kernel = _kernels.iou_2d if b1.shape[1] == 4 else _kernels.iou_3d
    kernel(a, b, out, dtype.type(0), dtype.type(np.finfo(dtype).tiny))
    return out


@overload
def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor: ...
@overload
def box_iou(
    boxes1: np.ndarray | Sequence[Sequence[float]],
    boxes2: np.ndarray | Sequence[Sequence[float]],
) -> np.ndarray: ...
def box_iou(boxes1: BoxesLike, boxes2: BoxesLike) -> np.ndarray | torch.Tensor:
    """Pairwise intersection over union of two sets of xyxy boxes (2D or 3D).

    The continuous (geometric) IoU, as in torchvision's ``box_iou``. Pairs whose
    union is empty (two zero-area boxes) score 0, never NaN.

    Args:
        boxes1: ``[N, 4]`` or ``[N, 6]`` xyxy boxes.
        boxes2: ``[M, 4]`` or ``[M, 6]`` xyxy boxes with the same number of columns.

    Returns:
        ``[N, M]`` IoU in ``[0, 1]``. float32 in gives float32 out (float16 and
        bfloat16 are upcast to float32); float64 and integer boxes give float64.
        Numpy in -> numpy out (compiled kernel); torch in -> torch out on the
        same device (torch operations; CPU tensors that do not require grad use
        the compiled kernel).

    Raises:
        ShapeError: On wrong shapes or a 2D/3D mix.
        InvalidBoxError: On NaN/inf or inverted boxes.
        WrongTypeError: When only one input is a torch tensor.

    Shape:
        - boxes1: ``[N, 4]`` or ``[N, 6]``; boxes2: ``[M, 4]`` or ``[M, 6]`` -> ``[N, M]``.

    Examples:
        >>> box_iou([[0, 0, 4, 2]], [[0, 0, 2, 2], [4, 0, 6, 2]]).tolist()
        [[0.5, 0.0]]
    """
    a = _as_boxes(boxes1, name="boxes1")
    b = _as_boxes(boxes2, name="boxes2")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"Expected boxes1 and boxes2 with the same number of columns (both 2D [., 4] or "
            f"both 3D [., 6]), but got shapes {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if _is_torch(a) != _is_torch(b):
        raise WrongTypeError(
            "Expected boxes1 and boxes2 both as torch tensors or both as numpy arrays/lists, "
            f"but got {type(boxes1).__name__} and {type(boxes2).__name__}. Convert one of them."
        )
    _check_boxes(a, None, name="boxes1")
    _check_boxes(b, None, name="boxes2")
    dims = _spatial_dims(a)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        dtype_t = _float_dtype_torch(torch.promote_types(a.dtype, b.dtype))
        if a.device != b.device:
            raise WrongTypeError(
                f"Expected boxes1 and boxes2 on the same device, but got {a.device} and "
                f"{b.device}. Move one with .to(device)."
            )
        if a.device.type == "cpu" and not (a.requires_grad or b.requires_grad):
            ndt = np.dtype(np.float32) if dtype_t == torch.float32 else np.dtype(np.float64)
            res = _box_iou_numpy(
                a.detach().to(dtype_t).numpy(), b.detach().to(dtype_t).numpy(), ndt
            )
            return torch.from_numpy(res)
        return _box_iou_torch(a.to(dtype_t), b.to(dtype_t), dims)
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)  # for mypy; checked above
    dtype = _float_dtype_np(np.result_type(a.dtype, b.dtype))
    return _box_iou_numpy(a, b, dtype)


@overload
def boxes_to_masks(
    boxes: torch.Tensor, image_shape: Sequence[int], *, clip: bool = ...
) -> torch.Tensor: ...
@overload
def boxes_to_masks(
    boxes: np.ndarray | Sequence[Sequence[float]], image_shape: Sequence[int], *, clip: bool = ...
) -> np.ndarray: ...
def boxes_to_masks(
    boxes: BoxesLike, image_shape: Sequence[int], *, clip: bool = False
) -> np.ndarray | torch.Tensor:
    """Rasterise boxes into boolean masks with the pixel-centre rule.

    Pixel ``[r, c]`` is set iff ``x1 <= c + 0.5 < x2`` and ``y1 <= r + 0.5 < y2``
    (per axis in 3D). Inverse of :func:`masks_to_boxes` for integer boxes.

    Args:
        boxes: ``[N, 4]`` or ``[N, 6]`` xyxy boxes.
        image_shape: ``(H, W)`` or ``(D, H, W)``.
        clip: Clip boxes to the image instead of raising for boxes outside it.

    Returns:
        bool ``[N, H, W]`` or ``[N, D, H, W]`` (torch: on the boxes' device).

    Raises:
        ShapeError: On a wrong shape or an ``image_shape`` of the wrong length.
        InvalidBoxError: On NaN/inf, inverted boxes or (without ``clip``) boxes
            outside the image.

    Shape:
        - boxes: ``[N, 4]`` -> ``[N, H, W]``; ``[N, 6]`` -> ``[N, D, H, W]``.

    Examples:
        >>> boxes_to_masks([[0.5, 0, 2.6, 1]], image_shape=(2, 4)).astype(int).tolist()
        [[[1, 1, 1, 0], [0, 0, 0, 0]]]
    """
    arr = _as_boxes(boxes)
    _check_boxes(arr, image_shape, inside=not clip)
    dims = _spatial_dims(arr)
    sizes = _axis_sizes(image_shape, dims)
    ranges = _pixel_ranges(_np(arr), sizes)  # [N, dims, 2] in x, y(, z) order
    shape = (arr.shape[0], *tuple(int(s) for s in image_shape))
    masks: Any
    if isinstance(arr, torch.Tensor):
        masks = torch.zeros(shape, dtype=torch.bool, device=arr.device)
    else:
        masks = np.zeros(shape, dtype=bool)
    for n, r in enumerate(ranges.tolist()):
        index: tuple[int | slice, ...] = (n, *(slice(lo, hi) for lo, hi in reversed(r)))
        masks[index] = True
    return masks


@overload
def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor: ...
@overload
def masks_to_boxes(masks: np.ndarray | Sequence[Any]) -> np.ndarray: ...
def masks_to_boxes(masks: np.ndarray | torch.Tensor | Sequence[Any]) -> np.ndarray | torch.Tensor:
    """Tight integer box around each mask's nonzero pixels.

    The box of a mask is ``(min_col, min_row, max_col + 1, max_row + 1)`` (plus the
    z-range in 3D), so :func:`boxes_to_masks` gives back the filled box. An empty
    mask gives the all-zero box ``(0, 0, 0, 0)``, which covers no pixel, so the
    round trip holds for empty masks too.

    Args:
        masks: ``[N, H, W]`` or ``[N, D, H, W]``; nonzero means inside.

    Returns:
        ``[N, 4]`` or ``[N, 6]`` xyxy boxes: float64 for numpy, the default float
        dtype (float32) for torch, on the masks' device.

    Raises:
        ShapeError: When ``masks`` is not 3D or 4D.

    Shape:
        - masks: ``[N, H, W]`` -> ``[N, 4]``; ``[N, D, H, W]`` -> ``[N, 6]``.

    Examples:
        >>> m = boxes_to_masks([[1, 0, 3, 2]], image_shape=(3, 4))
        >>> masks_to_boxes(m).tolist()
        [[1.0, 0.0, 3.0, 2.0]]
    """
    if isinstance(masks, torch.Tensor):
        mt = masks
        if mt.ndim not in (3, 4):
            raise ShapeError(
                f"Expected masks of shape [N, H, W] or [N, D, H, W], but got {tuple(mt.shape)}. "
                "Add a leading axis (mask[None]) for a single mask."
            )
        nz = mt != 0
        dims = mt.ndim - 1
        out_t = torch.zeros(
            (mt.shape[0], 2 * dims), dtype=torch.get_default_dtype(), device=mt.device
        )
        nonempty = nz.reshape(mt.shape[0], math.prod(mt.shape[1:])).any(dim=1)
        for k in range(dims):  # k = 0 -> x (last array axis)
            axis = mt.ndim - 1 - k
            other = tuple(a for a in range(1, mt.ndim) if a != axis)
            prof = nz.any(dim=other)
            prof_u8 = prof.to(torch.uint8)
            size = prof.shape[1]
            first = prof_u8.argmax(dim=1)
            last = size - prof_u8.flip(1).argmax(dim=1)
            out_t[:, k] = first.to(out_t.dtype)
            out_t[:, dims + k] = last.to(out_t.dtype)
        return torch.where(nonempty[:, None], out_t, torch.zeros_like(out_t))
    m = np.asarray(masks)
    if m.ndim not in (3, 4):
        raise ShapeError(
            f"Expected masks of shape [N, H, W] or [N, D, H, W], but got {m.shape}. "
            "Add a leading axis (mask[None]) for a single mask."
        )
    nzm = m != 0
    dims = m.ndim - 1
    out = np.zeros((m.shape[0], 2 * dims), dtype=np.float64)
    nonempty_np = nzm.reshape(m.shape[0], math.prod(m.shape[1:])).any(axis=1)
    for k in range(dims):
        axis = m.ndim - 1 - k
        other = tuple(a for a in range(1, m.ndim) if a != axis)
        prof_np = nzm.any(axis=other)
        size = prof_np.shape[1]
        out[:, k] = prof_np.argmax(axis=1)
        out[:, dims + k] = size - prof_np[:, ::-1].argmax(axis=1)
    out[~nonempty_np] = 0
    return out


def _n_pixels(ranges: np.ndarray) -> np.ndarray:
    """Pixel counts of ``[N, K, 2]`` ranges."""
    return np.prod(ranges[..., 1] - ranges[..., 0], axis=1)
