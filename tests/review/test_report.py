from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from medcurric.cot.records import Verdict
from medcurric.errors import DataFormatError
from medcurric.review import load_samples, review_sample_ids, write_review
from medcurric.review._html import highlight, render_page


def test_highlight_escapes_and_marks() -> None:
    html = highlight(
        "<img src=x onerror=alert(1)> a cyst in the Liver [0.1, 0.2, 0.3, 0.4]",
        {"organ": ["liver"], "lesion": ["cyst"]},
    )
    assert "<img" not in html
    assert '<mark class="organ">Liver</mark>' in html
    assert '<mark class="lesion">cyst</mark>' in html
    assert '<mark class="box">[0.1, 0.2, 0.3, 0.4]</mark>' in html


def test_script_data_cannot_close_the_script() -> None:
    evil = "</script><script>alert(1)</script><!--"
    page = render_page("base.html.j2", title="t", report_id="r", images={"x": evil})
    start = page.index('id="mc-images">') + len('id="mc-images">')
    text = page[start : page.index("</script>", start)]
    assert json.loads(text) == {"x": evil}
    assert page.count("<script") == 2


HOSTILE = "<script>alert('x')</script>\" onmouseover=\"alert(1)\" ' <img src=x onerror=alert(2)> &amp;"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def test_untrusted_text_and_names_stay_text(review_data, tmp_path) -> None:
    import dataclasses

    seeds = [dataclasses.replace(s, text=s.text + HOSTILE, organ=(s.organ and s.organ + HOSTILE),
                                 lesion_type="cyst" + HOSTILE) for s in review_data["seeds"]]
    samples = [
        dataclasses.replace(
            s, id=s.id + HOSTILE, seed_id=s.seed_id, question=HOSTILE, rationale=s.rationale + HOSTILE,
            answer=HOSTILE, verdicts=(*s.verdicts, Verdict("check" + HOSTILE, False, HOSTILE)),
            accepted=True,
        )
        for s in review_data["samples"]
    ]
    samples.append(dataclasses.replace(samples[0], id="bad-image", image="missing" + HOSTILE + ".png"))
    report = write_review(samples, tmp_path / "out", seeds=seeds, image_root=review_data["root"],
                          masks=review_data["masks"], sample_n=20, title="title" + HOSTILE)
    for page in (report.index.read_text(), report.summary.read_text()):
        parsed = _parse(page)
        names = {tag for tag, _ in parsed.tags}
        assert "img" in names
        assert [tag for tag, _ in parsed.tags].count("script") == 2  # the data block and the page's script
        for tag, attrs in parsed.tags:
            assert not any(a.startswith("on") for a in attrs), (tag, attrs)
            assert tag != "img" or "src" not in attrs  # images come only through data-img
        # The hostile text comes back whole, as text and in attribute values.
        assert HOSTILE in "".join(parsed.text)
        assert "<script>alert" not in page and "<img src=x" not in page
    index = _parse(report.index.read_text())
    rows = [a for t, a in index.tags if t == "tr" and "data-id" in a]
    assert len(rows) == 9 and all(a["data-id"].endswith(HOSTILE) or a["data-id"] == "bad-image" for a in rows)
    assert {a["data-organ"] for a in rows} >= {"liver" + HOSTILE, "unmatched"}
    options = {a["value"] for t, a in index.tags if t == "option"}
    assert "liver" + HOSTILE in options and "check" + HOSTILE in options  # filter values are not escaped twice
    radios = [a for t, a in index.tags if t == "input" and a.get("type") == "radio"]
    assert len(radios) == 18 and {a["name"] for a in radios} >= {"mark-s1-easy" + HOSTILE}
    marked = [a for t, a in index.tags if t == "mark"]
    assert {a["class"] for a in marked} == {"organ", "box"}  # the lesion type is hostile here: no mention


