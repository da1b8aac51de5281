"""Drawing VIP-LLaVA-style visual prompts on images and batches: :class:`StageOverlay`.

The Easy curriculum stage shows the model where to look: the lesion box is drawn
on the image as a visual prompt and the prompt text refers to it ("the lesion
within the red rectangle"). :func:`draw_overlay` is the functional core;
:class:`StageOverlay` adds the style policy (fixed for evaluation, seeded random
for training) and returns the referring phrases.

Inputs and outputs keep their type:

* numpy ``[H, W, 3]`` (or a batch ``[B, H, W, 3]``) ``uint8`` -> numpy;
* ``PIL.Image`` -> ``PIL.Image`` (RGB);
* torch ``[B, 3, H, W]`` (or ``[3, H, W]``), ``uint8`` or float in ``[0, 1]``, on any
  device -> torch on the same device, same dtype.

Shapes are rasterised as anti-aliased coverage over each prompt's own region and
alpha-blended once (see :mod:`medcurric.overlay._raster`); there is no Python loop
over pixels. On CPU a numba kernel visits only the pixels near each stroke; on
other devices (or with ``backend="torch"``) pure tensor ops draw the whole batch.
Line widths scale with ``max(H, W) / 336`` as in VIP-LLaVA. Under the ``medcurric``
convention rectangles are drawn just outside the box so the lesion itself stays
visible, arrows point at the box's edge from outside and keep their tail inside the
image, and triangles enclose the box; under the ``vip_llava`` convention (see
:mod:`medcurric.overlay.style`) the rectangle covers the box's outer ring of
``int(width * max(H, W) / 336)`` pixels with square corners, the arrow head lies in the
box and the triangle joins three points in the box.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import torch

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import InvalidBoxError, ShapeError, WrongTypeError
from medcurric.geometry.preprocess import _as_boxes
from medcurric.overlay import _raster
from medcurric.overlay.style import (
    Convention,
    OverlayStyle,
    RandomStyle,
    Shape,
    StylePreset,
    style_preset,
)

__all__ = ["DrawBackend", "OverlayResult", "StageOverlay", "draw_overlay"]

#: Reference image size of VIP-LLaVA's widths.
REFERENCE_SIZE = 336

#: Shapes by their code in ``OverlayStyle._packed``.
_SHAPES = tuple(Shape)
_CONTOUR_CODE = _SHAPES.index(Shape.CONTOUR)
_VIP_CODE = list(Convention).index(Convention.VIP_LLAVA)


class DrawBackend(StrEnum):
    """Which rasteriser draws: ``AUTO`` (numba on CPU, torch elsewhere), ``TORCH``, ``NUMBA``."""

    AUTO = "auto"
    TORCH = "torch"
    NUMBA = "numba"


@dataclass(frozen=True)
class OverlayResult:
    """An overlaid image (or batch) with the phrases that refer to its prompts.

    Unpacks as ``image, phrase`` for one image and ``images, phrases`` for a batch.

    Attributes:
        image: The drawn image(s), same type as the input.
        phrases: One referring phrase per image.
        styles: The style used for each image.
        batched: Whether the input was a batch.
    """

    image: Any
    phrases: list[str]
    styles: list[OverlayStyle]
    batched: bool = False

    @property
    def phrase(self) -> str:
        """The phrase of a single image (the first one of a batch)."""
        return self.phrases[0]

    def __iter__(self) -> Iterator[Any]:
        yield self.image
        yield self.phrases if self.batched else self.phrases[0]


# ----------------------------------------------------------------------------- inputs


@dataclass
class _Canvas:
    kind: str  # "numpy" | "pil" | "torch"
    single: bool
    bhwc: np.ndarray | None  # numpy view for the numba kernel
    bchw: torch.Tensor  # torch view (shares memory with bhwc when on CPU)
    original: Any


def _canvas(image: Any, inplace: bool) -> _Canvas:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise WrongTypeError(
                f"Expected a uint8 numpy image [H, W, 3], but got dtype {image.dtype}. "
                "Convert CT/MR intensities with medcurric.overlay.window_to_rgb first."
            )
        single = image.ndim == 3
        arr = image[None] if single else image
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ShapeError(
                f"Expected a numpy image [H, W, 3] or batch [B, H, W, 3], but got shape {image.shape}."
            )
        if not inplace:
            arr = arr.copy()
        return _Canvas("numpy", single, arr, torch.from_numpy(arr).permute(0, 3, 1, 2), image)
    if isinstance(image, torch.Tensor):
        single = image.ndim == 3
        t = image[None] if single else image
        if t.ndim != 4 or t.shape[1] != 3:
            raise ShapeError(
                f"Expected a torch image [3, H, W] or batch [B, 3, H, W], but got shape "
                f"{tuple(image.shape)}. Channels-last numpy arrays go in as numpy."
            )
        if not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise WrongTypeError(f"Expected uint8 or float images in [0, 1], but got {t.dtype}.")
        if not inplace:
            t = t.clone()
        return _Canvas("torch", single, _raster.to_bhwc_numpy(t), t, image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        arr = np.array(image.convert("RGB"), dtype=np.uint8)[None]
        return _Canvas("pil", True, arr, torch.from_numpy(arr).permute(0, 3, 1, 2), image)
    raise WrongTypeError(
        f"Expected a numpy uint8 image, a PIL image or a torch tensor, but got {type(image).__name__}."
    )


def _boxes_for(boxes: Any, n: int, single: bool) -> np.ndarray:
    if (
        isinstance(boxes, np.ndarray)
        and boxes.dtype.kind in "fiu"
        and boxes.shape in ((n, 4), (4,) if n == 1 else (n, 4))
    ):
        # fast path for well-formed numpy boxes; anything odd goes through _as_boxes,
        # which raises the descriptive errors
        b = boxes.astype(np.float64).reshape(n, 4)
        if np.isfinite(b).all() and not ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
            return b
    t, _, _ = _as_boxes(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes)
    b = t.to(torch.float64).numpy()
    if b.shape[0] != n:
        what = "one box [4] (or [1, 4])" if single else f"one box per image, [{n}, 4]"
        raise ShapeError(f"Expected {what}, but got boxes of shape {tuple(b.shape)}.")
    return b


def _check_in_image(boxes: np.ndarray, size: tuple[int, int], clip: bool) -> np.ndarray:
    """Raise on boxes that miss the image (``clip``: clip them, then raise on no area left).

    Without ``clip`` a box that meets the image is drawn as it is (parts past the
    border fall off); one that does not meet it at all would draw nothing.
    """
    h, w = size
    if clip:
        out = boxes.copy()
        out[:, 0::2] = np.clip(out[:, 0::2], 0.0, float(w))
        out[:, 1::2] = np.clip(out[:, 1::2], 0.0, float(h))
        bad = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
        what = "has no area inside"
    else:
        out = boxes
        bad = (boxes[:, 0] >= w) | (boxes[:, 1] >= h) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
        what = "lies entirely outside"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        box = tuple(float(v) for v in boxes[i])
        raise InvalidBoxError(
            f"Expected boxes (x1, y1, x2, y2) that meet the image, but box {i} {box} {what} the "
            f"{w}x{h} (width x height) image, so no prompt would show. Check the box's coordinate "
            f"system (pixels of this image){'' if clip else ', or pass clip=True to clip boxes that stick out'}."
        )
    return out


def _masks_for(masks: Any, n: int, size: tuple[int, int], device: torch.device) -> list[Any]:
    if masks is None:
        return [None] * n
    if isinstance(masks, (np.ndarray, torch.Tensor)):
        mt = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks)
        if mt.ndim == 2:
            mt = mt[None]
        if mt.ndim != 3 or mt.shape[0] != n or tuple(mt.shape[1:]) != size:
            raise ShapeError(
                f"Expected masks [{n}, {size[0]}, {size[1]}] (or [H, W] for one image), but got "
                f"{tuple(mt.shape)}."
            )
        return [m.to(device) for m in mt.bool()]
    if isinstance(masks, Sequence) and len(masks) == n:
        return [None if m is None else _masks_for(m, 1, size, device)[0] for m in masks]
    raise ShapeError(f"Expected one mask per image ({n}), but got {type(masks).__name__}.")


# ----------------------------------------------------------------------------- core


def _pack(styles: Sequence[OverlayStyle]) -> np.ndarray:
    """The styles' ``_packed`` rows as one writeable float64 ``[n, 9]`` array."""
    return np.frombuffer(bytearray(b"".join([s._packed for s in styles])), np.float64).reshape(
        len(styles), 9
    )


