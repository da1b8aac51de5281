"""Imports follow the data flow: a package imports only from the layers below it.

The rule is read from every ``import`` in ``src/medcurric`` (module level, inside
functions and under ``TYPE_CHECKING`` alike), so an import against the flow fails here
wherever it hides.
"""

from __future__ import annotations

import ast
from pathlib import Path

import medcurric

#: Layer of each top-level module or package; a higher layer may import a lower one.
LAYERS: dict[str, int] = {
    "errors": 0, "_options": 0, "_serialization": 0, "_jsonl": 0, "_paths": 0, "_optional": 0,
    "vocabulary": 0, "stage": 0, "templating": 0,
    "geometry": 1, "io": 1,
    "overlay": 2, "losses": 2, "attention": 2, "anatomy": 2, "segment": 2,
    "seeds": 3,
    "cot": 4,
    "curriculum": 5,
    "eval": 6, "review": 6, "export": 6, "distributed": 6,
    "training": 7, "integrations": 7,
    "testing": 8,
    "__init__": 9,  # the package's lazy exports
    "cli": 10, "__main__": 11,
}
#: Layer-0 modules may use one another (they form the base, without cycles among packages).
BASE = 0

ROOT = Path(medcurric.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "medcurric":  # a submodule, or a name of the package itself
                out += [
                    (node.lineno, f"medcurric.{a.name}" if _is_module(a.name) else "medcurric.__init__")
                    for a in node.names
                ]
            elif node.module.startswith("medcurric."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("medcurric.")]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use absolute medcurric imports")
    return out


def _is_module(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def _top(relative: Path) -> str:
    return relative.parts[0].removesuffix(".py")


def violations() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        here = _top(path.relative_to(ROOT))
        if here not in LAYERS:
            found.append(f"{path.relative_to(ROOT)}: top-level module {here!r} has no layer in LAYERS")
            continue
        for lineno, module in _imports(path):
            there = module.split(".")[1]
            if there == here:
                continue
            if there not in LAYERS:
                found.append(f"{path.relative_to(ROOT)}:{lineno}: imports unknown {module}")
            elif LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here] != BASE):
                found.append(
                    f"{path.relative_to(ROOT)}:{lineno}: {here} (layer {LAYERS[here]}) imports "
                    f"{module} (layer {LAYERS[there]}), against the data flow"
                )
    return found


def test_imports_follow_the_data_flow() -> None:
    assert violations() == []


def test_the_rule_catches_an_import_against_the_flow(tmp_path: Path) -> None:
    pkg = tmp_path / "medcurric"
    (pkg / "io").mkdir(parents=True)
    (pkg / "io" / "bad.py").write_text("def f():\n    from medcurric.cot import CoTSample\n")
    (pkg / "cot").mkdir()
    (pkg / "cot" / "good.py").write_text("from medcurric.io import LesionRecord\n")
    globals()["ROOT"] = pkg
    try:
        found = violations()
    finally:
        globals()["ROOT"] = Path(medcurric.__file__).parent
    assert len(found) == 1 and "io/bad.py:2" in found[0] and "against the data flow" in found[0]
