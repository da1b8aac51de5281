"""The review page on damaged images and TeX-like organ names: the run finishes, nothing is lost."""

from __future__ import annotations

import dataclasses
import html
import struct
import zlib

from PIL import Image

from medcurric.review import write_review


def _claim_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR chunk claiming another size (CRC fixed): a decompression bomb."""
    assert png[12:16] == b"IHDR"
    body = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png[8:12] + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


def test_an_unreadable_image_gets_a_card_saying_why(review_data, tmp_path) -> None:
    root = review_data["root"]
    s1 = root / "ct" / "s1.png"
    s1.write_bytes(s1.read_bytes()[:-200])  # truncated
    s2 = root / "ct" / "s2.png"
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10  # past Pillow's bomb guard
    s2.write_bytes(_claim_size(s2.read_bytes(), side, side))
    report = write_review(
        review_data["samples"],
        tmp_path / "out",
        rejects=review_data["rejects"],
        seeds=review_data["seeds"],
        image_root=root,
        sample_n=3,
    )
    page = html.unescape(report.index.read_text())
    assert report.num_samples == 8 and report.num_rejects == 1
    for sid in ("s1", "s2"):
        why = page.split(f"image ct/{sid}.png: image could not be read:")[1][:400]
        assert f"{sid}.png" in why, why
    assert "image ct/s3.png" not in page  # the readable one is shown


def test_tex_in_organ_names_is_drawn_literally(review_data, tmp_path) -> None:
    hostile = r"liver $\undefinedmacro{x}^$ $a$"
    seeds = [dataclasses.replace(s, organ=hostile) if s.organ else s for s in review_data["seeds"]]
    report = write_review(
        review_data["samples"],
        tmp_path / "out",
        seeds=seeds,
        image_root=review_data["root"],
        sample_n=3,
    )
    assert "data:image/png;base64," in report.summary.read_text()  # the score plot was drawn
