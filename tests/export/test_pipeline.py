"""Exports read back with the readers other trainers use equal ``render()``: texts, pixels, no rejects."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.curriculum import render
from medcurric.errors import MissingDependencyError
from medcurric.export import ExportSummary, export_samples
from medcurric.stage import Stage

pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

STAGES = [s.value for s in Stage]


def _own(on_disk, stage: str) -> list:
    return [s for s in on_disk.samples if s.stage == stage]


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_format_carries_the_texts_render_produces(on_disk, referenced: ExportSummary, stage: str) -> None:
    out = referenced.out_dir
    expected = {s.id: render(s, stage, image_root=on_disk.image_root) for s in _own(on_disk, stage)}
    assert expected and referenced.counts[stage] == len(expected)

    llava = json.loads((out / f"llava_{stage}.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in llava] == list(expected)
    for record in llava:
        want = expected[record["id"]]
        human, gpt = record["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        # the templated prompt is "###Human: <image>\n{question}###Assistant:": same question text
        assert want.prompt == f"###Human: {human['value']}###Assistant:"
        assert gpt["value"] == want.target

    sharegpt = json.loads((out / f"sharegpt_{stage}.json").read_text(encoding="utf-8"))
    assert len(sharegpt) == len(expected)
    for record, want in zip(sharegpt, expected.values(), strict=True):
        user, assistant = record["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert user["content"] == "<image>\n" + want.question
        assert assistant["content"] == want.target
        assert record["images"] == [f"images/{stage}/{want.id}.png"]

    table = pq.read_table(out / "parquet" / f"{stage}.parquet").to_pylist()
    hf = datasets.load_from_disk(str(out / "hf"))[stage]
    assert [r["id"] for r in table] == list(hf["id"]) == list(expected)
    for row, hf_row in zip(table, hf, strict=True):
        want = expected[row["id"]]
        for got in (row, hf_row):
            assert (got["prompt"], got["question"], got["target"]) == (want.prompt, want.question, want.target)
            assert got["rationale"] == want.rationale and got["answer"] == want.answer
            assert got["stage"] == stage and got["image"] == f"images/{stage}/{want.id}.png"


def test_targets_follow_the_stage_convention(referenced: ExportSummary) -> None:
    for stage in STAGES:
        for record in json.loads((referenced.out_dir / f"llava_{stage}.json").read_text(encoding="utf-8")):
            target = record["conversations"][1]["value"]
            if stage == "hard":
                assert target.startswith("Answer: ") and "Reasoning:" not in target
            else:
                assert target.startswith("Reasoning: ") and "\n\nAnswer: " in target


@pytest.mark.parametrize("stage", STAGES)
def test_referenced_images_are_the_rendered_pixels(on_disk, referenced: ExportSummary, stage: str) -> None:
    for sample in _own(on_disk, stage):
        want = _pixels(render(sample, stage, image_root=on_disk.image_root).image)
        got = _pixels(Image.open(referenced.out_dir / "images" / stage / f"{sample.id}.png"))
        np.testing.assert_array_equal(got, want)
        if stage == "easy":  # the overlay is drawn: the Easy image is not the clean one
            clean = _pixels(render(sample, "hard", image_root=on_disk.image_root).image)
            assert not np.array_equal(got, clean)


@pytest.mark.parametrize("stage", STAGES)
def test_embedded_images_decode_to_the_referenced_pixels(
    on_disk, referenced: ExportSummary, embedded: ExportSummary, stage: str
) -> None:
    assert not (embedded.out_dir / "images").exists()  # nothing needs files
    table = pq.read_table(embedded.out_dir / "parquet" / f"{stage}.parquet").to_pylist()
    hf = datasets.load_from_disk(str(embedded.out_dir / "hf"))[stage]
    assert isinstance(hf.features["image"], datasets.Image)
    for row, hf_row in zip(table, hf, strict=True):
        assert row["image"]["path"] == f"images/{stage}/{row['id']}.png"
        reference = _pixels(Image.open(referenced.out_dir / row["image"]["path"]))
        np.testing.assert_array_equal(_pixels(Image.open(io.BytesIO(row["image"]["bytes"]))), reference)
        np.testing.assert_array_equal(_pixels(hf_row["image"]), reference)


def test_embedded_parquet_reads_as_a_datasets_image_column(embedded: ExportSummary, tmp_path: Path) -> None:
    """The embedded layout is the one ``datasets.Image`` decodes (an outside reader of the file)."""
    path = embedded.out_dir / "parquet" / "easy.parquet"
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path))
    loaded = loaded.cast_column("image", datasets.Image())
    mine = datasets.load_from_disk(str(embedded.out_dir / "hf"))["easy"]
    for a, b in zip(loaded, mine, strict=True):
        np.testing.assert_array_equal(_pixels(a["image"]), _pixels(b["image"]))


def test_rejected_samples_are_left_out(on_disk, referenced: ExportSummary) -> None:
    rejected = {s.id for s in on_disk.rejects}
    assert referenced.rejected == len(on_disk.rejects) > 0
    exported: set[str] = set()
    for stage in STAGES:
        exported |= {r["id"] for r in json.loads((referenced.out_dir / f"llava_{stage}.json").read_text())}
        exported |= set(pq.read_table(referenced.out_dir / "parquet" / f"{stage}.parquet")["id"].to_pylist())
    assert exported == {s.id for s in on_disk.samples}
    assert not exported & rejected
    files = {p.stem for p in (referenced.out_dir / "images").rglob("*.png")}
    assert not files & rejected


def test_llamafactory_dataset_info_names_the_sharegpt_files(referenced: ExportSummary) -> None:
    info = json.loads((referenced.out_dir / "dataset_info.json").read_text())
    assert {v["file_name"] for v in info.values()} == {f"sharegpt_{s}.json" for s in STAGES}
    for entry in info.values():
        assert entry["formatting"] == "sharegpt" and (referenced.out_dir / entry["file_name"]).is_file()
        assert entry["columns"] == {"messages": "messages", "images": "images"}


def test_all_samples_every_stage_renders_each_sample_for_each_stage(on_disk, tmp_path: Path) -> None:
    summary = export_samples(
        on_disk.samples[:4], tmp_path, formats=["llava"], stages=["easy", "hard"],
        image_root=on_disk.image_root, stage_pools=False,
    )  # fmt: skip
    assert summary.counts == {"easy": 4, "hard": 4}
    hard = json.loads((tmp_path / "llava_hard.json").read_text())
    for sample, record in zip(on_disk.samples[:4], hard, strict=True):
        assert record["conversations"][1]["value"] == "Answer: " + sample.answer


def test_a_missing_optional_dependency_names_the_extra(on_disk, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependencyError, match=r"medcurric\[export\]"):
        export_samples(on_disk.jsonl, tmp_path / "out", formats=["parquet"], image_root=on_disk.image_root)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_no_accepted_samples_give_empty_exports(on_disk, tmp_path: Path) -> None:
    summary = export_samples(on_disk.rejects, tmp_path, stages=["hard"], images="embed")
    assert summary.counts == {"hard": 0} and summary.rejected == len(on_disk.rejects)
    assert json.loads((tmp_path / "llava_hard.json").read_text()) == []
    assert json.loads((tmp_path / "sharegpt_hard.json").read_text()) == []
    assert pq.read_table(tmp_path / "parquet" / "hard.parquet").num_rows == 0
    assert len(datasets.load_from_disk(str(tmp_path / "hf"))["hard"]) == 0
