"""The citation metadata is valid CFF 1.2 and says the same everywhere it appears."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import medcurric

ROOT = Path(__file__).resolve().parents[1]


def _bibtex(text: str) -> str:
    block = re.search(r"(@software\{medcurric,.*?\n\s*\}\s*\n\s*@article\{medclm2025,.*?\n\s*\})", text, re.S)
    assert block, "no BibTeX block"
    return "\n".join(line.strip() for line in block.group(1).splitlines())


def test_citation_cff_is_valid_against_the_schema() -> None:
    pytest.importorskip("cffconvert")
    from cffconvert.cli.create_citation import create_citation

    citation = create_citation(str(ROOT / "CITATION.cff"), None)
    citation.validate()  # raises on a schema error
    cff = (ROOT / "CITATION.cff").read_text()
    assert f"version: {medcurric.__version__}" in cff
    assert "2510.04477" in cff and "type: article" in cff  # the MedCLM paper as a reference


def test_readme_and_docs_give_the_same_bibtex() -> None:
    readme = _bibtex((ROOT / "README.md").read_text())
    docs = _bibtex((ROOT / "docs" / "citing.rst").read_text())
    assert readme == docs
    assert f"version = {{{medcurric.__version__}}}" in readme
    assert "arXiv:2510.04477" in readme
