"""Public names never disappear by accident: ``__all__`` is pinned against checked-in lists.

Each file ``tests/public_api/<module>.txt`` lists one public name per line. Adding a
name means adding it there too; removing one is a deliberate, reviewed change.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

LISTS = sorted((Path(__file__).parent / "public_api").glob("*.txt"))


@pytest.mark.parametrize("listing", LISTS, ids=[p.stem for p in LISTS])
def test_all_matches_checked_in_list(listing: Path) -> None:
    module = importlib.import_module(listing.stem)
    expected = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    assert list(module.__all__) == sorted(module.__all__), f"{listing.stem}.__all__ is not sorted"
    assert sorted(module.__all__) == sorted(expected)
    for name in module.__all__:
        assert hasattr(module, name), f"{listing.stem}.{name} is listed but does not resolve"


def test_every_public_subpackage_is_pinned() -> None:
    import medcurric

    root = Path(medcurric.__file__).parent
    packages = {
        "medcurric." + p.parent.relative_to(root).as_posix().replace("/", ".")
        for p in root.rglob("__init__.py")
        if p.parent != root and not any(part.startswith("_") for part in p.parent.relative_to(root).parts)
    }
    pinned = {p.stem for p in LISTS}
    assert packages <= pinned, f"unpinned public packages: {sorted(packages - pinned)}"
