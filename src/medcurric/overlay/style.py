"""Visual-prompt styles: shape, colour, line width, opacity, and the phrase that refers to them.

The shapes and colours are those VIP-LLaVA was trained with (its colours are the
CSS named colours). Widths and radii are given at the 336-pixel reference size and
scale with ``max(H, W) / 336`` when drawn, as in VIP-LLaVA.

A fixed :class:`OverlayStyle` is meant for evaluation; :class:`RandomStyle` draws
styles from ranges for training, reproducibly from a seed.

Two conventions (:class:`Convention`) say how a prompt sits on its box and how
the phrase reads:

* ``"vip_llava"``: as ViP-LLaVA's own prompt generator, the distribution its
  checkpoints were trained on: the rectangle covers the box's outer ring, the arrow
  head lies in the box, the triangle joins three points in the box, widths scale as
  ``int(width * max(H, W) / 336)``, phrases such as "with the red triangle".
  :meth:`OverlayStyle.vip_llava` (evaluation: opacity 128/255) and
  :meth:`RandomStyle.vip_llava` (training: opacity 96-255, ellipse scale 1-1.5,
  widths per shape, half the colours unnamed, "the" dropped half the time).
* ``"medcurric"``: prompts drawn around the box so the lesion stays visible (the
  rectangle just outside, the arrow tip at the box edge, the triangle around it),
  widths scaled without truncation, phrases "within" / "marked by" with a named
  colour; :meth:`OverlayStyle.medcurric` and :meth:`RandomStyle.medcurric`.

Shapes ViP-LLaVA's phrases do not cover (ellipse, arrow) keep medcurric's phrase
under both conventions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import InvalidOptionError

__all__ = ["COLORS", "Color", "Convention", "OverlayStyle", "RandomStyle", "Shape", "StylePreset", "style_preset"]


class Shape(StrEnum):
    """Visual-prompt shapes.

    ``CONTOUR`` outlines a lesion mask; without a mask it outlines the ellipse
    inscribed in the box.
    """

    RECTANGLE = "rectangle"
    ELLIPSE = "ellipse"
    ARROW = "arrow"
    POINT = "point"
    CONTOUR = "contour"
    TRIANGLE = "triangle"
    SCRIBBLE = "scribble"


class Color(StrEnum):
    """VIP-LLaVA's prompt colours (CSS names)."""

    RED = "red"
    LIME = "lime"
    BLUE = "blue"
    YELLOW = "yellow"
    FUCHSIA = "fuchsia"
    AQUA = "aqua"
    ORANGE = "orange"
    PURPLE = "purple"
    GOLD = "gold"


#: CSS RGB values of the prompt colours.
COLORS: dict[Color, tuple[int, int, int]] = {
    Color.RED: (255, 0, 0),
    Color.LIME: (0, 255, 0),
    Color.BLUE: (0, 0, 255),
    Color.YELLOW: (255, 255, 0),
    Color.FUCHSIA: (255, 0, 255),
    Color.AQUA: (0, 255, 255),
    Color.ORANGE: (255, 165, 0),
    Color.PURPLE: (128, 0, 128),
    Color.GOLD: (255, 215, 0),
}

class Convention(StrEnum):
    """How a prompt sits on its box and how its phrase reads (see the module docstring)."""

    MEDCURRIC = "medcurric"
    VIP_LLAVA = "vip_llava"


class StylePreset(StrEnum):
    """Named style policies (:func:`style_preset`): fixed for evaluation, ``*_random`` for training."""

    MEDCURRIC = "medcurric"
    MEDCURRIC_RANDOM = "medcurric_random"
    VIP_LLAVA = "vip_llava"
    VIP_LLAVA_RANDOM = "vip_llava_random"


#: ``Convention`` -> its code in the packed style row.
_CONVENTION_CODES: dict[Convention, int] = {c: i for i, c in enumerate(Convention)}

#: ``Shape`` -> its index in ``Shape`` (the code the rasteriser's packing uses).
_SHAPE_CODES: dict[Shape, int] = {shape: i for i, shape in enumerate(Shape)}

