"""The ``medcurric`` command line: one thin sub-command per stage of the data flow.

Each sub-command is a module of this package (``medcurric.cli.match``,
``medcurric.cli.seeds``, ...) exposing ``add_arguments(parser)`` and
``run(args) -> int``; it only parses options and calls the library's public
functions. This module dispatches, and imports a sub-command's module when the
parser is built. A command whose module is not installed is left out.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from medcurric import __version__
from medcurric.errors import MedcurricError

__all__ = ["COMMANDS", "build_parser", "main"]

#: name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "match": ("medcurric.cli.match", "match lesion boxes to host organs and print a table"),
    "seeds": ("medcurric.cli.seeds", "detections + organ masks -> factual seeds JSONL"),
    "generate": ("medcurric.cli.generate", "factual seeds -> QA + chain-of-thought samples JSONL"),
    "evaluate": ("medcurric.cli.evaluate", "score VQA answers, reports and grounding"),
    "review": ("medcurric.cli.review", "write a static HTML review report of generated samples"),
    "export": ("medcurric.cli.export", "accepted samples -> LLaVA/ShareGPT JSON, Parquet, datasets per stage"),
    "audit": ("medcurric.cli.audit", "segmentation-error sensitivity of the organ matching"),
    "demo": ("medcurric.cli.demo", "run the pipeline on the bundled sample"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default in ``--help`` unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text.lower()
            and not _is_unset(default)
            and not isinstance(action, argparse._VersionAction)
        ):
            shown = " ".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
            text += f" (default: {str(shown).replace('%', '%%')})"
        return text


def _is_unset(default: object) -> bool:
    """Defaults not worth showing: off flags, no value, empty text or lists (``0`` is shown)."""
    if default is None or default is False or default is argparse.SUPPRESS:
        return True
    return isinstance(default, (str, list, tuple)) and len(default) == 0


def _available() -> dict[str, tuple[str, str]]:
    return {n: v for n, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="medcurric",
        formatter_class=_HelpFormatter,
        description="Anatomically grounded VQA + CoT data and curriculum training for medical VLMs.",
    )
    parser.add_argument("--version", action="version", version=f"medcurric {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except MedcurricError as exc:
        print(f"medcurric {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
