"""Every command documents itself: each option has help and ``--help`` shows its default."""

from __future__ import annotations

import argparse
import re

import pytest

from medcurric.cli import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _unset(default: object) -> bool:
    if default is None or default is False or default is argparse.SUPPRESS:
        return True
    return isinstance(default, (str, list, tuple)) and len(default) == 0


def _shown(default: object) -> str:
    if isinstance(default, (list, tuple)):
        return " ".join(str(v) for v in default)
    return str(default)


def _option_help(rendered: str, option: str) -> str:
    """The help text of ``option`` in a rendered ``--help``, whitespace collapsed."""
    lines = rendered.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+{re.escape(option)}\b", line))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if re.match(r"\s{2,}-", line) or not line.startswith(" ") or not line.strip():
            break
        block.append(line)
    return " ".join(" ".join(block).split())


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_option_has_help_and_its_default_is_shown(name):
    sub = _subparsers()[name]
    rendered = sub.format_help()
    checked = 0
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        if not action.option_strings:
            continue
        text = _option_help(rendered, action.option_strings[-1])
        checked += 1
        if not _unset(action.default):
            assert "default" in text.lower(), f"{name} {action.option_strings}: default not shown in {text!r}"
            if "(default: " in text and not re.search(r"\(default: [^)]*\bfor\b", text):
                assert f"(default: {_shown(action.default)})" in text, text
    assert checked


def test_shared_options_share_one_default():
    subs = _subparsers()
    seen: dict[str, dict[str, object]] = {}
    for name, sub in subs.items():
        for action in sub._actions:
            for option in action.option_strings:
                seen.setdefault(option, {})[name] = action.default
    # (--class-map differs on purpose for now: match takes a JSON file only, seeds and audit a spec)
    for option in ("--level", "--criterion", "--min-score", "--format", "--slice-order", "--seed"):
        defaults = {repr(v) for v in seen.get(option, {}).values()}
        assert len(defaults) <= 1, (option, seen[option])
    assert seen["--level"] == {"match": "organ", "seeds": "organ"}
    assert set(seen["--format"].values()) == {"auto"}
