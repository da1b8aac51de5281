"""Page rendering for the review report and the demo page: jinja2 templates with autoescape.

The templates live in ``medcurric/review/templates`` (package data). Every value a
template prints is escaped by jinja2's autoescape; data for the pages' script goes
through jinja2's ``tojson`` filter, which writes ``<``, ``>``, ``&`` and ``'`` as JSON
unicode escapes. No HTML is assembled from strings in Python.
"""

from __future__ import annotations

import base64
import functools
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
import numpy as np

__all__ = ["BOX_PATTERN", "environment", "highlight", "highlight_spans", "png_data_url", "render_page"]

# One number, ``12``, ``0.5`` or ``.5``, written so that a string of digits splits one way
# only: a failed match gives digits back one at a time instead of trying every split.
_NUMBER = r"-?(?:\d+(?:\.\d+)?|\.\d+)"

#: A normalised box cited in text: ``[0.1234, 0.5, 0.75, 0.9]``. Linear time on any text.
BOX_PATTERN = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUMBER] * 4) + r"\s*\]")


@functools.cache
def environment() -> jinja2.Environment:
    """The jinja2 environment of the package's page templates (autoescape on, undefined names raise)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medcurric.review", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_page(template: str, **context: Any) -> str:
    """Render one of the package's page templates with ``context``."""
    return environment().get_template(template).render(**context)


def highlight_spans(
    text: str, terms: Mapping[str, Iterable[str]], *, boxes: bool = True
) -> list[tuple[str, str | None]]:
    """Split ``text`` into pieces, each with the CSS class of the term it mentions (or ``None``).

    Matching is case-insensitive on word boundaries; longer terms win over
    shorter ones that overlap them. The pieces joined give ``text`` back.

    Args:
        text: Untrusted text (a rationale, a question...).
        terms: CSS class -> phrases to mark, e.g. ``{"organ": ["liver"], "lesion": ["cyst"]}``.
        boxes: Also mark cited boxes ``[x1, y1, x2, y2]`` with class ``box``.

    Returns:
        ``(piece, css class or None)`` in text order.

    Examples:
        >>> highlight_spans("A cyst in the liver", {"organ": ["liver"], "lesion": ["cyst"]})
        [('A ', None), ('cyst', 'lesion'), (' in the ', None), ('liver', 'organ'), ('', None)]
    """
    spans: list[tuple[int, int, str]] = []
    if boxes:
        spans.extend((m.start(), m.end(), "box") for m in BOX_PATTERN.finditer(text))
    phrases = sorted(
        {(p.strip(), cls) for cls, ps in terms.items() for p in ps if p and p.strip()},
        key=lambda pc: -len(pc[0]),
    )
    for phrase, cls in phrases:
        pattern = re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", re.IGNORECASE)
        spans.extend((m.start(), m.end(), cls) for m in pattern.finditer(text))
    chosen: list[tuple[int, int, str]] = []
    for start, end, cls in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
        if chosen and start < chosen[-1][1]:
            continue
        chosen.append((start, end, cls))
    out: list[tuple[str, str | None]] = []
    pos = 0
    for start, end, cls in chosen:
        out.append((text[pos:start], None))
        out.append((text[start:end], cls))
        pos = end
    out.append((text[pos:], None))
    return out


def highlight(text: str, terms: Mapping[str, Iterable[str]], *, boxes: bool = True) -> str:
    """Escape ``text`` and wrap mentions of the given terms in ``<mark class="...">`` (the pages' macro).

    Examples:
        >>> highlight("A <b>cyst</b> in the liver", {"organ": ["liver"], "lesion": ["cyst"]})
        'A &lt;b&gt;<mark class="lesion">cyst</mark>&lt;/b&gt; in the <mark class="organ">liver</mark>'
    """
    macros = environment().get_template("_macros.html.j2").module
    return str(macros.marked(highlight_spans(text, terms, boxes=boxes)))  # type: ignore[attr-defined]


def png_data_url(image: np.ndarray, *, max_side: int | None = None) -> str:
    """Encode an ``[H, W]`` or ``[H, W, 3]`` uint8 array as a PNG data URL (optionally downscaled)."""
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image))
    if max_side is not None and max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        pil = pil.resize(
            (max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
            Image.Resampling.BILINEAR,
        )
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
