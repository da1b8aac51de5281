"""Figures: attention heatmaps over the image, beside the true box."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcurric._optional import require
from medcurric.errors import ShapeError
from medcurric.eval.grounding import _as_maps, _check_box

__all__ = ["plot_attention"]


def _image_array(image: Any) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().to("cpu").numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first tensor
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ShapeError(
            f"Expected an image [H, W], [H, W, 3|4] or [3, H, W], but got shape {arr.shape}."
        )
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def plot_attention(
    image: Any,
    attention: Any,
    grid: Sequence[int] | int,
    box: Sequence[float] | None,
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    dpi: int = 100,
) -> Path:
    """Save a figure: the image with the true box, then each attention map over the image.

    Args:
        image: ``[H, W]``, ``[H, W, 3]`` / ``[H, W, 4]`` or ``[3, H, W]`` array, tensor or PIL image
            (any value range; it is rescaled to ``[0, 1]`` for display).
        attention: One map ``[P]`` / ``[gh, gw]`` or several ``[K, P]`` (e.g. per stage or layer).
        grid: ``(gh, gw)`` patch grid of the maps, covering the whole image.
        box: Normalised ``(x1, y1, x2, y2)`` true box, drawn on every panel, or ``None``.
        path: Output file (PNG or any format matplotlib writes); parent folders are created.
        titles: One title per attention map.
        alpha: Opacity of the heatmap.
        cmap: Matplotlib colour map of the heatmap.
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: When matplotlib is not installed.
        ShapeError: When the image or maps have unexpected shapes.

    Examples:
        >>> import numpy as np, pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "att.png"
        >>> box = (0.1, 0.1, 0.5, 0.5)
        >>> plot_attention(np.zeros((32, 32)), np.eye(4).ravel(), (4, 4), box, out).exists()
        True
    """
    require("matplotlib", feature="plot_attention")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = _image_array(image)
    maps, _, (gh, gw) = _as_maps(attention, grid)
    if titles is not None and len(titles) != maps.shape[0]:
        raise ShapeError(
            f"Expected {maps.shape[0]} titles (one per attention map), but got {len(titles)}."
        )
    b = None if box is None else _check_box(box)
    h, w = img.shape[:2]
    panels = 1 + maps.shape[0]
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4), squeeze=False)
    try:
        for k, ax in enumerate(axes[0]):
            ax.imshow(
                img, cmap="gray" if img.ndim == 2 else None, extent=(0, w, h, 0), vmin=0, vmax=1
            )
            if k == 0:
                ax.set_title("image + box")
            else:
                heat = maps[k - 1].reshape(gh, gw)
                total = heat.sum()
                heat = heat / total if total > 0 else heat
                shown = ax.imshow(
                    heat, cmap=cmap, alpha=alpha, extent=(0, w, h, 0), interpolation="bilinear"
                )
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
                ax.set_title(  # titles may be model text: drawn literally, never as mathtext or TeX
                    str(titles[k - 1]) if titles is not None else f"attention {k}",
                    fontsize=9,
                    parse_math=False,
                    usetex=False,
                )
            if b is not None:
                ax.add_patch(
                    Rectangle(
                        (b[0] * w, b[1] * h),
                        (b[2] - b[0]) * w,
                        (b[3] - b[1]) * h,
                        fill=False,
                        edgecolor="lime",
                        linewidth=1.5,
                    )
                )
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.axis("off")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    finally:
        plt.close(fig)
    return out
