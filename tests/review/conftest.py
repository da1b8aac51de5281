from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.cot.records import CoTSample, Verdict
from medcurric.seeds.records import FactualSeed

BOXES = {
    "s1": (20.0, 30.0, 60.0, 70.0),
    "s2": (80.0, 90.0, 110.0, 130.0),
    "s3": (10.0, 100.0, 40.0, 150.0),
}
ORGANS = {"s1": "liver", "s2": "kidney_left", "s3": None}


def _organ_mask(seed_id: str) -> np.ndarray:
    mask = np.zeros((160, 200), dtype=bool)
    x1, y1, x2, y2 = (int(v) for v in BOXES[seed_id])
    mask[max(0, y1 - 10) : y2 + 10, max(0, x1 - 10) : x2 + 10] = True
    return mask


@pytest.fixture
def review_data(tmp_path: Path) -> dict:
    root = tmp_path / "images"
    (root / "ct").mkdir(parents=True)
    rng = np.random.default_rng(0)
    seeds = []
    samples = []
    rejects = []
    for sid, box in BOXES.items():
        # a 16-bit DeepLesion-style slice: HU + 32768
        hu = rng.normal(40, 10, (160, 200)).astype(np.int32)
        Image.fromarray((hu + 32768).astype(np.uint16)).save(root / "ct" / f"{sid}.png")
        organ = ORGANS[sid]
        seeds.append(
            FactualSeed(
                id=sid,
                text=f"a cyst in the {organ or 'uncertain organ'}",
                lesion_type="cyst",
                organ=organ,
                organ_label=5 if organ else None,
                outcome="inside" if organ else "unmatched",
                score=0.9 if organ else 0.0,
                criterion="ioa",
                image=f"ct/{sid}.png",
                box=box,
                iou=0.05 if organ else None,
                ioa=0.9 if organ else None,
            )
        )
        for stage in ("easy", "medium", "hard"):
            ok = not (sid == "s2" and stage == "medium")
            verdicts = (
                Verdict("names_organ", ok, "" if ok else "rationale names the spleen"),
                Verdict("names_lesion", True, ""),
            )
            record = CoTSample(
                id=f"{sid}-{stage}",
                seed_id=sid,
                stage=stage,
                question_type="open",
                question="What is seen <b>here</b>?",
                rationale=f"The box [0.1000, 0.1875, 0.3000, 0.4375] shows a cyst in the {organ}.",
                answer="cyst",
                image=f"ct/{sid}.png",
                box=box,
                organ=organ,
                lesion_type="cyst",
                verdicts=verdicts,
                accepted=ok,
            )
            (samples if ok else rejects).append(record)
    return {
        "root": root,
        "seeds": seeds,
        "samples": samples,
        "rejects": rejects,
        "masks": lambda seed: _organ_mask(seed.id) if seed.organ else None,
    }


def _chromium() -> str | None:
    return (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, for one test module at a time.

    Playwright's sync API keeps an event loop marked as running in the main thread while
    it is open, so any later test calling ``asyncio.run`` would fail; module scope closes
    it when the browser tests are done.
    """
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI must run the browser tests: tools/ensure_system_deps.sh installs chromium"
            )
        pytest.skip("headless Chromium not installed (tox installs Debian's chromium as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=exe,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()
