"""Checkpoint folders of the reference trainer: their names and how to find the newest."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["STATE_FILE", "STATE_VERSION", "checkpoint_step", "latest_checkpoint"]

#: Name of the JSON file that holds the trainer's own state inside a checkpoint folder.
STATE_FILE = "trainer_state.json"
#: Version of the ``trainer_state.json`` layout.
STATE_VERSION = 1
_CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)")


def checkpoint_step(name: str) -> int | None:
    """The ``<step>`` of a ``checkpoint-<step>`` folder name (ASCII digits only), else ``None``.

    Examples:
        >>> checkpoint_step("checkpoint-12"), checkpoint_step("checkpoint-²"), checkpoint_step("final")
        (12, None, None)
    """
    match = _CHECKPOINT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (``None`` if none)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for p in root.glob("checkpoint-*"):
        step = checkpoint_step(p.name)  # ASCII digits only: "checkpoint-²" is not one
        if step is not None and (p / STATE_FILE).is_file():
            found.append((step, p))
    return max(found)[1] if found else None
