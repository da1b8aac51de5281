"""Where each image token of a vision-language model looks in the original image.

The Medium-stage target is a distribution over the image tokens the language
model attends to. Their number, order and footprint depend on the model family:

* **fixed grid** (LLaVA-1.5, VIP-LLaVA, any CLIP/SigLIP processor with a fixed
  output size): the processor's resize/pad/crop (:class:`~medcurric.geometry.Preprocess`),
  then ``patch_size`` px patches in row-major order (24 x 24 at 336 px, 14 px);
* **Qwen2-VL / Qwen2.5-VL / Qwen3-VL** (``Qwen2VLImageProcessor``): ``smart_resize``
  to multiples of ``patch_size * merge_size`` (aspect kept, no crop), patches merged
  ``merge_size x merge_size``, so one token covers 28 x 28 (Qwen3-VL: 32 x 32)
  input pixels; the grid varies per image (``image_grid_thw``);
* **Gemma 3** (``Gemma3ImageProcessor``): resize to ``size`` (896 x 896, aspect
  not kept), SigLIP patches average-pooled to ``image_seq_length`` (256) tokens,
  16 x 16, 56 x 56 input pixels each; pan-and-scan crops are not modelled;
* **LLaVA-OneVision** (``LlavaOnevisionImageProcessor``, one image per sample):
  first the base image (resized to 384 x 384, 27 x 27 tokens of 14 px), then the
  anyres tiles stitched into one grid, unpadded and (when larger than
  ``anyres_max_9`` allows) bilinearly shrunk, row by row, each row followed by one
  newline token. A newline token has an empty footprint and never gets target.

:class:`ImageTokenLayout` holds that answer for one image: ``footprints[p]`` is
token ``p``'s ``(x1, y1, x2, y2)`` box in the ORIGINAL image's pixels, ``p`` being
its position within the image's run of placeholder tokens. Footprints may reach
outside the image (padding) and the unseen strip of an encoder whose input is not
a multiple of its patch (SigLIP 384 / 14) belongs to no token.
:func:`box_to_token_distribution` turns boxes in original pixels into one
probability vector per box over those tokens.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from medcurric._optional import require
from medcurric.errors import ShapeError, UnsupportedModelError, WrongTypeError
from medcurric.geometry.patches import GaussianSmoothing, _blur
from medcurric.geometry.preprocess import (
    Preprocess,
    _as_boxes,
    _image_size,
    _positive_int,
    _size_field,
)

__all__ = ["ImageTokenLayout", "TokenGrid", "box_to_token_distribution"]

#: Patch size of the CLIP / SigLIP towers used when a processor does not say it.
DEFAULT_PATCH_SIZE = 14


class TokenGrid(NamedTuple):
    """A row-major run of image tokens inside an :class:`ImageTokenLayout`.

    Token ``(r, c)`` sits at ``start + r * (cols + newline) + c``; with ``newline``
    each row ends with one extra token (LLaVA-OneVision's ``image_newline``) at
    ``start + r * (cols + 1) + cols``.
    """

    start: int
    rows: int
    cols: int
    newline: bool = False

    @property
    def length(self) -> int:
        """Number of sequence positions the grid takes, newline tokens included."""
        return self.rows * (self.cols + int(self.newline))

    def indices(self) -> np.ndarray:
        """``[rows, cols]`` sequence positions of the grid's image tokens."""
        stride = self.cols + int(self.newline)
        return self.start + np.arange(self.rows)[:, None] * stride + np.arange(self.cols)[None, :]


def _cells(n: int, lo: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``[n]`` low and high of ``n`` cells of width ``step`` starting at ``lo``."""
    left = lo + np.arange(n, dtype=np.float64) * step
    return left, left + step


def _grid_boxes(x: tuple[np.ndarray, ...], y: tuple[np.ndarray, ...]) -> np.ndarray:
    """Row-major ``[rows * cols, 4]`` boxes from per-column ``(x1, x2)`` and per-row ``(y1, y2)``."""
    rows, cols = y[0].shape[0], x[0].shape[0]
    out = np.empty((rows, cols, 4), dtype=np.float64)
    out[..., 0], out[..., 2] = x[0][None, :], x[1][None, :]
    out[..., 1], out[..., 3] = y[0][:, None], y[1][:, None]
    return out.reshape(rows * cols, 4)


def _image_processor(processor: Any) -> Any:
    return getattr(processor, "image_processor", None) or processor


def _size_hw(size: Any, name: str) -> tuple[int, int]:
    h, w = _size_field(size, "height"), _size_field(size, "width")
    if h and w:
        return int(h), int(w)
    edge = _size_field(size, "shortest_edge")
    if edge:
        return int(edge), int(edge)
    raise UnsupportedModelError(f"{name}.size = {size!r} has no height and width.")


@dataclass(frozen=True, eq=False)
class ImageTokenLayout:
    """The image tokens of one image: how many, in which order, and what each one sees.

    Build one with :meth:`from_processor` (a real ``transformers`` processor and the
    original image size), :meth:`from_processor_output` (per image of a processed
    batch, e.g. Qwen's ``image_grid_thw``) or :meth:`from_grid` (a fixed patch grid
    over a :class:`~medcurric.geometry.Preprocess` output).

    Attributes:
        footprints: ``[P, 4]`` float64 boxes ``(x1, y1, x2, y2)`` in original-image
            pixels, one per image token in sequence order; newline tokens have
            empty boxes ``(0, 0, 0, 0)``.
        image_size: Original ``(height, width)``.
        grids: The token grids in sequence order (see :class:`TokenGrid`); they
            tile ``0 .. P - 1``.
        family: Which layout rule made it (``"grid"``, ``"qwen2_vl"``, ``"gemma3"``,
            ``"llava_onevision"``), for messages and logs.

    Shape:
        - footprints: ``[P, 4]``
        - is_image: ``[P]``

    Examples:
        >>> layout = ImageTokenLayout.from_grid((24, 24), (672, 672), Preprocess.plain_resize(336))
        >>> layout.num_tokens, layout.footprints[:2].tolist()
        (576, [[0.0, 0.0, 28.0, 28.0], [28.0, 0.0, 56.0, 28.0]])
    """

    footprints: np.ndarray
    image_size: tuple[int, int]
    grids: tuple[TokenGrid, ...]
    family: str = "grid"

    def __post_init__(self) -> None:
        fp = np.asarray(self.footprints, dtype=np.float64)
        if fp.ndim != 2 or fp.shape[1] != 4:
            raise ShapeError(f"Expected footprints of shape [P, 4], but got {tuple(fp.shape)}.")
        object.__setattr__(self, "footprints", fp)
        object.__setattr__(self, "image_size", _image_size(self.image_size))
        grids = tuple(TokenGrid(*g) for g in self.grids)
        position = 0
        for g in grids:
            if g.start != position:
                raise ShapeError(
                    f"Expected grids to tile the tokens in order, but a grid starts at {g.start} "
                    f"where {position} was expected."
                )
            position += g.length
        if position != fp.shape[0]:
            raise ShapeError(
                f"Expected the grids to cover all {fp.shape[0]} footprints, but they cover {position}."
            )
        object.__setattr__(self, "grids", grids)

    @property
    def num_tokens(self) -> int:
        """``P``: the image's placeholder tokens in the sequence, newline tokens included."""
        return int(self.footprints.shape[0])

    def __len__(self) -> int:
        return self.num_tokens

    @property
    def is_image(self) -> np.ndarray:
        """``[P]`` bool: ``False`` for newline tokens, ``True`` for tokens that see pixels."""
        mask = np.zeros(self.num_tokens, dtype=bool)
        for g in self.grids:
            mask[g.indices().ravel()] = True
        return mask

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_grid(
        cls,
        grid: tuple[int, int],
        image_size: tuple[int, int],
        preprocess: Preprocess,
        *,
        patch_size: int | None = None,
    ) -> ImageTokenLayout:
        """A fixed row-major patch grid over the output of ``preprocess`` (LLaVA, VIP-LLaVA).

        Args:
            grid: ``(rows, cols)`` of the patch grid.
            image_size: Original ``(height, width)``.
            preprocess: What the processor does (needs a fixed output size).
            patch_size: Side of a patch in model-input pixels; defaults to the model
                input divided by the grid.

        Returns:
            The layout; footprints are the patches mapped back through ``preprocess``.

        Raises:
            InvalidOptionError: Bad grid or image size.
            UnsupportedModelError: ``preprocess`` has no fixed output size.
        """
        rows, cols = (_positive_int(grid[0], "grid[0]"), _positive_int(grid[1], "grid[1]"))
        m = preprocess.coordinate_map(image_size)
        if preprocess.fixed_output_size is None:
            raise UnsupportedModelError(
                "A fixed patch grid needs a Preprocess with a fixed output size (a crop or a "
                "fixed resize); this one resizes the shortest edge only."
            )
        step_y = m.height / rows if patch_size is None else float(patch_size)
        step_x = m.width / cols if patch_size is None else float(patch_size)
        boxes = _grid_boxes(_cells(cols, 0.0, step_x), _cells(rows, 0.0, step_y))
        scale = np.array([m.scale_x, m.scale_y, m.scale_x, m.scale_y])
        offset = np.array([m.offset_x, m.offset_y, m.offset_x, m.offset_y])
        return cls((boxes - offset) / scale, image_size, (TokenGrid(0, rows, cols),), "grid")

    @classmethod
    def from_processor(
        cls,
        processor: Any,
        image_size: tuple[int, int],
        *,
        patch_size: int | None = None,
        tokens_per_image: int | None = None,
    ) -> ImageTokenLayout:
        """The layout a real ``transformers`` processor gives an image of ``image_size``.

        Recognised by the image processor's class: ``Qwen2VLImageProcessor*``
        (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), ``Gemma3ImageProcessor*``,
        ``LlavaOnevisionImageProcessor*``; anything else is read as a fixed grid
        through :meth:`Preprocess.from_processor` (LLaVA, VIP-LLaVA, CLIP).

        Args:
            processor: A processor or its ``.image_processor``.
            image_size: Original ``(height, width)``.
            patch_size: Vision-encoder patch in pixels for fixed grids and
                LLaVA-OneVision (default: the processor's ``patch_size`` or 14).
                Qwen processors carry their own.
            tokens_per_image: Gemma 3's ``mm_tokens_per_image`` / LLaVA-OneVision's
                ``num_image_tokens`` per 384 px view (default: the full processor's
                ``image_seq_length`` / ``num_image_tokens``, else 256 / 729).

        Returns:
            The layout.

        Raises:
            UnsupportedModelError: A processor setting that is not modelled
                (Gemma 3 pan-and-scan, a non-square token grid, a kept CLS token).
            MissingDependencyError: ``transformers`` is needed and missing.
        """
        h, w = _image_size(image_size)
        proc = _image_processor(processor)
        name = type(proc).__name__
        if name.startswith("Qwen2VLImageProcessor"):
            # The processor's own smart_resize (PIL and torchvision backends each have one).
            smart_resize = getattr(sys.modules.get(type(proc).__module__), "smart_resize", None)
            if smart_resize is None:
                raise UnsupportedModelError(
                    f"{name} comes from a module without smart_resize; its resize is not known."
                )
            p, merge = int(proc.patch_size), int(proc.merge_size)
            rh, rw = smart_resize(
                h,
                w,
                factor=p * merge,
                min_pixels=int(_size_field(proc.size, "shortest_edge")),
                max_pixels=int(_size_field(proc.size, "longest_edge")),
            )
            return cls._qwen((h, w), rh // p, rw // p, p, merge)
        if name.startswith("Gemma3ImageProcessor"):
            if getattr(proc, "do_pan_and_scan", None):
                raise UnsupportedModelError(
                    f"{name} has do_pan_and_scan=True: its extra crops are not modelled. "
                    "Build the processor with do_pan_and_scan=False (the default)."
                )
            n = tokens_per_image or getattr(processor, "image_seq_length", None) or 256
            side = math.isqrt(int(n))
            if side * side != int(n):
                raise UnsupportedModelError(
                    f"Expected a square number of Gemma 3 image tokens, but got {n}."
                )
            preprocess = Preprocess(resize_to=_size_hw(proc.size, name))
            return cls.from_grid((side, side), (h, w), preprocess)._renamed("gemma3")
        if name.startswith("LlavaOnevisionImageProcessor"):
            return cls._onevision(processor, proc, (h, w), patch_size, tokens_per_image)
        preprocess = Preprocess.from_processor(proc)
        fixed = preprocess.fixed_output_size
        if fixed is None:
            raise UnsupportedModelError(
                f"{name} gives no fixed output size and no token layout is modelled for it."
            )
        # LlavaProcessor: CLS-like extra tokens stay in the sequence unless "default" drops one.
        extra = int(getattr(processor, "num_additional_image_tokens", 0) or 0)
        if getattr(processor, "vision_feature_select_strategy", "default") == "default":
            extra = max(extra - 1, 0)
        if extra:
            raise UnsupportedModelError(
                f"This processor keeps {extra} extra (CLS) image token(s) before the patch grid "
                "(vision_feature_select_strategy='full'); only the patch grid is modelled."
            )
        p = int(patch_size or getattr(processor, "patch_size", None) or DEFAULT_PATCH_SIZE)
        return cls.from_grid((fixed[0] // p, fixed[1] // p), (h, w), preprocess, patch_size=p)

    @classmethod
    def from_processor_output(
        cls,
        processor: Any,
        outputs: Any,
        image_sizes: Any = None,
        *,
        patch_size: int | None = None,
        tokens_per_image: int | None = None,
    ) -> list[ImageTokenLayout]:
        """One layout per image of a processed batch.

        Qwen: the token grid is read from ``outputs["image_grid_thw"]`` (the count is
        whatever the processor made); LLaVA-OneVision: original sizes from
        ``outputs["image_sizes"]``; other families: :meth:`from_processor` per size.

        Args:
            processor: The processor that made ``outputs``.
            outputs: Its output (a ``BatchFeature`` or a mapping).
            image_sizes: Original ``(height, width)`` per image; needed unless the
                output carries them (LLaVA-OneVision's ``image_sizes``).
            patch_size: As in :meth:`from_processor`.
            tokens_per_image: As in :meth:`from_processor`.

        Returns:
            One layout per image, in batch order.

        Raises:
            ShapeError: Sizes missing or not one per image.
            UnsupportedModelError: LLaVA-OneVision samples with several images.
        """
        get = outputs.get if hasattr(outputs, "get") else (lambda k: getattr(outputs, k, None))
        sizes = image_sizes if image_sizes is not None else get("image_sizes")
        if sizes is None:
            raise ShapeError(
                "Expected image_sizes=[(height, width), ...] of the original images: this "
                "processor output does not carry them."
            )
        sizes = [_image_size(tuple(int(v) for v in np.asarray(s).tolist())) for s in sizes]
        thw = get("image_grid_thw")
        proc = _image_processor(processor)
        per_sample = get("batch_num_images")
        if per_sample is not None and max(np.asarray(per_sample).ravel().tolist(), default=1) > 1:
            raise UnsupportedModelError(
                "Samples with several images (batch_num_images > 1) are padded to square without "
                "anyres tiles; that layout is not modelled. Process one image per sample."
            )
        if thw is not None and type(proc).__name__.startswith("Qwen2VLImageProcessor"):
            grid = np.asarray(thw, dtype=np.int64).reshape(-1, 3)
            if grid.shape[0] != len(sizes):
                raise ShapeError(
                    f"Expected one image size per image_grid_thw row ({grid.shape[0]}), "
                    f"but got {len(sizes)}."
                )
            p, merge = int(proc.patch_size), int(proc.merge_size)
            return [
                cls._qwen(s, int(g[1]), int(g[2]), p, merge)
                for s, g in zip(sizes, grid, strict=True)
            ]
        return [
            cls.from_processor(
                processor, s, patch_size=patch_size, tokens_per_image=tokens_per_image
            )
            for s in sizes
        ]

    # ------------------------------------------------------------------ families
    def _renamed(self, family: str) -> ImageTokenLayout:
        return ImageTokenLayout(self.footprints, self.image_size, self.grids, family)

    @classmethod
    def _qwen(
        cls, image_size: tuple[int, int], grid_h: int, grid_w: int, patch: int, merge: int
    ) -> ImageTokenLayout:
        """Merged tokens of a ``grid_h x grid_w`` patch grid over a plain resize."""
        h, w = image_size
        rows, cols = grid_h // merge, grid_w // merge
        side = patch * merge
        sx, sy = w / (grid_w * patch), h / (grid_h * patch)
        x0, x1 = _cells(cols, 0.0, side)
        y0, y1 = _cells(rows, 0.0, side)
        boxes = _grid_boxes((x0 * sx, x1 * sx), (y0 * sy, y1 * sy))
        return cls(boxes, image_size, (TokenGrid(0, rows, cols),), "qwen2_vl")

    @classmethod
    def _onevision(
        cls,
        processor: Any,
        proc: Any,
        image_size: tuple[int, int],
        patch_size: int | None,
        tokens_per_image: int | None,
    ) -> ImageTokenLayout:
        """Base view, then the unpadded anyres tile grid with a newline per row."""
        transformers = require("transformers", feature="ImageTokenLayout (LLaVA-OneVision)")
        h, w = image_size
        name = type(proc).__name__
        crop = getattr(proc, "crop_size", None)
        tile = _size_hw(crop if crop else proc.size, name)[0]
        base_h, base_w = _size_hw(proc.size, name)
        n = tokens_per_image or getattr(processor, "num_image_tokens", None)
        p = int(patch_size or DEFAULT_PATCH_SIZE)
        side = math.isqrt(int(n)) if n else tile // p
        if side * p > tile:
            raise UnsupportedModelError(
                f"{side} x {side} patches of {p} px do not fit a {tile} px tile; pass patch_size."
            )
        # Base view: the whole image resized to (base_h, base_w), side x side patches.
        base = _grid_boxes(
            tuple(e * (w / base_w) for e in _cells(side, 0.0, p)),
            tuple(e * (h / base_h) for e in _cells(side, 0.0, p)),
        )
        # Tiles: the image resized into the best pinpoint (aspect kept), centred with
        # zero padding, cut into tile x tile views (select_best_resolution, as the processor).
        select = transformers.image_processing_utils.select_best_resolution
        best_h, best_w = select((h, w), proc.image_grid_pinpoints)
        if best_w / w < best_h / h:  # transformers.image_processing_utils.get_patch_output_size
            new_w, new_h = best_w, min(math.ceil(h * best_w / w), best_h)
        else:
            new_h, new_w = best_h, min(math.ceil(w * best_h / h), best_w)
        pad_y, pad_x = (best_h - new_h) // 2, (best_w - new_w) // 2
        rows, cols = (best_h // tile) * side, (best_w // tile) * side
        # Unpad as the model does (modeling_llava_onevision.unpad_image), in patch units.
        r0, r1, c0, c1 = 0, rows, 0, cols
        if w / h > cols / rows:
            cut = (rows - int(round(h * (cols / w), 7))) // 2
            r0, r1 = cut, rows - cut
        else:
            cut = (cols - int(round(w * (rows / h), 7))) // 2
            c0, c1 = cut, cols - cut
        cur_h, cur_w = r1 - r0, c1 - c0
        vision_ratio = str(getattr(processor, "vision_aspect_ratio", None) or "anyres_max_9")
        max_views = int(vision_ratio.removeprefix("anyres_max_"))
        ratio = math.sqrt(cur_h * cur_w / (max_views * side**2))
        out_h, out_w = cur_h, cur_w
        if ratio > 1.1:
            out_h, out_w = int(cur_h // ratio), int(cur_w // ratio)

        def edges(
            lo: float, n_in: int, n_out: int, pad: int, scale: float
        ) -> tuple[np.ndarray, ...]:
            # Token i spans patch coordinates [lo + i * n_in / n_out, ...]; a patch
            # coordinate u lies in tile u // side at p * (u % side) px within it.
            u = lo + np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
            t_lo = np.floor(u[:-1] / side)
            t_hi = np.ceil(u[1:] / side) - 1
            px_lo = tile * t_lo + p * (u[:-1] - side * t_lo)
            px_hi = tile * t_hi + p * (u[1:] - side * t_hi)
            return (px_lo - pad) * scale, (px_hi - pad) * scale

        xs = edges(c0, cur_w, out_w, pad_x, w / new_w)
        ys = edges(r0, cur_h, out_h, pad_y, h / new_h)
        grid = _grid_boxes(xs, ys).reshape(out_h, out_w, 4)
        tiles = np.concatenate([grid, np.zeros((out_h, 1, 4))], axis=1).reshape(-1, 4)
        grids = (
            TokenGrid(0, side, side),
            TokenGrid(side * side, out_h, out_w, newline=True),
        )
        return cls(np.concatenate([base, tiles]), image_size, grids, "llava_onevision")


def box_to_token_distribution(
    boxes: Any,
    layout: ImageTokenLayout,
    *,
    smoothing: GaussianSmoothing | None = None,
    eps: float = 1e-12,
) -> Any:
    """Boxes in ORIGINAL pixels -> distributions over a layout's image tokens.

    Entry ``[n, p]`` is proportional to the area of the visible part of box ``n``
    (inside the original image) within token ``p``'s footprint, divided by the
    footprint's area (exact; newline tokens get 0), after the optional blur,
    which runs within each :class:`TokenGrid` separately. Rows sum to 1; a box
    with no visible area on any token has no target and an all-zero row.

    On a fixed grid this equals :func:`~medcurric.geometry.box_to_patch_distribution`
    of the boxes mapped with :func:`~medcurric.geometry.map_boxes`.

    Args:
        boxes: ``[N, 4]`` boxes ``(x1, y1, x2, y2)`` in original-image pixels.
        layout: The image's token layout.
        smoothing: ``None`` or :func:`~medcurric.geometry.gaussian`.
        eps: Rows whose total coverage (in tokens) is ``<= eps`` count as empty.

    Returns:
        ``[N, P]`` rows summing to 1 (or 0) in sequence order. Torch in gives torch
        out on the same device (float64 stays float64, otherwise float32);
        numpy/lists give float64 numpy.

    Raises:
        ShapeError: Boxes are not ``[N, 4]``.
        InvalidBoxError: Boxes are not finite or are inverted.
        WrongTypeError: ``layout`` or ``smoothing`` of the wrong type.

    Shape:
        - boxes: ``[N, 4]``
        - output: ``[N, P]`` with ``P = layout.num_tokens``

    Examples:
        >>> from medcurric.geometry import Preprocess
        >>> layout = ImageTokenLayout.from_grid((24, 24), (336, 336), Preprocess.plain_resize(336))
        >>> p = box_to_token_distribution([[0, 0, 21, 14]], layout)
        >>> p.shape, p[0, :3].tolist(), p.sum().item()
        ((1, 576), [0.6666666666666666, 0.3333333333333333, 0.0], 1.0)
    """
    if not isinstance(layout, ImageTokenLayout):
        raise WrongTypeError(
            f"Expected an ImageTokenLayout, but got {type(layout).__name__}. "
            "Build one with ImageTokenLayout.from_processor(processor, image_size)."
        )
    if smoothing is not None and not isinstance(smoothing, GaussianSmoothing):
        raise WrongTypeError(
            f"Expected smoothing=None or gaussian(kernel, sigma), but got {type(smoothing).__name__}."
        )
    t, kind, _ = _as_boxes(boxes)
    out_dtype = t.dtype if kind == "torch" and t.dtype == torch.float64 else torch.float32
    if kind == "numpy":
        out_dtype = torch.float64
    n, count = t.shape[0], layout.num_tokens
    if n == 0:
        empty = torch.zeros((0, count), dtype=out_dtype, device=t.device)
        return empty.numpy() if kind == "numpy" else empty
    b = t.to(torch.float64)
    height, width = layout.image_size
    b = torch.minimum(b.clamp(min=0), b.new_tensor([width, height, width, height]))
    fp = torch.from_numpy(layout.footprints).to(b.device)
    ix = torch.minimum(b[:, None, 2], fp[None, :, 2]) - torch.maximum(b[:, None, 0], fp[None, :, 0])
    iy = torch.minimum(b[:, None, 3], fp[None, :, 3]) - torch.maximum(b[:, None, 1], fp[None, :, 1])
    area = (fp[:, 2] - fp[:, 0]) * (fp[:, 3] - fp[:, 1])
    has_area = area > 0
    cover = torch.where(
        has_area[None, :],
        ix.clamp(min=0) * iy.clamp(min=0) / torch.where(has_area, area, 1.0)[None, :],
        0.0,
    )
    total = cover.sum(dim=1)
    if smoothing is not None:
        blurred = torch.zeros_like(cover)
        for g in layout.grids:
            idx = torch.from_numpy(g.indices().ravel()).to(b.device)
            maps = cover[:, idx].reshape(n, g.rows, g.cols)
            blurred[:, idx] = _blur(maps, smoothing).reshape(n, -1)
        cover = blurred
    sums = cover.sum(dim=1, keepdim=True)
    keep = (total > eps)[:, None] & (sums > 0)
    out = torch.where(keep, cover / torch.where(keep, sums, torch.ones_like(sums)), 0.0)
    out = out.to(out_dtype)
    return out.numpy() if kind == "numpy" else out
