"""CT/MR intensities to 8-bit RGB: windowing with named presets, DICOM and DeepLesion values.

:func:`medcurric.io.load_rgb` reads a stored image through these windows; ``medcurric.overlay``
re-exports the same names.

A window maps the intensity range ``[level - width / 2, level + width / 2]`` linearly
to ``[0, 1]`` (clipped), then to 0-255. The named presets are common radiology
values in Hounsfield units (as listed, for example, by Radiopaedia's "Windowing (CT)"
article and standard CT protocols); they are defaults to choose from, not truths:

=============  ======  ======
preset         width   level
=============  ======  ======
abdomen        400     50
soft_tissue    400     40
mediastinum    350     50
liver          150     30
lung           1500    -600
bone           1800    400
brain          80      40
=============  ======  ======

Windows also come from DICOM headers (``WindowCenter``/``WindowWidth``, see
:meth:`Window.from_dicom`) and from DeepLesion's ``DICOM_windows`` column
(``"low, high"``, see :meth:`Window.from_bounds`). DeepLesion PNGs store
``HU + 32768``: subtract 32768 first. Several windows can be stacked as the R, G
and B channels (for example lung / soft tissue / bone) with :func:`window_to_rgb`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcurric._options import StrEnum, look_up_option
from medcurric.errors import DataFormatError, InvalidOptionError, ShapeError, WrongTypeError

__all__ = ["DEFAULT_WINDOW", "Window", "WindowFormula", "WindowPreset", "apply_window", "window_to_rgb"]


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (no tensor exists before it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class WindowPreset(StrEnum):
    """Named CT windows (common radiology values, Hounsfield units)."""

    ABDOMEN = "abdomen"
    SOFT_TISSUE = "soft_tissue"
    MEDIASTINUM = "mediastinum"
    LIVER = "liver"
    LUNG = "lung"
    BONE = "bone"
    BRAIN = "brain"


class WindowFormula(StrEnum):
    """How a window maps intensities to ``[0, 1]``.

    * ``SIMPLE``: ``(x - (level - width / 2)) / width``, the usual deep-learning choice
      (DeepLesion's ``(x - low) / (high - low)``).
    * ``DICOM``: the DICOM linear VOI LUT (PS3.3 C.11.2.1.2.1),
      ``(x - (level - 0.5)) / (width - 1) + 0.5``; differs by under one grey level.
    """

    SIMPLE = "simple"
    DICOM = "dicom"


@dataclass(frozen=True)
class Window:
    """An intensity window: ``level`` (centre) and ``width``, in the image's units (HU for CT).

    Examples:
        >>> Window.preset("lung")
        Window(level=-600.0, width=1500.0)
        >>> Window.from_bounds("-175, 275")
        Window(level=50.0, width=450.0)
        >>> Window.preset("bone").bounds
        (-500.0, 1300.0)
    """

    level: float
    width: float

    def __post_init__(self) -> None:
        level, width = float(self.level), float(self.width)
        if not (np.isfinite(level) and np.isfinite(width)) or width <= 0:
            raise InvalidOptionError(
                f"Expected a finite level and a width > 0, but got level={self.level!r}, "
                f"width={self.width!r}."
            )
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "width", width)

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high) = (level - width / 2, level + width / 2)``."""
        return (self.level - self.width / 2, self.level + self.width / 2)

    @classmethod
    def preset(cls, name: str | WindowPreset) -> Window:
        """A named preset (see the module table).

        Args:
            name: Preset name, e.g. ``"lung"``; a typo answers "did you mean ...?".

        Returns:
            The window.
        """
        return _PRESETS[look_up_option(name, WindowPreset, name="window preset")]

    @classmethod
    def from_bounds(cls, low: float | str | Sequence[float], high: float | None = None) -> Window:
        """A window from its ``(low, high)`` limits, e.g. DeepLesion's ``DICOM_windows``.

        Args:
            low: Lower limit, a ``(low, high)`` pair, or a string ``"low, high"``.
            high: Upper limit when ``low`` is a number.

        Returns:
            The window.

        Raises:
            DataFormatError: A string that is not two numbers.
            InvalidOptionError: ``high <= low``.
        """
        if isinstance(low, str):
            parts = re.findall(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", low)
            if len(parts) != 2 or high is not None:
                raise DataFormatError(
                    f"Expected a window as 'low, high' (DeepLesion DICOM_windows), but got {low!r}."
                )
            lo, hi = float(parts[0]), float(parts[1])
        elif high is None:
            if not isinstance(low, Sequence) or len(low) != 2:
                raise WrongTypeError(f"Expected (low, high), but got {low!r}.")
            lo, hi = float(low[0]), float(low[1])
        else:
            lo, hi = float(low), float(high)  # type: ignore[arg-type]
        if not hi > lo:
            raise InvalidOptionError(f"Expected high > low, but got low={lo}, high={hi}.")
        return cls(level=(lo + hi) / 2, width=hi - lo)

    @classmethod
    def from_dicom(cls, dataset: Any, index: int = 0) -> Window:
        """The window stored in a DICOM header (``WindowCenter``, ``WindowWidth``).

        Args:
            dataset: A ``pydicom`` dataset (or anything with those two attributes).
            index: Which window when the header lists several.

        Returns:
            The window.

        Raises:
            DataFormatError: The header has no window.
        """
        center = getattr(dataset, "WindowCenter", None)
        width = getattr(dataset, "WindowWidth", None)
        if center is None or width is None:
            raise DataFormatError(
                "Expected WindowCenter and WindowWidth in the DICOM header, but they are missing. "
                "Use a preset instead, e.g. Window.preset('soft_tissue')."
            )

        def pick(v: Any) -> float:
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
                return float(v)
            if not len(v) > index:
                raise DataFormatError(
                    f"The header lists {len(v)} window(s); index {index} is out of range."
                )
            return float(v[index])

        return cls(level=pick(center), width=pick(width))


_PRESETS: dict[WindowPreset, Window] = {
    WindowPreset.ABDOMEN: Window(50, 400),
    WindowPreset.SOFT_TISSUE: Window(40, 400),
    WindowPreset.MEDIASTINUM: Window(50, 350),
    WindowPreset.LIVER: Window(30, 150),
    WindowPreset.LUNG: Window(-600, 1500),
    WindowPreset.BONE: Window(400, 1800),
    WindowPreset.BRAIN: Window(40, 80),
}

#: The window a CT slice is shown through when its record gives none: soft tissue (W400 L40).
DEFAULT_WINDOW: Window = _PRESETS[WindowPreset.SOFT_TISSUE]


def _as_window(value: Any) -> Window:
    if isinstance(value, Window):
        return value
    if isinstance(value, (str, WindowPreset)):
        return Window.preset(value)
    if isinstance(value, Sequence) and len(value) == 2:
        return Window.from_bounds(value)
    raise WrongTypeError(
        f"Expected a Window, a preset name or (low, high), but got {type(value).__name__}: {value!r}."
    )


def _unit(x: Any, window: Window, formula: WindowFormula) -> Any:
    """Window to [0, 1] floats (numpy float32/float64 or torch float)."""
    if formula is WindowFormula.DICOM and window.width > 1:
        y = (x - (window.level - 0.5)) / (window.width - 1) + 0.5
    else:
        y = (x - window.bounds[0]) / window.width
    return y.clip(0.0, 1.0) if isinstance(y, np.ndarray) else y.clamp(0.0, 1.0)


def _to_uint8(y: Any) -> Any:
    if isinstance(y, np.ndarray):
        return np.rint(y * 255.0).astype(np.uint8)
    torch = sys.modules["torch"]
    return torch.round(y * 255.0).to(torch.uint8)


def _float_input(image: Any) -> Any:
    if _is_tensor(image):
        return image if image.is_floating_point() else image.to(sys.modules["torch"].float32)
    if isinstance(image, np.ndarray):
        if image.dtype.kind not in "iufb":
            raise WrongTypeError(f"Expected a numeric image, but got dtype {image.dtype}.")
        return image.astype(np.float64 if image.dtype.itemsize >= 4 else np.float32)
    raise WrongTypeError(
        f"Expected a numpy array or torch tensor of intensities, but got {type(image).__name__}."
    )


def apply_window(
    image: Any, window: Window | str | Sequence[float], *, out: str = "uint8", formula: str = "simple"
) -> Any:
    """Window intensities (HU for CT) to 0-255 ``uint8`` or ``[0, 1]`` floats.

    Args:
        image: numpy array or torch tensor of intensities, any shape.
        window: A :class:`Window`, a preset name or ``(low, high)``.
        out: ``"uint8"`` (rounded) or ``"float"`` (``[0, 1]``).
        formula: ``"simple"`` or ``"dicom"`` (see :class:`WindowFormula`).

    Returns:
        Same type and shape (and device) as ``image``.

    Examples:
        >>> import numpy as np
        >>> apply_window(np.array([-1000, -160, 40, 240, 3000]), "soft_tissue").tolist()
        [0, 0, 128, 255, 255]
    """
    w = _as_window(window)
    f = look_up_option(formula, WindowFormula, name="formula")
    y = _unit(_float_input(image), w, f)
    if out == "uint8":
        return _to_uint8(y)
    if out == "float":
        return y
    raise InvalidOptionError(f"Expected out='uint8' or 'float', but got {out!r}.")


def window_to_rgb(
    image: Any,
    windows: Any = "soft_tissue",
    *,
    out: str = "uint8",
    formula: str = "simple",
) -> Any:
    """A CT/MR slice (or batch) to RGB: one window as grey, or three windows as R, G, B.

    Args:
        image: Intensities. numpy ``[H, W]``; torch ``[H, W]``, ``[B, H, W]`` or
            ``[B, 1, H, W]``.
        windows: One window (preset name, :class:`Window` or ``(low, high)``), or a
            sequence of three, e.g. ``("lung", "soft_tissue", "bone")``.
        out: ``"uint8"`` or ``"float"``.
        formula: ``"simple"`` or ``"dicom"``.

    Returns:
        numpy ``[H, W, 3]`` for numpy input; torch ``[3, H, W]`` or ``[B, 3, H, W]``
        (same device) for torch input.

    Raises:
        ShapeError: An unsupported shape.

    Examples:
        >>> import numpy as np
        >>> hu = np.array([[-600.0, 40.0]])
        >>> window_to_rgb(hu, ("lung", "soft_tissue", "bone")).tolist()
        [[[128, 0, 0], [236, 128, 76]]]
    """
    ws: list[Window]
    if isinstance(windows, (str, Window, WindowPreset)) or (
        isinstance(windows, Sequence)
        and len(windows) == 2
        and not isinstance(windows[0], str)
        and not isinstance(windows[0], Window)
    ):
        ws = [_as_window(windows)]
    elif isinstance(windows, Sequence) and len(windows) in (1, 3):
        ws = [_as_window(w) for w in windows]
    else:
        raise InvalidOptionError(f"Expected one window or three (R, G, B), but got {windows!r}.")
    f = look_up_option(formula, WindowFormula, name="formula")
    x = _float_input(image)
    if isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise ShapeError(f"Expected a numpy slice [H, W], but got shape {x.shape}.")
        chans = [_unit(x, w, f) for w in ws]
        y: Any = np.stack(chans * 3 if len(chans) == 1 else chans, axis=-1)
    else:
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim not in (2, 3):
            raise ShapeError(
                f"Expected a torch slice [H, W] or batch [B, H, W] / [B, 1, H, W], but got "
                f"shape {tuple(image.shape)}."
            )
        chans = [_unit(x, w, f) for w in ws]
        y = sys.modules["torch"].stack(chans * 3 if len(chans) == 1 else chans, dim=-3)
    if out == "uint8":
        return _to_uint8(y)
    if out == "float":
        return y
    raise InvalidOptionError(f"Expected out='uint8' or 'float', but got {out!r}.")
