"""What the model's image processor does to an image, and where a box ends up.

A lesion box is given in the pixels of the original image, but the model sees the
image after its processor has resized, cropped or padded it. :class:`Preprocess`
describes that pipeline as three optional steps, applied in this order:

1. **pad to square** (original LLaVA training, ``expand2square``; HF
   ``LlavaImageProcessor(do_pad=True)``): the short side is padded with a background
   colour, the image placed at offset ``(long - short) // 2``;
2. **resize**: either the shortest edge to ``shortest_edge`` (the long edge follows
   the aspect ratio, rounded down exactly as ``transformers`` does, optionally capped
   by ``longest_edge``) or to a fixed ``resize_to = (height, width)``;
3. **centre crop** to ``crop_size = (height, width)``; an image smaller than the crop
   is zero-padded first. This is where HF CLIP processors (VIP-LLaVA's default:
   shortest edge 336, crop 336 x 336) cut off the ends of a non-square image, and
   with them any box that lay there.

Every step maps pixel-edge coordinates affinely (``x' = scale * x + offset`` per
axis), so :func:`map_boxes` composes one scale and offset per axis and reports the
fraction of each box that survives the crop.

Sizes are ``(height, width)`` like ``transformers``; boxes are ``(x1, y1, x2, y2)``
in pixels (see :doc:`/conventions`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
import torch

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import InvalidBoxError, InvalidOptionError, ShapeError, UnsupportedModelError

__all__ = ["CoordinateMap", "CropBackend", "MappedBoxes", "Preprocess", "Resample", "map_boxes"]

#: Background of LLaVA's ``expand2square``: ``int(255 * m)`` of the OpenAI CLIP mean.
CLIP_MEAN_RGB: tuple[int, int, int] = (122, 116, 104)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class CropBackend(StrEnum):
    """How a centre crop pads an image smaller than the crop (only then do they differ).

    * ``PIL``: ``transformers.image_transforms.center_crop`` (PIL/NumPy processors and
      all 4.x slow processors): ``ceil((crop - size) / 2)`` pixels before the image.
    * ``TORCHVISION``: the "fast" torchvision-backed processors:
      ``(crop - size) // 2`` pixels before the image.
    """

    PIL = "pil"
    TORCHVISION = "torchvision"


class Resample(StrEnum):
    """Resampling filter of the resize step (does not change where boxes go)."""

    NEAREST = "nearest"
    LANCZOS = "lanczos"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"


# PIL.Image.Resampling / transformers.PILImageResampling integer codes.
_PIL_RESAMPLE_CODES = {
    0: "nearest",
    1: "lanczos",
    2: "bilinear",
    3: "bicubic",
    4: "box",
    5: "hamming",
}


class CoordinateMap(NamedTuple):
    """Per-axis affine map from original pixels to model-input pixels.

    ``x' = scale_x * x + offset_x`` and ``y' = scale_y * y + offset_y``; the model
    input is ``height`` x ``width`` pixels.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    height: int
    width: int


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidOptionError(f"Expected {name} to be a positive integer, but got {value!r}.")
    return int(value)


def _hw_pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        v = _positive_int(value, name)
        return (v, v)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (_positive_int(value[0], f"{name}[0]"), _positive_int(value[1], f"{name}[1]"))
    raise InvalidOptionError(
        f"Expected {name} to be an int or a (height, width) pair of positive ints, "
        f"but got {value!r}."
    )


def _image_size(image_size: Any) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        return _hw_pair(tuple(image_size), "image_size")
    raise ShapeError(
        f"Expected image_size as (height, width) in pixels, but got {image_size!r}. "
        "For a numpy image pass image.shape[:2]; for PIL pass (img.height, img.width)."
    )


def _shortest_edge_size(
    height: int, width: int, shortest: int, longest: int | None
) -> tuple[int, int]:
    """Output (height, width) of transformers' shortest-edge resize, same rounding."""
    if longest is not None:
        # transformers.image_transforms.get_size_with_aspect_ratio
        raw_size = None
        size = shortest
        min_orig, max_orig = float(min(height, width)), float(max(height, width))
        if max_orig / min_orig * size > longest:
            raw_size = longest * min_orig / max_orig
            size = int(round(raw_size))  # noqa: RUF046 (as transformers)
        if (height <= width and height == size) or (width <= height and width == size):
            return height, width
        if width < height:
            ow = size
            oh = (
                int(raw_size * height / width)
                if raw_size is not None
                else int(size * height / width)
            )
            return oh, ow
        oh = size
        ow = int(raw_size * width / height) if raw_size is not None else int(size * width / height)
        return oh, ow
    # transformers.image_transforms.get_resize_output_image_size(default_to_square=False)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = shortest, int(shortest * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


