"""The one ``{field}`` substitution used by seed sentences, generation prompts and stage prompts.

Rules, a strict subset of :meth:`str.format`:

- ``{name}`` with ``name`` a Python identifier is a field;
- ``{{`` and ``}}`` write literal braces;
- anything else in braces (``{a.b}``, ``{a[0]}``, ``{a!r}``, ``{a:>3}``, ``{0}``, ``{}``)
  and a lone ``{`` or ``}`` raise :class:`~medcurric.errors.TemplateError`;
- values are inserted verbatim in one pass over the template and never scanned again,
  so text from datasets or models (``"{organ.__class__}"``, ``"${x}"``) stays as it is.

For templates of plain fields, :func:`fill_template` equals ``template.format_map(fields)``
with every value converted by ``str``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from medcurric.errors import TemplateError

__all__ = ["fill_template", "template_fields"]

# Escapes first, then anything in braces, then a lone brace (leftmost match wins).
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _fields(template: str) -> list[tuple[re.Match[str], str | None]]:
    """Each token of ``template`` with its field name (``None`` for an escape); raise on bad syntax."""
    if not isinstance(template, str):
        raise TemplateError(f"Expected a template as text, but got {type(template).__name__}.")
    out: list[tuple[re.Match[str], str | None]] = []
    for m in _TOKEN.finditer(template):
        token, name = m.group(0), m.group(1)
        if token in ("{{", "}}"):
            out.append((m, None))
        elif name is None:
            raise TemplateError(
                f"Template has a single {token!r} at position {m.start()}: {template!r}. "
                f"Write {token * 2!r} for a literal brace."
            )
        elif not name.isidentifier():
            raise TemplateError(
                f"Template field {token} is not a plain name: only {{name}} fields are allowed "
                "(no attributes, indexes, conversions, format specs or positions). "
                "Write '{{' and '}}' for literal braces."
            )
        else:
            out.append((m, name))
    return out


def template_fields(template: str) -> tuple[str, ...]:
    """Return the field names of ``template`` in order of first use, checking its syntax.

    Raises:
        TemplateError: When the template has a field that is not a plain name, or a lone brace.

    Examples:
        >>> template_fields("{lesion} in the {organ}, {{literal}} {lesion}")
        ('lesion', 'organ')
    """
    return tuple(dict.fromkeys(name for _, name in _fields(template) if name is not None))


def fill_template(template: str, fields: Mapping[str, object]) -> str:
    """Replace the ``{name}`` fields of ``template`` by ``str(fields[name])``, in one pass.

    Args:
        template: Trusted text with ``{name}`` fields; ``{{`` / ``}}`` write literal braces.
        fields: Values by field name (extra names are ignored). Values are data: they are
            inserted verbatim and never interpreted as template syntax.

    Returns:
        The filled text.

    Raises:
        TemplateError: When the template is malformed (see :func:`template_fields`) or names
            a field that ``fields`` lacks.

    Examples:
        >>> fill_template("A {lesion} in the {organ} {{sic}}", {"lesion": "{organ}", "organ": "liver"})
        'A {organ} in the liver {sic}'
    """
    tokens = _fields(template)
    missing = sorted({name for _, name in tokens if name is not None and name not in fields})
    if missing:
        raise TemplateError(
            f"Template field(s) {', '.join('{' + n + '}' for n in missing)} have no value; "
            f"the values given are for {sorted(fields)}. Write '{{{{' and '}}}}' for literal braces."
        )
    out: list[str] = []
    pos = 0
    for m, name in tokens:
        out.append(template[pos : m.start()])
        out.append(m.group(0)[0] if name is None else str(fields[name]))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)