class _Cards(HTMLParser):
    """The ``alt`` texts of the images in each sample card, by card id."""

    def __init__(self) -> None:
        super().__init__()
        self.card: str | None = None
        self.alts: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and (a.get("id") or "").startswith("card-"):
            self.card = str(a["id"]).removeprefix("card-")
            self.alts[self.card] = []
        elif tag == "img" and self.card is not None:
            self.alts[self.card].append(str(a.get("alt")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.card = None


def test_cards_show_what_the_model_saw_in_their_stage(review_data, tmp_path) -> None:
    report = write_review(
        review_data["samples"], tmp_path / "out", rejects=review_data["rejects"], seeds=review_data["seeds"],
        image_root=review_data["root"], sample_n=0,
    )
    cards = _Cards()
    cards.feed(report.index.read_text())
    stages = {s.id: s.stage for s in review_data["samples"] + review_data["rejects"]}
    assert set(cards.alts) == set(stages)
    for card, alts in cards.alts.items():
        seen = {"easy": "Easy overlay", "medium": "Medium input", "hard": "Hard input"}[stages[card]]
        assert alts == [seen], card  # the overlay only where the model saw it


def test_review_draw_is_seeded_and_order_free() -> None:
    ids = [f"id{i}" for i in range(100)]
    a = review_sample_ids(ids, 10, seed=3)
    assert a == review_sample_ids(list(reversed(ids)), 10, seed=3)
    assert a != review_sample_ids(ids, 10, seed=4)
    assert len(set(a)) == 10 and set(a) <= set(ids)


def test_report_escapes_untrusted_text(review_data, tmp_path) -> None:
    report = write_review(
        review_data["samples"],
        tmp_path / "out",
        rejects=review_data["rejects"],
        seeds=review_data["seeds"],
        image_root=review_data["root"],
        sample_n=3,
    )
    html = report.index.read_text()
    assert "<b>here</b>" not in html and "&lt;b&gt;here&lt;/b&gt;" in html
    assert report.num_samples == 8 and report.num_rejects == 1
    assert len(report.review_ids) == 3
    assert report.summary.read_text().count('data-id="s3"') == 1  # the unmatched lesion is listed


def test_paths_leaving_the_root_are_refused(review_data, tmp_path) -> None:
    import dataclasses

    evil = dataclasses.replace(review_data["samples"][0], id="evil", image="../../etc/passwd")
    report = write_review([evil], tmp_path / "out", image_root=review_data["root"])
    html = report.index.read_text()
    assert "leads out of the image folder" in html
    # the page may be shared: it names the image folder, never its absolute path
    root = Path(review_data["root"]).resolve()
    assert str(root) not in html and root.name in html
    assert str(root) not in report.summary.read_text()


def test_duplicate_ids_are_an_error(review_data, tmp_path) -> None:
    s = review_data["samples"][0]
    with pytest.raises(DataFormatError, match="unique"):
        write_review([s, s], tmp_path / "o")


def test_rejects_file_with_extra_fields_loads(tmp_path) -> None:
    path = tmp_path / "rejects.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": "a",
                "seed_id": "s",
                "stage": "easy",
                "question": "q",
                "answer": "a",
                "reason": "names another organ",
            }
        )
        + "\n"
    )
    (sample,) = load_samples(path, accepted=False)
    assert sample.accepted is False
    assert (sample.reason or sample.extra["reason"]) == "names another organ"


