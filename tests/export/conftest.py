"""The bundled sample written to disk as ``medcurric generate`` output, and exports of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from medcurric.cot.records import CoTSample
from medcurric.export import ExportSummary, export_samples
from medcurric.testing import bundled_sample


@dataclass
class OnDisk:
    samples: list[CoTSample]
    rejects: list[CoTSample]
    jsonl: Path
    image_root: Path


@pytest.fixture(scope="session")
def on_disk(tmp_path_factory: pytest.TempPathFactory) -> OnDisk:
    bundle = bundled_sample()
    root = tmp_path_factory.mktemp("bundled")
    image_root = root / "images"
    for name, pixels in bundle.images.items():
        path = image_root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    jsonl = root / "samples.jsonl"
    # accepted and rejected in one file: the export must drop the rejected ones itself (the
    # library's own template output has no rejects, so two are made here)
    rejects = [
        dataclasses.replace(s, id=f"rejected-{i}", accepted=False, reason="made up for the test")
        for i, s in enumerate(bundle.samples[:2])
    ]
    jsonl.write_text("".join(s.to_json() + "\n" for s in [*bundle.samples, *rejects]), encoding="utf-8")
    return OnDisk(bundle.samples, rejects, jsonl, image_root)


@pytest.fixture(scope="session")
def referenced(on_disk: OnDisk, tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    out = tmp_path_factory.mktemp("referenced") / "export"
    return export_samples(on_disk.jsonl, out, image_root=on_disk.image_root)


@pytest.fixture(scope="session")
def embedded(on_disk: OnDisk, tmp_path_factory: pytest.TempPathFactory) -> ExportSummary:
    out = tmp_path_factory.mktemp("embedded") / "export"
    return export_samples(on_disk.jsonl, out, image_root=on_disk.image_root, images="embed", formats=["parquet", "hf"])