def _line_widths(width: np.ndarray, vip: np.ndarray, s: float) -> np.ndarray:
    """Widths in pixels: ``width * s``; truncated where ``vip``; at least 1 pixel.

    ViP-LLaVA scales a width ``w`` to ``int(w * max(H, W) / 336)``.
    """
    scaled = width * s
    return np.maximum(np.where(vip, np.floor(scaled), scaled), 1.0)


def _primitives(
    boxes: np.ndarray,
    packed: np.ndarray,
    styles: Sequence[OverlayStyle],
    size: tuple[int, int],
    fallback: np.ndarray,
) -> np.ndarray:
    """``[B, K, NPARAM]`` primitives; ``fallback[i]``: draw a contour as the box's ellipse.

    ``packed`` holds the styles' ``_packed`` rows (shape code, width, jitter, scale,
    R, G, B, alpha, convention code) of ``styles``.
    """
    n = packed.shape[0]
    codes = packed[:, 0].astype(np.int64)
    s = max(size) / REFERENCE_SIZE
    seeds = np.fromiter((st.seed for st in styles), np.int64, n)
    width, jitter, scale = packed[:, 1], packed[:, 2], packed[:, 3]
    vip = packed[:, 8] == _VIP_CODE
    lw = _line_widths(width, vip, s)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for code in np.flatnonzero(np.bincount(codes, minlength=len(_SHAPES))):
        shape = _SHAPES[code]
        idx = np.flatnonzero(codes == code)
        if shape is Shape.CONTOUR:
            idx = idx[fallback[idx]]
            if idx.size == 0:
                continue
        b, w_, sd, jt, inside = boxes[idx], lw[idx], seeds[idx], jitter[idx], vip[idx]
        if shape is Shape.RECTANGLE:
            p = _raster.rectangle(b, w_, size, inside)
        elif shape is Shape.ELLIPSE:
            p = _raster.ellipse(b, w_, scale[idx])
        elif shape is Shape.CONTOUR:
            p = _raster.ellipse(b, w_, np.ones(idx.size))
        elif shape is Shape.POINT:
            p = _raster.point(b, w_, sd, jt)
        elif shape is Shape.ARROW:
            p = _raster.arrow(b, w_, sd, jt, size, s, inside)
        elif shape is Shape.TRIANGLE:
            p = _raster.triangle(b, w_, sd, jt, inside)
        else:
            p = _raster.scribble(b, w_, sd, jt)
        parts.append((idx, p))
    if len(parts) == 1 and parts[0][0].size == n:
        return parts[0][1]
    k = max((p.shape[1] for _, p in parts), default=0)
    out = np.full((n, k, _raster.NPARAM), float(_raster.NONE))
    for idx, p in parts:
        out[idx, : p.shape[1]] = p
    return out


