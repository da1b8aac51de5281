"""Paths taken from untrusted data must stay inside their root."""

from __future__ import annotations

import os
from pathlib import Path

from medcurric.errors import UnsafePathError

__all__ = ["safe_join"]


def safe_join(root: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path:
    """Join ``relative`` (from a dataset or a model) onto ``root`` and refuse escapes.

    Absolute paths, ``..`` components that leave ``root`` and symbolic links
    that resolve outside ``root`` are rejected.

    Args:
        root: The directory everything must stay under.
        relative: A path read from untrusted data.

    Returns:
        The resolved path, inside ``root``.

    Raises:
        UnsafePathError: When the path would leave ``root``.

    Examples:
        >>> safe_join("/data", "ct/001.png").as_posix()
        '/data/ct/001.png'
        >>> safe_join("/data", "../etc/passwd")
        Traceback (most recent call last):
        ...
        medcurric.errors.UnsafePathError: Path '../etc/passwd' leaves the dataset root '/data'; expected a path relative to the root.
    """
    rel = os.fspath(relative)
    if "\x00" in rel:
        raise UnsafePathError(f"Path {rel!r} contains a NUL byte.")
    root_path = Path(root).resolve()
    if os.path.isabs(rel) or (len(rel) > 1 and rel[1] == ":"):
        raise UnsafePathError(
            f"Path {rel!r} is absolute; expected a path relative to the dataset root '{root_path}'."
        )
    candidate = (root_path / rel).resolve()
    if candidate != root_path and root_path not in candidate.parents:
        raise UnsafePathError(
            f"Path {rel!r} leaves the dataset root '{root_path}'; expected a path relative to the root."
        )
    return candidate
