"""Check that a command's outputs can be written before it starts any work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from medcurric.errors import UnwritableOutputError

__all__ = ["ensure_writable"]


def ensure_writable(*paths: str | os.PathLike[str] | None, folder: bool = False) -> None:
    """Check that each output can be created and written, creating nothing.

    Run at the start of a command, so a read-only place or a parent path that is a
    regular file stops it with one line naming the path, before any work. The nearest
    folder that exists above each path gets a probe file (removed at once): permissions,
    read-only mounts and ``/proc`` all answer the same way, also for root.

    Args:
        paths: Output files (or folders when ``folder``); ``None`` entries are ignored.
        folder: The paths are output folders, not files.

    Raises:
        UnwritableOutputError: When a path cannot be created or written.
    """
    for item in paths:
        if item is None:
            continue
        path = Path(item)
        if path.exists() and path.is_dir() != folder:
            want, got = ("a folder", "a file") if folder else ("a file", "a folder")
            raise UnwritableOutputError(f"Cannot write '{path}': expected {want}, but it is {got}.")
        base = path if folder and path.exists() else _nearest_existing(path.parent)
        if not base.is_dir():
            raise UnwritableOutputError(f"Cannot write '{path}': '{base}' is a file, not a folder.")
        try:
            with tempfile.TemporaryFile(dir=base, prefix=".medcurric-probe-"):
                pass
            if path.exists() and not folder and not os.access(path, os.W_OK):
                raise PermissionError(13, "Permission denied", str(path))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise UnwritableOutputError(f"Cannot write '{path}': {why} ('{base}').") from exc


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (as a folder or anything else)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")
