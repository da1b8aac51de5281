"""Lazy imports of optional dependencies; errors name the pip extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

from medcurric.errors import MissingDependencyError

__all__ = ["EXTRAS", "is_available", "require"]

#: Which pip extra provides each optional top-level module.
EXTRAS: dict[str, str] = {
    "nibabel": "io",
    "pydicom": "io",
    "transformers": "vlm",
    "peft": "vlm",
    "accelerate": "vlm",
    "tokenizers": "vlm",
    "totalsegmentator": "seg",
    "aiohttp": "gen",
    "matplotlib": "viz",
    "lightning": "lightning",
    "pycocoevalcap": "eval",
    "pyarrow": "export",
    "datasets": "export",
    "ray": "ray",
}


def is_available(module: str) -> bool:
    """Return whether ``module`` can be imported, without importing it.

    Args:
        module: Dotted module name, for example ``"transformers"``.

    Returns:
        ``True`` when the module is installed.

    Examples:
        >>> is_available("numpy")
        True
        >>> is_available("surely_not_a_real_module_name")
        False
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, feature: str) -> ModuleType:
    """Import an optional dependency or raise an error naming the extra.

    Args:
        module: Dotted module name to import.
        feature: What needs it, used in the error message (e.g. ``"TotalSegmentatorSegmenter"``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: When the module is not installed.

    Examples:
        >>> require("numpy", feature="doctest").__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'medcurric[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(
            f"`{feature}` needs {top}, which is not installed: {hint}"
        ) from exc


def lazy_exports(
    module: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` that import each exported name on first use.

    Args:
        module: The package's dotted name (for the error message).
        exports: Public name -> the module that defines it.
        namespace: The package's ``globals()``; a name is cached there once imported.
    """

    def __getattr__(name: str) -> Any:
        source = exports.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
