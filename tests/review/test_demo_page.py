"""The demo's summary page from plain data: links inside the output folder, every text escaped."""

from __future__ import annotations

import re
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
    evaluation = {"vqa": {HOSTILE: {"open_recall": 0.5}}, "held_out": {"lesions": [HOSTILE]}}
    page_path = write_demo_page(
        tmp_path,
        outputs={HOSTILE: tmp_path / "a&b'c.txt", "stage renderings": "stages"},
        seeds=[_seed(id="s" + HOSTILE, text=HOSTILE, organ=None, outcome="unmatched")],
        stages=[{"stage": "easy", "image": "stages/easy.png", "prompt": HOSTILE, "target": "Answer: " + HOSTILE}],
        training={"steps": 3, "switch_steps": [2], "stage": "medium", "plot": tmp_path / "plot.png"},
        evaluation=evaluation,
        heatmaps=[{"image": "plot.png", "id": HOSTILE, "question": HOSTILE, "organ": None, "mass": [0.1, 0.2]}],
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
    assert "<pre>{" not in page  # scores are tables, not a JSON dump
    assert "unmatched" in text and "None" not in text
    links = {a.get("href") or a.get("src") for t, a in parser.tags if t in ("a", "img")}
    assert links == {"a&b'c.txt", "stages/", "stages/easy.png", "plot.png"}
    for link in links:
        assert (tmp_path / str(link)).exists()
    assert "3 optimizer steps; the stage advanced after step 2; final stage medium." in text


def test_a_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError, match="inside"):
        write_demo_page(tmp_path / "out", outputs={"x": tmp_path / "elsewhere.txt"})
    with pytest.raises(UnsafePathError):
        write_demo_page(tmp_path / "out", outputs={"x": "../../etc/passwd"})


def test_an_empty_demo_still_writes_a_page(tmp_path: Path) -> None:
    page = write_demo_page(tmp_path, outputs={}).read_text()
    assert "<h2>Training</h2>" not in page and "<h2>Evaluation</h2>" not in page and "<h2>Files</h2>" in page


def _png(path: Path, size: tuple[int, int]) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return path


#: Scores shaped as ``medcurric demo`` writes them (evaluation.json).
EVALUATION = {
    "vqa": {
        "default": {"n_open": 10, "open_recall": 0.0, "open_f1": 0.0, "open_exact_match": 0.0, "n_closed": 10,
                    "closed_accuracy": 0.0, "answer_marker": "Answer:"},
        "llava-med": {"n_open": 10, "open_recall": 0.123456, "open_f1": None, "n_closed": 10,
                      "closed_accuracy": 0.5},
    },
    "grounding": {
        "before": {"n": 5, "mean_mass_in_box": 0.0031769216299333877, "pointing_accuracy": 0.0, "mean_iou": None},
        "after": {"n": 5, "mean_mass_in_box": 0.039512345, "pointing_accuracy": 0.8, "mean_iou": None},
    },
    "held_out": {"lesions": ["liver-large-key", "lung-lul-key"], "n": 5,
                 "attention_kl": {"before": 3.5213, "after": 0.85312}},
    "n_vqa": 20,
}


def _table(page: str, table_id: str) -> list[list[str]]:
    """The cell texts of one table's body rows."""
    body = re.search(rf'<table id="{table_id}".*?<tbody>(.*?)</tbody>', page, re.S)
    assert body is not None, table_id
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def test_scores_are_tables_rounded_to_three_digits(tmp_path: Path) -> None:
    page = write_demo_page(tmp_path, outputs={}, evaluation=EVALUATION).read_text()
    assert _table(page, "grounding") == [
        ["attention KL to the box target", "3.52", "0.853", "lower"],
        ["attention mass in the lesion box (patches weighted by their share inside it)", "0.00318", "0.0395",
         "higher"],
        ["pointing accuracy (attention peak inside the box)", "0", "0.8", "higher"],
    ]
    assert _table(page, "vqa") == [
        ["default", "10", "0", "0", "0", "10", "0"],
        ["llava-med", "10", "0.123", "\u2014", "\u2014", "10", "0.5"],
    ]
    assert "liver-large-key, lung-lul-key" in page


def _demo_page(root: Path) -> Path:
    """A demo page from fixed plain data, with images of the sizes the demo writes."""
    stages = [
        {"stage": st, "image": _png(root / "stages" / f"{st}.png", (384, 384)), "prompt": "Q " + "long " * 60,
         "target": "Answer: " + "x" * 400, "source_px": [128, 128]}
        for st in ("easy", "medium", "hard")
    ]
    stages[1]["attention_target"] = _png(root / "stages" / "medium-attention-target.png", (400, 250))
    heatmaps = [
        {"image": _png(root / "attention" / f"{k}.png", (990, 352)), "id": f"lesion-{k} (open question)",
         "question": "What is seen?", "organ": "liver" if k else None, "mass": [0.0015, 0.025]}
        for k in range(2)
    ]
    return write_demo_page(
        root, outputs={"stage renderings": root / "stages"},
        seeds=[_seed(id="fat-key", organ=None, outcome="unmatched", text="a lesion " * 40), _seed()],
        stages=stages, training={"steps": 100, "switch_steps": [6], "stage": "medium",
                                 "plot": _png(root / "curriculum.png", (700, 400))},
        evaluation=EVALUATION, heatmaps=heatmaps, colorbar=_png(root / "attention" / "colorbar.png", (660, 100)),
        timings={"train": 9.5},
    )


@pytest.mark.browser
def test_demo_page_in_headless_chromium(tmp_path: Path, browser) -> None:
    index = _demo_page(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    assert errors == []
    explanation = page.locator("#explanation")
    assert explanation.is_visible() and "not results" in explanation.inner_text()
    for table in ("#seeds", "#grounding", "#vqa"):
        assert page.locator(table).is_visible(), table
    assert page.locator("#seeds").inner_text().count("\u2014") == 1  # the unmatched lesion's organ
    assert page.locator(".colorbar img").is_visible()
    # Every figure has a visible caption, and every image loaded and is shown at least 256 px wide.
    figures = page.locator("figure")
    assert figures.count() == 3 + 1 + 1 + 1 + 2  # stages, attention target, plot, colour bar, heatmaps
    for i in range(figures.count()):
        caption = figures.nth(i).locator("figcaption")
        assert caption.is_visible() and caption.inner_text().strip()
    sizes = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.naturalWidth, e.getBoundingClientRect().width])"
    )
    assert len(sizes) == 8 and all(natural > 0 and shown >= 256 for natural, shown in sizes), sizes
    # Long prompts and seed sentences wrap: nothing runs off the page.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "demo-page.png"), full_page=True)
    page.close()
