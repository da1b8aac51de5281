"""Check that a command's outputs can be written before it starts any work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from medcurric.errors import UnwritableOutputError

__all__ = ["ensure_writable"]


def ensure_writable(*paths: str | os.PathLike[str] | None, folder: bool = False) -> None:
    """Create each output's parent folder and check a file can be written there.

    Run at the start of a command, so a read-only place or a parent path that is a
    regular file stops it with one line naming the path, before hours of work.

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
        place = path if folder else path.parent
        if not folder and path.is_dir():
            raise UnwritableOutputError(
                f"Cannot write '{path}': expected a file path, but it is a folder."
            )
        try:
            place.mkdir(parents=True, exist_ok=True)
            # a probe file: permissions, read-only mounts and /proc all answer the same way
            with tempfile.TemporaryFile(dir=place, prefix=".medcurric-probe-"):
                pass
            if not folder and path.exists() and not os.access(path, os.W_OK):
                raise PermissionError(13, "Permission denied", str(path))
        except OSError as exc:
            blocker = _first_file_above(path)
            why = (
                f"'{blocker}' is a file, not a folder"
                if blocker is not None
                else exc.strerror or type(exc).__name__
            )
            raise UnwritableOutputError(f"Cannot write '{path}': {why}.") from exc


def _first_file_above(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists as something other than a folder."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