@dataclass(frozen=True)
class Preprocess(JsonRecord):
    """Geometry of an image processor: pad to square, resize, centre crop (each optional).

    Build one with :meth:`shortest_edge_crop` (HF CLIP / VIP-LLaVA),
    :meth:`pad_square_resize` (original LLaVA training), :meth:`plain_resize`, or
    :meth:`from_processor` (read from a real ``transformers`` image processor).

    Attributes:
        pad_to_square: Pad the short side first, image centred at ``(long - short) // 2``.
        background: RGB colour of that padding (LLaVA: the CLIP mean, ``(122, 116, 104)``).
        shortest_edge: Resize so the shortest edge has this length (aspect kept).
        longest_edge: With ``shortest_edge``, cap on the long edge (transformers rules).
        resize_to: Resize to exactly ``(height, width)`` instead.
        crop_size: Centre crop to ``(height, width)``.
        resample: Resampling filter name (informational: it does not move boxes).
        crop_backend: Padding rule of the crop for images smaller than the crop.

    Examples:
        >>> clip = Preprocess.shortest_edge_crop(336)
        >>> clip.output_size((512, 1024))
        (336, 336)
        >>> clip.coordinate_map((512, 1024))
        CoordinateMap(scale_x=0.65625, scale_y=0.65625, offset_x=-168.0, offset_y=0.0,
                      height=336, width=336)
    """

    pad_to_square: bool = False
    background: tuple[int, int, int] = (0, 0, 0)
    shortest_edge: int | None = None
    longest_edge: int | None = None
    resize_to: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    resample: Resample = Resample.BICUBIC
    crop_backend: CropBackend = CropBackend.PIL

    def __post_init__(self) -> None:
        if self.shortest_edge is not None and self.resize_to is not None:
            raise InvalidOptionError(
                "Expected at most one of shortest_edge and resize_to, but got both "
                f"(shortest_edge={self.shortest_edge}, resize_to={self.resize_to}). "
                "A processor resizes one way or the other."
            )
        if self.shortest_edge is not None:
            _positive_int(self.shortest_edge, "shortest_edge")
        if self.longest_edge is not None:
            if self.shortest_edge is None:
                raise InvalidOptionError(
                    "longest_edge only caps a shortest-edge resize; pass shortest_edge too."
                )
            _positive_int(self.longest_edge, "longest_edge")
        if self.resize_to is not None:
            object.__setattr__(self, "resize_to", _hw_pair(self.resize_to, "resize_to"))
        if self.crop_size is not None:
            object.__setattr__(self, "crop_size", _hw_pair(self.crop_size, "crop_size"))
        bg = tuple(int(c) for c in self.background)
        if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
            raise InvalidOptionError(
                f"Expected background as three ints in [0, 255], but got {self.background!r}."
            )
        object.__setattr__(self, "background", bg)
        object.__setattr__(
            self, "resample", look_up_option(self.resample, Resample, name="resample")
        )
        object.__setattr__(
            self,
            "crop_backend",
            look_up_option(self.crop_backend, CropBackend, name="crop_backend"),
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def shortest_edge_crop(
        cls, size: int = 336, crop_size: int | tuple[int, int] | None = None
    ) -> Preprocess:
        """HF ``CLIPImageProcessor`` (VIP-LLaVA's default): shortest edge, then centre crop.

        Args:
            size: Length of the shortest edge after resizing.
            crop_size: Crop ``(height, width)`` or a side; defaults to ``size``.

        Returns:
            The description.
        """
        return cls(
            shortest_edge=size,
            crop_size=_hw_pair(size if crop_size is None else crop_size, "crop_size"),
        )

    @classmethod
    def pad_square_resize(
        cls, size: int = 336, background: tuple[int, int, int] = CLIP_MEAN_RGB
    ) -> Preprocess:
        """Original LLaVA training: pad to square with the mean colour, then resize.

        Args:
            size: Side of the square model input.
            background: Padding colour.

        Returns:
            The description.
        """
        return cls(pad_to_square=True, background=background, resize_to=(size, size))

    @classmethod
    def plain_resize(cls, size: int | tuple[int, int] = 336) -> Preprocess:
        """Resize to a fixed size, ignoring the aspect ratio.

        Args:
            size: Side, or ``(height, width)``.

        Returns:
            The description.
        """
        return cls(resize_to=_hw_pair(size, "size"))

    @classmethod
    def from_processor(cls, processor: Any, *, pad_to_square: bool | None = None) -> Preprocess:
        """Read the geometry from a ``transformers`` image processor (or a full processor).

        Reads ``do_resize``, ``size``, ``do_center_crop``, ``crop_size``, ``resample``,
        ``image_mean`` and, for LLaVA image processors, ``do_pad`` (pad to square).
        Works with ``SizeDict`` (transformers 5) and plain dict sizes (4.x), with PIL
        and torchvision ("fast") backends.

        Args:
            processor: An image processor, or a processor with an ``.image_processor``.
            pad_to_square: Force (``True``) or forbid (``False``) the pad-to-square step,
                e.g. ``True`` to describe LLaVA's original training, which padded images
                before handing them to the CLIP processor. ``None`` reads ``do_pad``.

        Returns:
            The description.

        Raises:
            UnsupportedModelError: When the processor resizes in a way not modelled here.

        Examples:
            >>> from types import SimpleNamespace
            >>> fake = SimpleNamespace(do_resize=True, size={"shortest_edge": 336},
            ...     do_center_crop=True, crop_size={"height": 336, "width": 336}, resample=3)
            >>> Preprocess.from_processor(fake) == Preprocess.shortest_edge_crop(336)
            True
        """
        proc = getattr(processor, "image_processor", None) or processor
        name = type(proc).__name__
        if not hasattr(proc, "size") and not hasattr(proc, "crop_size"):
            raise UnsupportedModelError(
                f"Expected a transformers image processor with size/crop_size attributes, but got "
                f"{name}. Pass processor.image_processor, or build Preprocess(...) by hand."
            )
        do_resize = bool(getattr(proc, "do_resize", True))
        do_crop = bool(getattr(proc, "do_center_crop", False))
        kwargs: dict[str, Any] = {}
        if do_resize:
            size = getattr(proc, "size", None)
            se, le = _size_field(size, "shortest_edge"), _size_field(size, "longest_edge")
            h, w = _size_field(size, "height"), _size_field(size, "width")
            if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
                if getattr(proc, "default_to_square", True):
                    kwargs["resize_to"] = (int(size), int(size))
                else:
                    kwargs["shortest_edge"] = int(size)
            elif se:
                kwargs["shortest_edge"] = int(se)
                if le:
                    kwargs["longest_edge"] = int(le)
            elif h and w:
                kwargs["resize_to"] = (int(h), int(w))
            else:
                raise UnsupportedModelError(
                    f"{name}.size = {size!r} is not modelled: expected shortest_edge (optionally "
                    "with longest_edge) or height and width. Build Preprocess(...) by hand."
                )
        if do_crop:
            crop = getattr(proc, "crop_size", None)
            ch, cw = _size_field(crop, "height"), _size_field(crop, "width")
            if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool):
                ch = cw = int(crop)
            if not (ch and cw):
                raise UnsupportedModelError(
                    f"{name}.crop_size = {crop!r} has no height and width; cannot model the crop."
                )
            kwargs["crop_size"] = (int(ch), int(cw))
        if pad_to_square is None:
            pad_to_square = bool(getattr(proc, "do_pad", False)) and hasattr(proc, "pad_to_square")
        if pad_to_square:
            mean = getattr(proc, "image_mean", None)
            if mean is not None and not isinstance(mean, (int, float)):
                kwargs["background"] = tuple(int(m * 255) for m in mean)
            kwargs["pad_to_square"] = True
        resample = getattr(proc, "resample", None)
        if resample is not None:
            kwargs["resample"] = _resample_name(resample)
        backend = getattr(proc, "backend", None)
        if not isinstance(backend, str):
            backend = "torchvision" if name.endswith("Fast") else "pil"
        kwargs["crop_backend"] = "torchvision" if "torch" in backend.lower() else "pil"
        return cls(**kwargs)

    # ------------------------------------------------------------------ geometry
    def coordinate_map(self, image_size: tuple[int, int]) -> CoordinateMap:
        """The per-axis scale and offset from original to model-input pixels.

        Args:
            image_size: Original ``(height, width)``.

        Returns:
            The map, with the model-input size.
        """
        h, w = _image_size(image_size)
        sx = sy = 1.0
        ox = oy = 0.0
        if self.pad_to_square and h != w:
            side = max(h, w)
            if w > h:
                oy += (side - h) // 2
            else:
                ox += (side - w) // 2
            h = w = side
        if self.shortest_edge is not None:
            nh, nw = _shortest_edge_size(h, w, self.shortest_edge, self.longest_edge)
        elif self.resize_to is not None:
            nh, nw = self.resize_to
        else:
            nh, nw = h, w
        if (nh, nw) != (h, w):
            fx, fy = nw / w, nh / h
            sx, sy, ox, oy = sx * fx, sy * fy, ox * fx, oy * fy
            h, w = nh, nw
        if self.crop_size is not None:
            ch, cw = self.crop_size
            dy = _crop_offset(h, ch, self.crop_backend)
            dx = _crop_offset(w, cw, self.crop_backend)
            ox, oy = ox + dx, oy + dy
            h, w = ch, cw
        return CoordinateMap(sx, sy, float(ox), float(oy), int(h), int(w))

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Model-input ``(height, width)`` for an image of ``image_size``.

        Args:
            image_size: Original ``(height, width)``.

        Returns:
            ``(height, width)`` after the pipeline.
        """
        m = self.coordinate_map(image_size)
        return (m.height, m.width)

    @property
    def fixed_output_size(self) -> tuple[int, int] | None:
        """The output ``(height, width)`` when it does not depend on the input, else ``None``."""
        if self.crop_size is not None:
            return self.crop_size
        if self.resize_to is not None:
            return self.resize_to
        return None


def _crop_offset(size: int, crop: int, backend: CropBackend) -> int:
    """Offset added to coordinates along one axis by a centre crop."""
    if size >= crop:
        return -((size - crop) // 2)
    if backend is CropBackend.PIL:
        return math.ceil((crop - size) / 2)
    return (crop - size) // 2


def _size_field(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def _resample_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str) and name.lower() in {r.value for r in Resample}:
        return name.lower()
    try:
        return _PIL_RESAMPLE_CODES[int(value)]
    except (KeyError, TypeError, ValueError):
        raise InvalidOptionError(
            f"Expected a PIL resampling filter (0-5 or a name), but got {value!r}."
        ) from None


@dataclass(frozen=True)
class MappedBoxes(Generic[ArrayT]):
    """Boxes after preprocessing, in model-input pixels.

    Attributes:
        boxes: ``[N, 4]`` boxes clipped to the model input. A box cropped away
            entirely becomes degenerate (zero width or height).
        fraction: ``[N]`` share of each box's area that survived, in ``[0, 1]``;
            ``0`` when cropped away or when the box has no area.
        unclipped: ``[N, 4]`` boxes mapped but not clipped (may lie outside the input).
        image_size: Model-input ``(height, width)``.
    """

    boxes: ArrayT
    fraction: ArrayT
    unclipped: ArrayT
    image_size: tuple[int, int]

    @property
    def visible(self) -> ArrayT:
        """``[N]`` bool: whether any of the box survived."""
        return self.fraction > 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def replace(self, **changes: Any) -> MappedBoxes[ArrayT]:
        """Return a copy with fields replaced."""
        return dataclasses.replace(self, **changes)


def _as_boxes(boxes: Any) -> tuple[torch.Tensor, str, Any]:
    """Boxes as a float tensor [N, 4]; remembers the input kind to convert back."""
    if isinstance(boxes, torch.Tensor):
        kind, ref = "torch", boxes
        t = boxes if boxes.is_floating_point() else boxes.to(torch.float32)
    else:
        kind, ref = "numpy", None
        try:
            arr = np.asarray(boxes, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidBoxError(
                f"Expected numeric boxes [N, 4], but could not convert: {exc}"
            ) from exc
        t = torch.from_numpy(arr)
    if t.ndim == 1 and t.shape[0] == 4:
        t = t[None]
    if t.ndim == 1 and t.shape[0] == 0:
        t = t.reshape(0, 4)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ShapeError(
            "Expected boxes of shape [N, 4] as (x1, y1, x2, y2) pixels, "
            f"but got shape {tuple(t.shape)}."
        )
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise InvalidBoxError("Expected finite box coordinates, but got NaN or inf.")
    if t.numel() and bool(((t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1])).any()):
        bad = int(torch.nonzero((t[:, 2] < t[:, 0]) | (t[:, 3] < t[:, 1]))[0, 0])
        raise InvalidBoxError(
            f"Expected x1 <= x2 and y1 <= y2, but box {bad} is {t[bad].tolist()}. "
            "Boxes are (x1, y1, x2, y2); convert (x, y, w, h) boxes first."
        )
    return t, kind, ref


def _back(t: torch.Tensor, kind: str) -> Any:
    return t.numpy() if kind == "numpy" else t


def map_boxes(boxes: Any, preprocess: Preprocess, image_size: tuple[int, int]) -> MappedBoxes[Any]:
    """Map boxes from original pixels to model-input pixels, with the surviving fraction.

    Args:
        boxes: ``[N, 4]`` (or ``[4]``) boxes ``(x1, y1, x2, y2)`` in original pixels;
            numpy, torch or nested lists. Torch in gives torch out (same device).
        preprocess: What the processor does.
        image_size: Original ``(height, width)``.

    Returns:
        :class:`MappedBoxes` with clipped and unclipped boxes and the fraction of
        each box's area that the model sees: the part inside both the original image
        and the model input (padding added by pad-to-square is not visible; the affine
        map keeps area ratios, so this is also the fraction of the original box).

    Raises:
        ShapeError: Boxes are not ``[N, 4]`` or ``image_size`` is not a pair.
        InvalidBoxError: Boxes are not finite or have ``x2 < x1`` / ``y2 < y1``.

    Shape:
        - boxes: ``[N, 4]``
        - output: ``boxes [N, 4]``, ``fraction [N]``, ``unclipped [N, 4]``

    Examples:
        >>> pre = Preprocess.shortest_edge_crop(336)
        >>> out = map_boxes([[0, 100, 200, 300], [400, 100, 600, 300]], pre, (512, 1024))
        >>> out.boxes.round(2).tolist()
        [[0.0, 65.62, 0.0, 196.88], [94.5, 65.62, 225.75, 196.88]]
        >>> out.fraction.tolist()
        [0.0, 1.0]
        >>> pad = Preprocess.pad_square_resize(336)  # a box above a 640 x 480 image: not visible
        >>> map_boxes([[100, -200, 200, -100], [100, -50, 200, 50]], pad, (480, 640)).fraction.tolist()
        [0.0, 0.5]
    """
    t, kind, _ = _as_boxes(boxes)
    m = preprocess.coordinate_map(image_size)
    scale = t.new_tensor([m.scale_x, m.scale_y, m.scale_x, m.scale_y])
    offset = t.new_tensor([m.offset_x, m.offset_y, m.offset_x, m.offset_y])
    raw = t * scale + offset
    # Only the part inside the original image can be seen: padding added by the
    # processor (pad-to-square) is not image, so clip to the image before mapping.
    height, width = float(image_size[0]), float(image_size[1])
    in_image = torch.minimum(torch.clamp(t, min=0), t.new_tensor([width, height, width, height]))
    hi = t.new_tensor([m.width, m.height, m.width, m.height])
    clipped = torch.minimum(torch.clamp(in_image * scale + offset, min=0), hi)
    area = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    fraction = torch.where(area > 0, kept / torch.where(area > 0, area, torch.ones_like(area)), 0.0)
    fraction = fraction.clamp(0.0, 1.0)
    return MappedBoxes(
        boxes=_back(clipped, kind),
        fraction=_back(fraction, kind),
        unclipped=_back(raw, kind),
        image_size=(m.height, m.width),
    )