_PHRASES: dict[Shape, str] = {
    Shape.RECTANGLE: "within the {color} rectangle",
    Shape.ELLIPSE: "within the {color} ellipse",
    Shape.ARROW: "pointed to by the {color} arrow",
    Shape.POINT: "marked by the {color} point",
    Shape.CONTOUR: "within the {color} contour",
    Shape.TRIANGLE: "within the {color} triangle",
    Shape.SCRIBBLE: "marked by the {color} scribble",
}

#: ViP-LLaVA's phrases: preposition and noun (ellipse and arrow: medcurric's, see above).
_VIP_PHRASES: dict[Shape, tuple[str, str]] = {
    Shape.RECTANGLE: ("within", "rectangle"),
    Shape.ELLIPSE: ("within", "ellipse"),
    Shape.ARROW: ("pointed to by", "arrow"),
    Shape.POINT: ("at", "point"),
    Shape.CONTOUR: ("with", "mask contour"),
    Shape.TRIANGLE: ("with", "triangle"),
    Shape.SCRIBBLE: ("with", "scribble"),
}

#: ViP-LLaVA's opacity at evaluation.
VIP_LLAVA_EVAL_ALPHA = 128 / 255


@dataclass(frozen=True)
class OverlayStyle(JsonRecord):
    """How one visual prompt looks.

    Attributes:
        shape: Which :class:`Shape`.
        color: Which :class:`Color`.
        width: Line width in pixels at 336 px (scaled by ``max(H, W) / 336``); for
            ``point``, the dot's radius. ``None``: 3 for lines, 8 for a point
            (VIP-LLaVA's constant style).
        alpha: Opacity in ``(0, 1]``; the prompt is alpha-blended over the image.
        scale: Ellipse/triangle size relative to the box (VIP-LLaVA: 1 to 1.5).
        seed: Seed of the shape's own randomness (arrow direction, triangle
            rotation, scribble path, point jitter): the same seed draws the same shape.
        jitter: How far the random parts may stray, in ``[0, 1]``; 0 gives the
            canonical shape (arrow from the upper left, apex-up triangle, centred point).
        convention: :class:`Convention`: where the prompt sits on the box, how widths
            scale and how the phrase reads.
        custom_rgb: Draw in this 0-255 RGB colour instead of ``color``; the phrase then
            names no colour ("within the rectangle"), as ViP-LLaVA's random colours.
        article: Say "the" in the phrase (ViP-LLaVA drops it half the time in training).

    Examples:
        >>> style = OverlayStyle(shape="arrow", color="blue")
        >>> style.phrase, style.rgb
        ('pointed to by the blue arrow', (0, 0, 255))
        >>> OverlayStyle.vip_llava("triangle").phrase
        'with the red triangle'
    """

    #: The numbers the rasteriser reads for every image (set in ``__post_init__``):
    #: shape code (index in ``Shape``), width, jitter, scale, R, G, B, alpha, convention
    #: code, as nine native float64 in bytes (a batch's rows are joined and read without
    #: conversion).
    _packed: ClassVar[bytes]

    shape: Shape = Shape.RECTANGLE
    color: Color = Color.RED
    width: float | None = None
    alpha: float = 0.8
    scale: float = 1.25
    seed: int = 0
    jitter: float = 0.0
    convention: Convention = Convention.MEDCURRIC
    custom_rgb: tuple[int, int, int] | None = None
    article: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", look_up_option(self.shape, Shape, name="shape"))
        object.__setattr__(self, "color", look_up_option(self.color, Color, name="color"))
        object.__setattr__(
            self, "convention", look_up_option(self.convention, Convention, name="convention")
        )
        if self.custom_rgb is not None:
            rgb = tuple(self.custom_rgb)
            if len(rgb) != 3 or not all(
                isinstance(v, (int, np.integer)) and 0 <= int(v) <= 255 for v in rgb
            ):
                raise InvalidOptionError(
                    f"Expected custom_rgb as three ints in 0-255, but got {self.custom_rgb!r}."
                )
            object.__setattr__(self, "custom_rgb", tuple(int(v) for v in rgb))
        object.__setattr__(self, "article", bool(self.article))
        if self.width is None:
            object.__setattr__(self, "width", 8.0 if self.shape is Shape.POINT else 3.0)
        if not (float(self.width) > 0):  # type: ignore[arg-type]
            raise InvalidOptionError(f"Expected width > 0 pixels, but got {self.width!r}.")
        if not (0 < float(self.alpha) <= 1):
            raise InvalidOptionError(
                f"Expected alpha in (0, 1], but got {self.alpha!r}. For 0-255 values divide by 255."
            )
        if not (float(self.scale) > 0):
            raise InvalidOptionError(f"Expected scale > 0, but got {self.scale!r}.")
        if not (0 <= float(self.jitter) <= 1):
            raise InvalidOptionError(f"Expected jitter in [0, 1], but got {self.jitter!r}.")
        object.__setattr__(self, "width", float(self.width))  # type: ignore[arg-type]
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "jitter", float(self.jitter))
        object.__setattr__(self, "seed", int(self.seed))
        packed = np.array(
            [
                _SHAPE_CODES[self.shape],
                self.width,
                self.jitter,
                self.scale,
                *self.rgb,
                self.alpha,
                _CONVENTION_CODES[self.convention],
            ],
            np.float64,
        )
        object.__setattr__(self, "_packed", packed.tobytes())

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as 0-255 RGB (``custom_rgb`` when set)."""
        return self.custom_rgb if self.custom_rgb is not None else COLORS[self.color]

    @property
    def phrase(self) -> str:
        """The referring phrase, e.g. ``"within the red rectangle"``."""
        if self.convention is Convention.VIP_LLAVA:
            prep, noun = _VIP_PHRASES[self.shape]
            template = f"{prep} the {{color}} {noun}"
        else:
            template = _PHRASES[self.shape]
        words = template.replace("{color}", "" if self.custom_rgb is not None else self.color.value)
        if not self.article:
            words = words.replace(" the ", " ", 1)
        return " ".join(words.split())

    @classmethod
    def medcurric(cls, shape: Shape | str = Shape.RECTANGLE, **fields: Any) -> OverlayStyle:
        """The medcurric convention's fixed style (the class defaults), for evaluation.

        Args:
            shape: The shape.
            **fields: Other fields to set.

        Returns:
            The style.
        """
        return cls(shape=shape, convention=Convention.MEDCURRIC, **fields)  # type: ignore[arg-type]

    @classmethod
    def vip_llava(cls, shape: Shape | str = Shape.RECTANGLE, **fields: Any) -> OverlayStyle:
        """ViP-LLaVA's fixed evaluation style: opacity 128/255, its geometry and phrases.

        Args:
            shape: The shape.
            **fields: Other fields to set (``alpha`` defaults to 128/255).

        Returns:
            The style.

        Examples:
            >>> s = OverlayStyle.vip_llava()
            >>> s.phrase, round(s.alpha * 255)
            ('within the red rectangle', 128)
        """
        fields.setdefault("alpha", VIP_LLAVA_EVAL_ALPHA)
        return cls(shape=shape, convention=Convention.VIP_LLAVA, **fields)  # type: ignore[arg-type]

    @classmethod
    def random(cls, rng: np.random.Generator | int | None = None, **policy: Any) -> OverlayStyle:
        """A random style, as :meth:`RandomStyle.sample` with ``RandomStyle(**policy)``.

        Args:
            rng: A numpy generator or a seed.
            **policy: Fields of :class:`RandomStyle`.

        Returns:
            The style.

        Examples:
            >>> OverlayStyle.random(7) == OverlayStyle.random(7)
            True
        """
        return RandomStyle(**policy).sample(rng)


def _all_shapes() -> tuple[Shape, ...]:
    return tuple(Shape)


def _all_colors() -> tuple[Color, ...]:
    return tuple(Color)


@dataclass(frozen=True)
class RandomStyle:
    """A seeded random style policy for training (ranges follow VIP-LLaVA's generator).

    Attributes:
        shapes: Shapes to choose from (uniformly).
        colors: Colours to choose from (uniformly).
        width: ``(low, high)`` line width at 336 px (VIP-LLaVA: 2 to 8).
        point_radius: ``(low, high)`` dot radius at 336 px (VIP-LLaVA: 5 to 20).
        alpha: ``(low, high)`` opacity (VIP-LLaVA: 96/255 to 1).
        scale: ``(low, high)`` ellipse/triangle scale (VIP-LLaVA: 1 to 1.5).
        jitter: Jitter of the random shape parts.
        convention: :class:`Convention` of the drawn styles.
        shape_widths: ``{shape: (low, high)}`` overriding ``width`` for some shapes
            (VIP-LLaVA: arrow 1-6, scribble 2-12, contour 1-2); kept as sorted
            ``(shape, (low, high))`` pairs.
        integer_widths: Draw whole widths ``low..high`` (both included) instead of
            uniform real ones.
        unnamed_color: Probability of a random unnamed RGB colour instead of a named one.
        drop_article: Probability that the phrase drops "the".

    Examples:
        >>> policy = RandomStyle(shapes=("rectangle", "ellipse"))
        >>> [s.shape.value for s in policy.sample_many(4, rng=0)]
        ['ellipse', 'ellipse', 'ellipse', 'rectangle']
    """

    shapes: tuple[Shape, ...] = field(default_factory=_all_shapes)
    colors: tuple[Color, ...] = field(default_factory=_all_colors)
    width: tuple[float, float] = (2.0, 8.0)
    point_radius: tuple[float, float] = (5.0, 20.0)
    alpha: tuple[float, float] = (96 / 255, 1.0)
    scale: tuple[float, float] = (1.0, 1.5)
    jitter: float = 1.0
    convention: Convention = Convention.MEDCURRIC
    shape_widths: Mapping[Shape, tuple[float, float]] | tuple[tuple[Shape, tuple[float, float]], ...] = ()
    integer_widths: bool = False
    unnamed_color: float = 0.0
    drop_article: float = 0.0

    def __post_init__(self) -> None:
        shapes = self.shapes if isinstance(self.shapes, Sequence) else (self.shapes,)
        colors = self.colors if isinstance(self.colors, Sequence) else (self.colors,)
        if isinstance(self.shapes, str):
            shapes = (self.shapes,)
        if isinstance(self.colors, str):
            colors = (self.colors,)
        if not shapes or not colors:
            raise InvalidOptionError("Expected at least one shape and one colour to choose from.")
        object.__setattr__(
            self, "shapes", tuple(look_up_option(s, Shape, name="shape") for s in shapes)
        )
        object.__setattr__(
            self, "colors", tuple(look_up_option(c, Color, name="color") for c in colors)
        )
        for name in ("width", "point_radius", "alpha", "scale"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (0 < lo <= hi) or (name == "alpha" and hi > 1):
                raise InvalidOptionError(
                    f"Expected {name} as (low, high) with 0 < low <= high"
                    f"{' <= 1' if name == 'alpha' else ''}, but got {getattr(self, name)!r}."
                )
            object.__setattr__(self, name, (lo, hi))
        object.__setattr__(
            self, "convention", look_up_option(self.convention, Convention, name="convention")
        )
        widths: dict[Shape, tuple[float, float]] = {}
        for key, pair in dict(self.shape_widths).items():  # a mapping or (shape, range) pairs
            lo, hi = (float(v) for v in pair)
            if not (0 < lo <= hi):
                raise InvalidOptionError(
                    f"Expected shape_widths[{key!r}] as (low, high) with 0 < low <= high, but got {pair!r}."
                )
            widths[look_up_option(key, Shape, name="shape")] = (lo, hi)
        # kept as sorted pairs, so the policy stays hashable like its other fields
        order = list(Shape)
        object.__setattr__(
            self, "shape_widths", tuple(sorted(widths.items(), key=lambda kv: order.index(kv[0])))
        )
        for name in ("unnamed_color", "drop_article"):
            if not (0.0 <= float(getattr(self, name)) <= 1.0):
                raise InvalidOptionError(
                    f"Expected {name} as a probability in [0, 1], but got {getattr(self, name)!r}."
                )
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def medcurric(cls, **fields: Any) -> RandomStyle:
        """The medcurric convention's training policy (the class defaults).

        Args:
            **fields: Fields to set.

        Returns:
            The policy.
        """
        return cls(**fields)

    @classmethod
    def vip_llava(cls, **fields: Any) -> RandomStyle:
        """ViP-LLaVA's training distribution (its ``visual_prompt_generator``), restated.

        Opacity uniform in 96/255-1, ellipse scale 1-1.5, whole widths at 336 px
        (arrow 1-6, scribble 2-12, contour 1-2, other lines 2-8; dot radius 5-20),
        half the colours a random unnamed RGB, "the" dropped half the time.

        Args:
            **fields: Fields to override.

        Returns:
            The policy.

        Examples:
            >>> styles = RandomStyle.vip_llava().sample_many(200, rng=0)
            >>> sorted({s.width for s in styles if s.shape == "arrow"})
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        """
        options: dict[str, Any] = {
            "convention": Convention.VIP_LLAVA,
            "width": (2.0, 8.0),
            "shape_widths": {
                Shape.ARROW: (1.0, 6.0),
                Shape.SCRIBBLE: (2.0, 12.0),
                Shape.CONTOUR: (1.0, 2.0),
            },
            "point_radius": (5.0, 20.0),
            "alpha": (96 / 255, 1.0),
            "scale": (1.0, 1.5),
            "integer_widths": True,
            "unnamed_color": 0.5,
            "drop_article": 0.5,
        }
        options.update(fields)
        return cls(**options)

    def sample(self, rng: np.random.Generator | int | None = None) -> OverlayStyle:
        """Draw one style.

        Args:
            rng: A numpy generator (advanced) or a seed.

        Returns:
            The style; its ``seed`` is drawn too, so the shape's details follow.
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        shape = self.shapes[int(gen.integers(len(self.shapes)))]
        color = self.colors[int(gen.integers(len(self.colors)))]
        if shape is Shape.POINT:
            lo, hi = self.point_radius
        else:
            lo, hi = dict(self.shape_widths).get(shape, self.width)  # type: ignore[arg-type]
        if self.integer_widths:
            width = float(gen.integers(math.ceil(lo), math.floor(hi) + 1))
        else:
            width = float(gen.uniform(lo, hi))
        alpha = float(gen.uniform(*self.alpha))
        scale = float(gen.uniform(*self.scale))
        seed = int(gen.integers(2**31 - 1))
        custom: tuple[int, int, int] | None = None
        article = True
        # drawn only when asked for, so the medcurric policy's draws stay as they were
        if self.unnamed_color > 0 and gen.random() < self.unnamed_color:
            custom = tuple(int(v) for v in gen.integers(0, 256, size=3))  # type: ignore[assignment]
        if self.drop_article > 0 and gen.random() < self.drop_article:
            article = False
        return OverlayStyle(
            shape=shape,
            color=color,
            width=width,
            alpha=alpha,
            scale=scale,
            seed=seed,
            jitter=self.jitter,
            convention=self.convention,
            custom_rgb=custom,
            article=article,
        )

    def sample_many(
        self, n: int, rng: np.random.Generator | int | None = None
    ) -> list[OverlayStyle]:
        """Draw ``n`` styles from one generator.

        Args:
            n: How many.
            rng: A numpy generator or a seed.

        Returns:
            The styles.
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return [self.sample(gen) for _ in range(n)]


def style_preset(name: StylePreset | str) -> OverlayStyle | RandomStyle:
    """The style policy of a :class:`StylePreset` name.

    Args:
        name: ``"medcurric"`` (:meth:`OverlayStyle.medcurric`), ``"medcurric_random"``
            (:meth:`RandomStyle.medcurric`), ``"vip_llava"`` (:meth:`OverlayStyle.vip_llava`)
            or ``"vip_llava_random"`` (:meth:`RandomStyle.vip_llava`).

    Returns:
        A fixed :class:`OverlayStyle` or a :class:`RandomStyle` policy.

    Raises:
        InvalidOptionError: On an unknown name.

    Examples:
        >>> style_preset("vip_llava").phrase
        'within the red rectangle'
    """
    preset = look_up_option(name, StylePreset, name="overlay style preset")
    if preset is StylePreset.MEDCURRIC:
        return OverlayStyle.medcurric()
    if preset is StylePreset.MEDCURRIC_RANDOM:
        return RandomStyle.medcurric()
    if preset is StylePreset.VIP_LLAVA:
        return OverlayStyle.vip_llava()
    return RandomStyle.vip_llava()
