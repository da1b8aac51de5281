"""The review pages' highlighter on hostile text: linear time, same spans as a reference."""

from __future__ import annotations

import re
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.review._html import BOX_PATTERN, highlight_spans

_HOSTILE_TEXT = """
from medcurric.review._html import highlight_spans
n = 50_000
texts = [
    "[" + ",".join(["1" * n] * 3) + "," + "1" * n + "x",
    "[" + "1" + " " * n + "," + " " * n + "1" + " " * n + ",1," + "1" * n + "x",
    "[1,2,3," * n,
    "[" + ".5," * 3 + "-" * n,
]
for text in texts:
    pieces = highlight_spans(text, {"organ": ["liver"]})
    assert "".join(p for p, _ in pieces) == text and all(c is None for _, c in pieces)
print("highlighted all")
"""


def test_hostile_box_lookalikes_are_highlighted_in_linear_time() -> None:
    """Digit runs that made the old box pattern backtrack about L^5 (460 characters took
    over two minutes); the subprocess timeout is only a hang guard."""
    run = subprocess.run(
        [sys.executable, "-c", _HOSTILE_TEXT], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "highlighted all" in run.stdout


# The pattern the highlighter used to mark boxes with: the reference on short texts.
_REFERENCE = re.compile(r"\[\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+\s*\]")


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("[]0123456789.-, \nx"), max_size=40))
def test_box_pattern_finds_what_the_reference_finds(text: str) -> None:
    assert [m.span() for m in BOX_PATTERN.finditer(text)] == [
        m.span() for m in _REFERENCE.finditer(text)
    ]


def test_cited_boxes_are_marked() -> None:
    text = "Lesion at [0.12, .5, -0.75,0.9] and [1.,2,3,4]."
    boxes = [p for p, c in highlight_spans(text, {}) if c == "box"]
    assert boxes == ["[0.12, .5, -0.75,0.9]"]
