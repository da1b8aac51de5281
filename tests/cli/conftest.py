"""Fixtures for the command tests: ``medcurric generate`` reuses the cot tests' fixtures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_cot_fixtures", Path(__file__).parents[1] / "cot" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_cot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cot)

# seeds with images on disk, prompt templates and a fake model reply, as in tests/cot
image_root = _cot.image_root
seeds = _cot.seeds
templates = _cot.templates
fake_reply = _cot.fake_reply
