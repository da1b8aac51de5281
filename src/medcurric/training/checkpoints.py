"""Checkpoint folders of the reference trainer: their names and how to find the newest."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["STATE_FILE", "STATE_VERSION", "latest_checkpoint"]

#: Name of the JSON file that holds the trainer's own state inside a checkpoint folder.
STATE_FILE = "trainer_state.json"
#: Version of the ``trainer_state.json`` layout.
STATE_VERSION = 1
_CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)")


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (``None`` if none)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for p in root.glob("checkpoint-*"):
        match = _CHECKPOINT_NAME.fullmatch(p.name)  # ASCII digits only: "checkpoint-²" is not one
        if match and (p / STATE_FILE).is_file():
            found.append((int(match.group(1)), p))
    return max(found)[1] if found else None
