"""Shared fixtures: device and dtype parametrisation, one CPU thread, offline hubs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(1)

_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every available device: CPU here, CUDA too where present."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["fp32", "fp64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Floating dtypes a kernel must support."""
    return request.param


@pytest.fixture
def rng():
    """A seeded numpy generator."""
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture
def run_python():
    """Run ``python -c SCRIPT ARGS...`` in a fresh process; returns the completed process.

    For hostile-input tests that set their own ``RLIMIT_AS`` or need a hang guard: the
    timeout bounds a hang, it is never a timing assertion.
    """
    import subprocess
    import sys

    def run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    return run
