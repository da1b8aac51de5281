"""Untrusted ids and image names never name a path outside the export; bad input says what came."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from medcurric.errors import DataFormatError, InvalidOptionError, UnsafePathError, WrongTypeError
from medcurric.export import export_rows, export_samples, image_path


@pytest.mark.parametrize("hostile", ["../../evil", "../easy-escape", "/tmp/abs", "a/../../b"])
def test_a_hostile_id_is_refused_before_anything_is_written(on_disk, tmp_path: Path, hostile: str) -> None:
    out = tmp_path / "deep" / "out"
    bad = dataclasses.replace(on_disk.samples[0], id=hostile)
    with pytest.raises(UnsafePathError):
        export_samples([bad], out, formats=["llava"], stages=[bad.stage], image_root=on_disk.image_root)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize("blank", ["", ".", "..", "a\\..\\..\\b"])
def test_an_id_that_is_no_file_name_is_refused(tmp_path: Path, blank: str) -> None:
    with pytest.raises((DataFormatError, UnsafePathError), match=r"id|leaves"):
        image_path(tmp_path, "easy", blank)


def test_a_symlinked_images_folder_leading_outside_is_refused(on_disk, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "easy").symlink_to(outside)
    sample = next(s for s in on_disk.samples if s.stage == "easy")
    with pytest.raises(UnsafePathError):
        export_rows([sample], out, stage="easy", image_root=on_disk.image_root)
    assert not list(outside.iterdir())


def test_a_hostile_image_name_is_refused(on_disk, tmp_path: Path) -> None:
    bad = dataclasses.replace(on_disk.samples[0], image="../../../etc/passwd")
    with pytest.raises(UnsafePathError, match="leaves"):
        export_rows([bad], tmp_path, stage=bad.stage, image_root=on_disk.image_root)


def test_duplicate_ids_are_refused(on_disk, tmp_path: Path) -> None:
    sample = on_disk.samples[0]
    with pytest.raises(DataFormatError, match="unique"):
        export_rows([sample, sample], tmp_path, stage=sample.stage, image_root=on_disk.image_root)


def test_rejected_rows_are_dropped_and_dicts_are_read(on_disk, tmp_path: Path) -> None:
    stage = on_disk.rejects[0].stage
    mine = [s for s in on_disk.samples if s.stage == stage][:2]
    rows = export_rows(
        [*(s.to_dict() for s in mine), on_disk.rejects[0]], tmp_path, stage=stage, image_root=on_disk.image_root,
    )  # fmt: skip
    assert [r.id for r in rows] == [s.id for s in mine]
    assert all(r.image_bytes is None for r in rows)  # referenced by default


def test_bad_options_and_items_say_what_came(on_disk, tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="llava"):
        export_samples([], tmp_path, formats=["lava"])
    with pytest.raises(InvalidOptionError, match="embed"):
        export_samples([], tmp_path, images="inline")
    with pytest.raises(WrongTypeError, match="int"):
        export_rows([3], tmp_path, stage="easy")  # type: ignore[list-item]
