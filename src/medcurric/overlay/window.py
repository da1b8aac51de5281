"""CT/MR windowing, kept under its old name: the code lives in :mod:`medcurric.io.window`.

:func:`read_display_image` is :func:`medcurric.io.load_rgb` for a file with a window
that defaults to soft tissue; new code should call ``load_rgb`` directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medcurric.io.images import load_rgb
from medcurric.io.window import Window, WindowFormula, WindowPreset, apply_window, window_to_rgb

__all__ = ["Window", "WindowFormula", "WindowPreset", "apply_window", "read_display_image", "window_to_rgb"]


def read_display_image(path: Any, window: Any = "soft_tissue") -> np.ndarray:
    """Read an image file for display as ``[H, W, 3]`` uint8 RGB (same as :func:`medcurric.io.load_rgb`).

    16-bit greyscale PNGs are DeepLesion CT slices (``HU + 32768``) and go through
    ``window``; every other image is converted to RGB as it is.

    Args:
        path: The image file (already checked to be inside its root by the caller).
        window: Window for 16-bit CT slices (preset name, :class:`Window` or ``(low, high)``).

    Returns:
        The RGB image.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "slice.png"
        >>> Image.fromarray(np.array([[32768 - 1000, 32768 + 40]], np.uint16)).save(f)
        >>> read_display_image(f)[..., 0].tolist()
        [[0, 128]]
    """
    return load_rgb(path, window=window)