def draw_overlay(
    image: Any,
    boxes: Any,
    styles: OverlayStyle | Sequence[OverlayStyle] | None = None,
    *,
    masks: Any = None,
    inplace: bool = False,
    backend: str | DrawBackend = "auto",
    clip: bool = False,
) -> Any:
    """Draw one visual prompt per image around its box.

    Args:
        image: numpy ``[H, W, 3]``/``[B, H, W, 3]`` uint8, a PIL image, or torch
            ``[3, H, W]``/``[B, 3, H, W]`` uint8 or float in ``[0, 1]``.
        boxes: ``[4]`` for one image, ``[B, 4]`` for a batch; ``(x1, y1, x2, y2)`` pixels.
        styles: One style for all images or one per image (default: :class:`OverlayStyle`).
        masks: For ``contour`` prompts: ``[H, W]`` / ``[B, H, W]`` bool masks, or a list
            with ``None`` for images without one (those get the box's ellipse).
        inplace: Draw into ``image`` itself (numpy/torch only) instead of a copy.
        backend: ``"auto"``, ``"torch"`` or ``"numba"`` (CPU only).
        clip: Clip the boxes to the image first (a box with no area left still raises).

    Returns:
        The drawn image(s), same type (and device, dtype) as ``image``.

    Raises:
        ShapeError: Image, boxes or masks have the wrong shape.
        WrongTypeError: Unsupported image type or dtype.
        InvalidBoxError: A box does not meet the image (with ``clip``: has no area inside it).

    Examples:
        >>> import numpy as np
        >>> img = np.zeros((64, 64, 3), np.uint8)
        >>> out = draw_overlay(img, [20, 20, 40, 40], OverlayStyle(alpha=1.0))
        >>> out[19, 30].tolist(), out[30, 30].tolist(), int(img.max())
        ([255, 0, 0], [0, 0, 0], 0)
    """
    bk = look_up_option(backend, DrawBackend, name="backend")
    canvas = _canvas(image, inplace)
    t = canvas.bchw
    n, _, h, w = t.shape
    if styles is None:
        styles = OverlayStyle()
    style_list = [styles] * n if isinstance(styles, OverlayStyle) else list(styles)
    if len(style_list) != n or not all(map(isinstance, style_list, repeat(OverlayStyle))):
        raise ShapeError(f"Expected one OverlayStyle or {n} of them, but got {styles!r}.")
    box_arr = _check_in_image(_boxes_for(boxes, n, canvas.single), (h, w), clip)
    mask_list = _masks_for(masks, n, (h, w), t.device)
    # one row of numbers per style, packed when the style was made
    packed = _pack(style_list)
    is_contour = packed[:, 0] == _CONTOUR_CODE
    if masks is None:
        has_mask = np.zeros(n, dtype=bool)
    else:
        has_mask = np.array([m is not None and bool(m.any()) for m in mask_list], dtype=bool)
    fallback = is_contour & ~has_mask
    colors = packed[:, 4:7]
    alphas = packed[:, 7]

    prims = _primitives(box_arr, packed, style_list, (h, w), fallback)
    use_numba = bk is DrawBackend.NUMBA or (bk is DrawBackend.AUTO and canvas.bhwc is not None)
    if use_numba and canvas.bhwc is None:
        raise WrongTypeError(
            "backend='numba' draws CPU uint8/float32/float64 images only; use backend='torch'."
        )
    if prims.shape[1]:
        if use_numba:
            assert canvas.bhwc is not None  # for mypy; checked above
            _raster.draw_numba(canvas.bhwc, prims, colors, alphas)
        else:
            _raster.draw_torch(t, prims, colors, alphas)
    sel = np.nonzero(is_contour & has_mask)[0]
    if sel.size:
        lw_np = _line_widths(packed[sel, 1], packed[sel, 8] == _VIP_CODE, max(h, w) / REFERENCE_SIZE)
        lw = torch.tensor(lw_np, device=t.device)
        cov = _raster.contour_coverage(torch.stack([mask_list[i] for i in sel]), lw)
        sub = t[torch.as_tensor(sel, device=t.device)]
        _raster.blend_coverage(sub, cov, colors[sel], alphas[sel])
        t[torch.as_tensor(sel, device=t.device)] = sub

    if canvas.kind == "pil":
        from PIL import Image

        assert canvas.bhwc is not None
        return Image.fromarray(canvas.bhwc[0])
    if canvas.kind == "numpy":
        assert canvas.bhwc is not None
        return canvas.bhwc[0] if canvas.single else canvas.bhwc
    return t[0] if canvas.single else t


