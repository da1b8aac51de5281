"""Easy-stage visual prompts (VIP-LLaVA style) and CT/MR windowing to RGB.

:class:`StageOverlay` draws a rectangle, ellipse, arrow, point, contour, triangle
or scribble around a lesion box, alpha-blended in VIP-LLaVA's colours, on numpy,
PIL or torch images (single or batched, CPU or CUDA), and returns the phrase the
prompt text should use ("within the red rectangle"). Presets
(:func:`style_preset`) give ViP-LLaVA's own prompt distribution
(:meth:`OverlayStyle.vip_llava`, :meth:`RandomStyle.vip_llava`) or medcurric's
prompts drawn around the box (:meth:`OverlayStyle.medcurric`). :func:`window_to_rgb`
turns CT/MR intensities into the RGB images those prompts are drawn on.
"""

from medcurric.overlay.draw import DrawBackend, OverlayResult, StageOverlay, draw_overlay
from medcurric.overlay.style import (
    COLORS,
    Color,
    Convention,
    OverlayStyle,
    RandomStyle,
    Shape,
    StylePreset,
    style_preset,
)
from medcurric.overlay.window import (
    Window,
    WindowFormula,
    WindowPreset,
    apply_window,
    read_display_image,
    window_to_rgb,
)

__all__ = [
    "COLORS",
    "Color",
    "Convention",
    "DrawBackend",
    "OverlayResult",
    "OverlayStyle",
    "RandomStyle",
    "Shape",
    "StageOverlay",
    "StylePreset",
    "Window",
    "WindowFormula",
    "WindowPreset",
    "apply_window",
    "draw_overlay",
    "read_display_image",
    "style_preset",
    "window_to_rgb",
]
