"""Visual-prompt styles: shape, colour, line width, opacity, and the phrase that refers to them.

The shapes and colours are those VIP-LLaVA was trained with (its colours are the
CSS named colours). Widths and radii are given at the 336-pixel reference size and
scale with ``max(H, W) / 336`` when drawn, as in VIP-LLaVA.

A fixed :class:`OverlayStyle` is meant for evaluation; :class:`RandomStyle` draws
styles from ranges for training, reproducibly from a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from medcurric._options import StrEnum, look_up_option
from medcurric._serialization import JsonRecord
from medcurric.errors import InvalidOptionError

__all__ = ["COLORS", "Color", "OverlayStyle", "RandomStyle", "Shape"]


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

    Examples:
        >>> style = OverlayStyle(shape="arrow", color="blue")
        >>> style.phrase, style.rgb
        ('pointed to by the blue arrow', (0, 0, 255))
    """

    #: The numbers the rasteriser reads for every image (set in ``__post_init__``):
    #: shape code (index in ``Shape``), width, jitter, scale, R, G, B, alpha, as eight
    #: native float64 in bytes (a batch's rows are joined and read without conversion).
    _packed: ClassVar[bytes]

    shape: Shape = Shape.RECTANGLE
    color: Color = Color.RED
    width: float | None = None
    alpha: float = 0.8
    scale: float = 1.25
    seed: int = 0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", look_up_option(self.shape, Shape, name="shape"))
        object.__setattr__(self, "color", look_up_option(self.color, Color, name="color"))
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
                *COLORS[self.color],
                self.alpha,
            ],
            np.float64,
        )
        object.__setattr__(self, "_packed", packed.tobytes())

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as 0-255 RGB."""
        return COLORS[self.color]

    @property
    def phrase(self) -> str:
        """The referring phrase, e.g. ``"within the red rectangle"``."""
        return _PHRASES[self.shape].replace("{color}", self.color.value)

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
        lo, hi = self.point_radius if shape is Shape.POINT else self.width
        return OverlayStyle(
            shape=shape,
            color=color,
            width=float(gen.uniform(lo, hi)),
            alpha=float(gen.uniform(*self.alpha)),
            scale=float(gen.uniform(*self.scale)),
            seed=int(gen.integers(2**31 - 1)),
            jitter=self.jitter,
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
