"""A box as a distribution over the vision encoder's patch grid (the Medium-stage target).

CLIP ViT-L/14 at 336 px sees a 24 x 24 grid of 14 px patches, i.e. 576 image
tokens in row-major order (row 0 left to right, then row 1, ...).
:func:`box_to_patch_distribution` turns boxes in model-input pixels (see
:func:`~medcurric.geometry.map_boxes`) into one probability vector per box over
those tokens: the exact fraction of each patch that the box covers, optionally
blurred with a Gaussian as in the MedCLM authors' code (kernel 9, sigma 3), and
normalised to sum 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import InvalidOptionError, ShapeError, WrongTypeError
from medcurric.geometry.preprocess import Preprocess, _as_boxes

__all__ = ["GaussianSmoothing", "SmoothingPadding", "box_to_patch_distribution", "gaussian"]


class SmoothingPadding(StrEnum):
    """Border handling of the Gaussian blur on the patch grid.

    * ``REFLECT``: mirror without repeating the edge (``torch`` ``"reflect"``,
      ``scipy.ndimage`` ``"mirror"``); what ``torchvision.transforms.GaussianBlur``
      does, and so what the MedCLM authors' target used. Mass stays on the grid.
    * ``ZEROS``: zero padding; mass blurred past the border is lost before the
      renormalisation, which shifts a border box's target slightly inwards.
    """

    REFLECT = "reflect"
    ZEROS = "zeros"


@dataclass(frozen=True)
class GaussianSmoothing:
    """A same-size Gaussian blur of the patch-grid coverage.

    The kernel is torchvision's: ``exp(-x**2 / (2 sigma**2))`` sampled at integer
    offsets ``-(kernel - 1)/2 ... (kernel - 1)/2``, normalised, applied separably.

    Attributes:
        kernel: Odd kernel size in patches.
        sigma: Standard deviation in patches.
        padding: Border handling, see :class:`SmoothingPadding`.
    """

    kernel: int = 9
    sigma: float = 3.0
    padding: SmoothingPadding = SmoothingPadding.REFLECT

    def __post_init__(self) -> None:
        if isinstance(self.kernel, bool) or not isinstance(self.kernel, int) or self.kernel < 1:
            raise InvalidOptionError(f"Expected an odd kernel >= 1, but got {self.kernel!r}.")
        if self.kernel % 2 == 0:
            raise InvalidOptionError(
                f"Expected an odd kernel size so the output keeps its size, but got {self.kernel}. "
                f"Use {self.kernel + 1}."
            )
        if not (float(self.sigma) > 0):
            raise InvalidOptionError(f"Expected sigma > 0, but got {self.sigma!r}.")
        object.__setattr__(
            self, "padding", look_up_option(self.padding, SmoothingPadding, name="padding")
        )

    def weights(self, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
        """The normalised 1-D kernel, shape ``[kernel]``."""
        half = (self.kernel - 1) / 2
        x = torch.linspace(-half, half, self.kernel, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / float(self.sigma)) ** 2)
        return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian(
    kernel: int = 9, sigma: float = 3.0, *, padding: str | SmoothingPadding = "reflect"
) -> GaussianSmoothing:
    """Gaussian smoothing spec for :func:`box_to_patch_distribution`.

    Args:
        kernel: Odd kernel size in patches (authors: 9).
        sigma: Standard deviation in patches (authors: 3).
        padding: ``"reflect"`` (default, as torchvision's ``GaussianBlur``) or ``"zeros"``.

    Returns:
        The spec.

    Examples:
        >>> gaussian()
        GaussianSmoothing(kernel=9, sigma=3.0, padding=<SmoothingPadding.REFLECT: 'reflect'>)
    """
    return GaussianSmoothing(
        kernel=kernel,
        sigma=sigma,
        padding=look_up_option(padding, SmoothingPadding, name="padding"),
    )


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return (int(value), int(value))
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value
        )
    ):
        return (int(value[0]), int(value[1]))
    raise InvalidOptionError(
        f"Expected {name} as a positive int or (rows, cols) / (height, width), but got {value!r}."
    )


def _input_hw(input_size: Any) -> tuple[int, int]:
    if isinstance(input_size, Preprocess):
        fixed = input_size.fixed_output_size
        if fixed is None:
            raise InvalidOptionError(
                "This Preprocess has no fixed output size (shortest-edge resize without a crop); "
                "pass input_size=(height, width) of the model input instead."
            )
        return fixed
    return _pair(input_size, "input_size")


def _axis_overlap(lo: torch.Tensor, hi: torch.Tensor, n: int, step: float) -> torch.Tensor:
    """[N, n]: length of [lo, hi] inside each cell [j * step, (j + 1) * step], in cells."""
    edges = torch.arange(n + 1, dtype=lo.dtype, device=lo.device) * step
    left = torch.maximum(lo[:, None], edges[None, :-1])
    right = torch.minimum(hi[:, None], edges[None, 1:])
    return (right - left).clamp(min=0) / step


def _blur(maps: torch.Tensor, smoothing: GaussianSmoothing) -> torch.Tensor:
    """Separable same-size blur of ``[N, R, C]`` maps."""
    k = smoothing.weights(maps.dtype, maps.device)
    pad = smoothing.kernel // 2
    x = maps[:, None]
    if pad:
        if smoothing.padding is SmoothingPadding.REFLECT:
            if min(maps.shape[-2:]) <= pad:
                raise InvalidOptionError(
                    f"Reflect padding of {pad} needs a grid larger than {pad} on each side, but the "
                    f"grid is {tuple(maps.shape[-2:])}. Use padding='zeros' or a smaller kernel."
                )
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        else:
            x = F.pad(x, (pad, pad, pad, pad))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def box_to_patch_distribution(
    boxes: Any,
    grid: int | tuple[int, int] = (24, 24),
    *,
    input_size: int | tuple[int, int] | Preprocess = 336,
    smoothing: GaussianSmoothing | None = None,
    eps: float = 1e-12,
) -> Any:
    """Boxes in model-input pixels -> distributions over the patch tokens.

    Entry ``[n, r * cols + c]`` is proportional to the area of box ``n`` inside patch
    ``(r, c)`` divided by the patch area (exact, fractional at the box edges), after
    the optional blur. Each row sums to 1. A box with no area on the grid (for
    example one the centre crop removed, see :class:`~medcurric.geometry.MappedBoxes`)
    has **no target**: its row is all zeros, never NaN; a loss should skip it.

    Args:
        boxes: ``[N, 4]`` boxes ``(x1, y1, x2, y2)`` in model-input pixels (numpy,
            torch, lists). Parts outside the input are ignored.
        grid: ``(rows, cols)`` of the patch grid, or one int for a square grid.
        input_size: Model input ``(height, width)``, one int for a square, or a
            :class:`~medcurric.geometry.Preprocess` with a fixed output size.
        smoothing: ``None`` or :func:`gaussian` (authors: ``gaussian(9, 3)``).
        eps: Rows whose total coverage (in patches) is ``<= eps`` count as empty.

    Returns:
        ``[N, rows * cols]`` float rows summing to 1 (or 0), row-major like the
        model's image tokens. Torch in gives torch out on the same device (float64
        stays float64, everything else float32); numpy/lists give float64 numpy.

    Raises:
        ShapeError: Boxes are not ``[N, 4]``.
        InvalidBoxError: Boxes are not finite or are inverted.
        InvalidOptionError: Bad grid, input size or smoothing.

    Shape:
        - boxes: ``[N, 4]``
        - output: ``[N, rows * cols]``

    Examples:
        >>> p = box_to_patch_distribution([[0, 0, 21, 14]], grid=(24, 24), input_size=336)
        >>> p.shape, p[0, :3].tolist(), p.sum().item()
        ((1, 576), [0.6666666666666666, 0.3333333333333333, 0.0], 1.0)
        >>> blurred = box_to_patch_distribution([[0, 0, 21, 14]], smoothing=gaussian(9, 3))
        >>> round(float(blurred.sum()), 6), bool((blurred > 0).sum() > 2)
        (1.0, True)
    """
    if smoothing is not None and not isinstance(smoothing, GaussianSmoothing):
        raise WrongTypeError(
            f"Expected smoothing=None or gaussian(kernel, sigma), but got {type(smoothing).__name__}."
        )
    rows, cols = _pair(grid, "grid")
    height, width = _input_hw(input_size)
    t, kind, _ = _as_boxes(boxes)
    if kind == "torch" and t.dtype != torch.float64:
        t = t.to(torch.float32)
    if t.ndim != 2:  # pragma: no cover - _as_boxes guarantees it
        raise ShapeError(f"Expected boxes [N, 4], but got {tuple(t.shape)}.")
    n = t.shape[0]
    if n == 0:
        out = t.new_zeros((0, rows * cols))
        return out.numpy() if kind == "numpy" else out
    oy = _axis_overlap(t[:, 1], t[:, 3], rows, height / rows)  # [N, rows]
    ox = _axis_overlap(t[:, 0], t[:, 2], cols, width / cols)  # [N, cols]
    cover = oy[:, :, None] * ox[:, None, :]  # [N, rows, cols], patch fractions
    total = cover.sum(dim=(1, 2))
    if smoothing is not None:
        cover = _blur(cover, smoothing)
    flat = cover.reshape(n, rows * cols)
    sums = flat.sum(dim=1, keepdim=True)
    keep = (total > eps)[:, None] & (sums > 0)
    out = torch.where(keep, flat / torch.where(keep, sums, torch.ones_like(sums)), 0.0)
    return out.numpy() if kind == "numpy" else out
