"""The demo's summary page from plain data: links inside the output folder, every text escaped."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medcurric.errors import UnsafePathError
from medcurric.review import write_demo_page
from medcurric.seeds.records import FactualSeed

HOSTILE = "<script>alert('x')</script>\" onload=\"alert(1)\" <img src=x onerror=alert(2)> & 'q'"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _seed(**kw: object) -> FactualSeed:
    fields: dict = dict(id="x", text="t", lesion_type="cyst", organ="liver", organ_label=5, outcome="inside",
                        score=1.0, criterion="ioa", image="a.png", box=(0.0, 0.0, 1.0, 1.0))
    return FactualSeed(**{**fields, **kw})


def test_every_text_is_escaped_and_links_resolve(tmp_path: Path) -> None:
    (tmp_path / "a&b'c.txt").write_text("x")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "easy.png").write_bytes(b"")
    (tmp_path / "plot.png").write_bytes(b"")
    evaluation = {"vqa": {"note": HOSTILE, "recall": 0.5}}
    page_path = write_demo_page(
        tmp_path,
        outputs={HOSTILE: tmp_path / "a&b'c.txt", "stage renderings": "stages"},
        seeds=[_seed(id="s" + HOSTILE, text=HOSTILE, organ=None, outcome="unmatched")],
        stages=[{"stage": "easy", "image": "stages/easy.png", "prompt": HOSTILE, "target": "Answer: " + HOSTILE}],
        training={"steps": 3, "switch_steps": [2], "stage": "medium", "plot": tmp_path / "plot.png"},
        evaluation=evaluation,
        timings={"step" + HOSTILE: 1.25},
    )
    page = page_path.read_text()
    parser = _Tags()
    parser.feed(page)
    assert "<script" not in page and "<img src=x" not in page
    for tag, attrs in parser.tags:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
    text = "".join(parser.text)
    assert HOSTILE in text and "s" + HOSTILE in text and "Answer: " + HOSTILE in text
    assert f"step{HOSTILE} 1.2 s" in text or f"step{HOSTILE} 1.3 s" in text
    # The evaluation block is the JSON of the scores, as text.
    pre = [t for t in parser.text if t.lstrip().startswith("{")]
    assert [json.loads(t) for t in pre] == [evaluation]
    links = {a.get("href") or a.get("src") for t, a in parser.tags if t in ("a", "img")}
    assert links == {"a&b'c.txt", "stages/", "stages/easy.png", "plot.png"}
    for link in links:
        assert (tmp_path / str(link)).exists()
    assert "3 steps; stage switched after step(s) [2]; final stage medium." in text


def test_a_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="inside"):
        write_demo_page(tmp_path / "out", outputs={"x": tmp_path / "elsewhere.txt"})
    with pytest.raises(UnsafePathError):
        write_demo_page(tmp_path / "out", outputs={"x": "../../etc/passwd"})


def test_an_empty_demo_still_writes_a_page(tmp_path: Path) -> None:
    page = write_demo_page(tmp_path, outputs={}).read_text()
    assert "<h2>Training</h2>" not in page and "<h2>Evaluation</h2>" not in page and "<h2>Files</h2>" in page
