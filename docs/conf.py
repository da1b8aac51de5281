"""Sphinx configuration for medcurric."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

project = "medcurric"
author = "medcurric developers"
copyright = "2026, medcurric developers"

import medcurric  # noqa: E402

release = medcurric.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]
autosummary_generate = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False
intersphinx_mapping: dict[str, tuple[str, None]] = {}
html_theme = "furo"
html_title = "medcurric"
html_static_path: list[str] = ["_static"]
html_css_files = ["medcurric.css"]
exclude_patterns = ["_build"]
suppress_warnings = ["ref.python"]
doctest_global_setup = """
import numpy as np
import torch
torch.set_num_threads(1)
"""
doctest_test_doctest_blocks = ""
