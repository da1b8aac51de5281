"""The per-format writers on hand-made rows: empty input, mixed image modes, what they return."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from medcurric.errors import DataFormatError
from medcurric.export import ExportRow, to_hf_dataset, to_llava_json, to_parquet, to_sharegpt_json

pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

ROW = ExportRow(
    id="s1", stage="hard", prompt="###Human: <image>\nIs it a cyst?###Assistant:", question="Is it a cyst?",
    target="Answer: yes", answer="yes", rationale=None, image="images/hard/s1.png", image_bytes=None,
    source_image="ct/1.png", question_type="closed", organ=None, lesion_type="cyst", box_norm=None, phrase=None,
)  # fmt: skip


def test_writers_return_what_they_write(tmp_path: Path) -> None:
    for writer in (to_llava_json, to_sharegpt_json):
        records = writer([ROW], tmp_path / f"{writer.__name__}.json")
        assert json.loads((tmp_path / f"{writer.__name__}.json").read_text()) == records
    table = to_parquet([ROW], tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
    assert table.to_pylist()[0]["organ"] is None and table.to_pylist()[0]["box_norm"] is None


def test_empty_rows_round_trip(tmp_path: Path) -> None:
    assert to_llava_json([]) == [] and to_sharegpt_json([]) == []
    assert to_parquet([], tmp_path / "e.parquet").num_rows == 0
    to_hf_dataset([], tmp_path / "hf")
    assert len(datasets.load_from_disk(str(tmp_path / "hf"))) == 0


def test_rows_mixing_embedded_and_referenced_images_are_refused(tmp_path: Path) -> None:
    embedded = dataclasses.replace(ROW, id="s2", image_bytes=b"\x89PNG")
    for writer in (lambda rows: to_parquet(rows, tmp_path / "m.parquet"), to_hf_dataset):
        with pytest.raises(DataFormatError, match="mix"):
            writer([ROW, embedded])