@pytest.mark.browser
def test_report_in_headless_chromium(review_data, tmp_path, browser) -> None:
    report = write_review(
        review_data["samples"],
        tmp_path / "out",
        rejects=review_data["rejects"],
        seeds=review_data["seeds"],
        image_root=review_data["root"],
        masks=review_data["masks"],
        sample_n=4,
        seed=0,
    )
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.index.as_uri())
    page.wait_for_load_state("load")
    assert errors == []
    visible = "tr[data-id]:not(.hidden)"
    assert page.locator(visible).count() == 9
    page.select_option("#mc-filter-stage", "easy")
    assert page.locator(visible).count() == 3
    page.select_option("#mc-filter-stage", "")
    page.select_option("#mc-filter-status", "rejected")
    assert page.locator(visible).count() == 1
    assert page.locator(visible).get_attribute("data-id") == "s2-medium"
    page.select_option("#mc-filter-status", "")

    # marks: accept the first drawn sample, reject the second, export as JSONL
    first, second = report.review_ids[:2]
    page.check(f'.marks[data-id="{first}"] input[value="accept"]')
    page.check(f'.marks[data-id="{second}"] input[value="reject"]')
    page.fill(f'.marks[data-id="{second}"] textarea', "wrong organ")
    with page.expect_download() as info:
        page.click("#mc-export")
    lines = [json.loads(x) for x in open(info.value.path()).read().splitlines()]
    assert {(r["id"], r["decision"]) for r in lines} == {(first, "accept"), (second, "reject")}
    assert next(r for r in lines if r["id"] == second)["note"] == "wrong organ"

    # the image renders and the red box is drawn where it should be
    panel = page.locator("#card-s1-easy svg.panel")
    panel.scroll_into_view_if_needed()
    shot = tmp_path / "panel.png"
    panel.screenshot(path=str(shot))
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    h, w = img.shape[:2]
    red = (img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)
    ys, xs = np.nonzero(red)
    assert red.sum() > 50
    sx, sy = w / 200.0, h / 160.0
    x1, y1, x2, y2 = 20.0, 30.0, 60.0, 70.0
    assert abs(xs.min() - x1 * sx) <= 3 and abs(xs.max() - x2 * sx) <= 3
    assert abs(ys.min() - y1 * sy) <= 3 and abs(ys.max() - y2 * sy) <= 3
    gray = img[(img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2])]
    assert gray.size and gray.mean() > 20  # the CT image itself rendered, not a black box

    overlay_width = page.eval_on_selector(
        '#card-s1-easy img[alt="Easy overlay"]', "el => el.naturalWidth"
    )
    assert overlay_width == 200

    page.goto(report.summary.as_uri())
    page.wait_for_load_state("load")
    assert errors == []
    assert page.locator("#mc-checks tbody tr").count() == 2
    context.close()


def test_review_cli_writes_report(review_data, tmp_path, capsys) -> None:
    from medcurric._jsonl import JsonlWriter
    from medcurric.cli import main

    with JsonlWriter(tmp_path / "samples.jsonl") as w:
        w.write_many(review_data["samples"])
    with JsonlWriter(tmp_path / "rejects.jsonl") as w:
        w.write_many(review_data["rejects"])
    with JsonlWriter(tmp_path / "seeds.jsonl") as w:
        w.write_many(review_data["seeds"])
    labels = tmp_path / "labels" / "ct"
    labels.mkdir(parents=True)
    for seed in review_data["seeds"]:
        np.save(
            labels / f"{seed.id}.npy",
            review_data["masks"](seed).astype(np.uint8) * 5
            if seed.organ
            else np.zeros((160, 200), np.uint8),
        )
    code = main(
        [
            "review",
            "--samples",
            str(tmp_path / "samples.jsonl"),
            "--rejects",
            str(tmp_path / "rejects.jsonl"),
            "--seeds",
            str(tmp_path / "seeds.jsonl"),
            "--images",
            str(review_data["root"]),
            "--labels",
            str(tmp_path / "labels"),
            "--out",
            str(tmp_path / "report"),
            "--sample-n",
            "2",
        ]
    )
    assert code == 0
    assert "review report written to" in capsys.readouterr().out
    html = (tmp_path / "report" / "index.html").read_text()
    assert html.count('class="organ-contour"') >= 3  # s1's three stages have a liver contour
    assert 'alt="Easy overlay"' in html and "within the red rectangle" in html