class StageOverlay:
    """Easy-stage visual prompts with their referring phrases.

    Args:
        style: ``"fixed"`` (default :class:`OverlayStyle`, for evaluation), ``"random"``
            (default :class:`RandomStyle`, for training), a :class:`StylePreset` name
            (``"vip_llava"``, ``"vip_llava_random"``, ``"medcurric"``,
            ``"medcurric_random"``), a shape name for a fixed style of that shape, an
            :class:`OverlayStyle`, or a :class:`RandomStyle` policy.
        seed: Seed of the random policy; the same seed and the same calls give the
            same images.
        backend: Rasteriser, see :func:`draw_overlay`.
        clip: Clip boxes to the image (see :func:`draw_overlay`); otherwise a box that
            misses the image raises :class:`~medcurric.errors.InvalidBoxError`.

    Examples:
        >>> import numpy as np
        >>> overlay = StageOverlay("ellipse")
        >>> image, phrase = overlay(np.zeros((336, 336, 3), np.uint8), [100, 120, 180, 200])
        >>> phrase, image.shape, int(image.max()) > 0
        ('within the red ellipse', (336, 336, 3), True)
        >>> a = StageOverlay("random", seed=3)(np.zeros((2, 64, 64, 3), np.uint8), [[5, 5, 30, 30]] * 2)
        >>> b = StageOverlay("random", seed=3)(np.zeros((2, 64, 64, 3), np.uint8), [[5, 5, 30, 30]] * 2)
        >>> a.phrases == b.phrases and bool((a.image == b.image).all())
        True
    """

    def __init__(
        self,
        style: OverlayStyle | RandomStyle | str = "fixed",
        *,
        seed: int = 0,
        backend: str | DrawBackend = "auto",
        clip: bool = False,
    ) -> None:
        if isinstance(style, str):
            key = style.strip().lower()
            if key == "fixed":
                style = OverlayStyle()
            elif key == "random":
                style = RandomStyle()
            elif key in {p.value for p in StylePreset}:
                style = style_preset(key)
            else:
                style = OverlayStyle(shape=look_up_option(key, Shape, name="style"))
        if not isinstance(style, (OverlayStyle, RandomStyle)):
            raise WrongTypeError(
                f"Expected 'fixed', 'random', a preset or shape name, an OverlayStyle or a RandomStyle, but got "
                f"{type(style).__name__}."
            )
        self.style = style
        self.seed = int(seed)
        self.backend = look_up_option(backend, DrawBackend, name="backend")
        self.clip = bool(clip)
        self._rng = np.random.default_rng(self.seed)

    def styles_for(self, n: int, key: int | Sequence[int] | None = None) -> list[OverlayStyle]:
        """The styles for the next ``n`` images.

        Args:
            n: Number of images.
            key: ``None`` draws from the overlay's own generator (advancing it); an int
                or one int per image draws from ``(seed, key)`` instead, so a dataset
                item always gets the same style whatever the order of calls.

        Returns:
            ``n`` styles.
        """
        if isinstance(self.style, OverlayStyle):
            return [self.style] * n
        if key is None:
            return self.style.sample_many(n, self._rng)
        keys = [int(key)] * n if isinstance(key, (int, np.integer)) else [int(k) for k in key]
        if len(keys) != n:
            raise ShapeError(f"Expected one key per image ({n}), but got {len(keys)}.")
        if isinstance(key, (int, np.integer)):
            return self.style.sample_many(n, np.random.default_rng([self.seed, keys[0]]))
        return [self.style.sample(np.random.default_rng([self.seed, k])) for k in keys]

    def __call__(
        self,
        image: Any,
        boxes: Any,
        *,
        masks: Any = None,
        key: int | Sequence[int] | None = None,
        inplace: bool = False,
    ) -> OverlayResult:
        """Draw the prompt(s) and return the image(s) with the referring phrase(s).

        Args:
            image: See :func:`draw_overlay`.
            boxes: ``[4]`` for one image, ``[B, 4]`` for a batch.
            masks: Lesion masks for ``contour`` prompts (optional).
            key: Per-item key(s) for reproducible random styles, see :meth:`styles_for`.
            inplace: Draw into ``image`` (numpy/torch only).

        Returns:
            The :class:`OverlayResult`.

        Raises:
            InvalidBoxError: A box misses the image (see :func:`draw_overlay`).
        """
        n = _batch_size(image)
        styles = self.styles_for(n, key)
        out = draw_overlay(
            image, boxes, styles, masks=masks, inplace=inplace, backend=self.backend, clip=self.clip
        )
        batched = not _is_single(image)
        return OverlayResult(out, [s.phrase for s in styles], styles, batched)

    def __repr__(self) -> str:
        return (
            f"StageOverlay(style={self.style!r}, seed={self.seed}, backend='{self.backend.value}')"
        )


def _is_single(image: Any) -> bool:
    if isinstance(image, np.ndarray | torch.Tensor):
        return image.ndim == 3
    return True


def _batch_size(image: Any) -> int:
    if isinstance(image, np.ndarray | torch.Tensor) and image.ndim == 4:
        return int(image.shape[0])
    return 1
