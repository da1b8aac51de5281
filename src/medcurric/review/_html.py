"""HTML helpers: every piece of untrusted text passes through :func:`esc` or :func:`script_json`."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["BOX_PATTERN", "esc", "highlight", "png_data_url", "script_json"]

#: A normalised box cited in text: ``[0.1234, 0.5, 0.75, 0.9]``.
BOX_PATTERN = re.compile(
    r"\[\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+\s*,\s*-?\d*\.?\d+\s*\]"
)


def esc(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute.

    Examples:
        >>> esc('<script>alert("x")</script>')
        '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    """
    return html.escape("" if value is None else str(value), quote=True)


def script_json(obj: Any) -> str:
    r"""Serialise ``obj`` for a ``<script type="application/json">`` block.

    ``<``, ``>`` and ``&`` are written as ``\\u`` escapes, so no text inside can close
    the script element or open a comment.

    Examples:
        >>> script_json({"t": "</script><!--"})
        '{"t": "\\u003c/script\\u003e\\u003c!--"}'
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def highlight(text: str, terms: Mapping[str, Iterable[str]], *, boxes: bool = True) -> str:
    """Escape ``text`` and wrap mentions of the given terms in ``<mark class="...">``.

    Matching is case-insensitive on word boundaries; longer terms win over
    shorter ones that overlap them. The text is never interpreted as markup.

    Args:
        text: Untrusted text (a rationale, a question...).
        terms: CSS class -> phrases to mark, e.g. ``{"organ": ["liver"], "lesion": ["cyst"]}``.
        boxes: Also mark cited boxes ``[x1, y1, x2, y2]`` with class ``box``.

    Returns:
        Safe HTML.

    Examples:
        >>> highlight("A <b>cyst</b> in the liver", {"organ": ["liver"], "lesion": ["cyst"]})
        'A &lt;b&gt;<mark class="lesion">cyst</mark>&lt;/b&gt; in the <mark class="organ">liver</mark>'
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
    out: list[str] = []
    pos = 0
    for start, end, cls in chosen:
        out.append(esc(text[pos:start]))
        out.append(f'<mark class="{esc(cls)}">{esc(text[start:end])}</mark>')
        pos = end
    out.append(esc(text[pos:]))
    return "".join(out)


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
