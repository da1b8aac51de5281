"""Run TotalSegmentator on a CT volume (optional: ``pip install 'medcurric[seg]'``).

The rest of medcurric never needs this: it reads TotalSegmentator's outputs from
disk (:func:`medcurric.io.read_totalsegmentator`). TotalSegmentator downloads its
weights on first use; medcurric never downloads anything, so the weights must
already be on disk, under ``$TOTALSEG_WEIGHTS_PATH`` or
``$TOTALSEG_HOME_DIR/nnunet/results`` (default ``~/.totalsegmentator/nnunet/results``),
the same places TotalSegmentator itself looks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from medcurric._optional import require
from medcurric.errors import MissingFileError, WrongTypeError
from medcurric.io.nifti import write_nifti
from medcurric.io.records import LabelMap, Volume
from medcurric.io.totalseg import read_totalsegmentator

__all__ = ["TotalSegmentatorSegmenter", "totalsegmentator_weights_dir"]

#: Environment variables TotalSegmentator reads its weights location from.
WEIGHTS_VARIABLES = ("TOTALSEG_WEIGHTS_PATH", "TOTALSEG_HOME_DIR")


def totalsegmentator_weights_dir(weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where TotalSegmentator's weights are expected.

    Args:
        weights_dir: An explicit folder; otherwise ``$TOTALSEG_WEIGHTS_PATH``, else
            ``$TOTALSEG_HOME_DIR/nnunet/results``, else ``~/.totalsegmentator/nnunet/results``.

    Returns:
        The folder (which may not exist).

    Examples:
        >>> totalsegmentator_weights_dir("/opt/ts").as_posix()
        '/opt/ts'
    """
    if weights_dir is not None:
        return Path(weights_dir)
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = os.environ.get("TOTALSEG_HOME_DIR")
    base = Path(home) if home else Path.home() / ".totalsegmentator"
    return base / "nnunet" / "results"


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.is_dir() and p.name.startswith("Dataset") for p in folder.iterdir()
    )


class TotalSegmentatorSegmenter:
    """Segment CT volumes with TotalSegmentator, when it and its weights are installed.

    Args:
        task: TotalSegmentator task (``"total"``: 117 classes).
        fast: Use the 3 mm model.
        device: ``"gpu"``, ``"cpu"`` or ``"mps"`` (passed to TotalSegmentator).
        weights_dir: Folder holding the weights (see :func:`totalsegmentator_weights_dir`).

    Raises:
        MissingDependencyError: When totalsegmentator is not installed (names the
            ``medcurric[seg]`` extra).
        MissingFileError: When no weights are found (names ``TOTALSEG_HOME_DIR`` and
            ``TOTALSEG_WEIGHTS_PATH``).

    Examples:
        >>> TotalSegmentatorSegmenter()  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        medcurric.errors.MissingDependencyError: `TotalSegmentatorSegmenter` needs totalsegmentator, ...
    """

    def __init__(
        self,
        task: str = "total",
        *,
        fast: bool = False,
        device: str = "gpu",
        weights_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._api = require("totalsegmentator.python_api", feature="TotalSegmentatorSegmenter")
        self.task = str(task)
        self.fast = bool(fast)
        self.device = str(device)
        self.weights_dir = totalsegmentator_weights_dir(weights_dir)
        if not _has_weights(self.weights_dir):
            raise MissingFileError(
                f"TotalSegmentator's weights were not found in '{self.weights_dir}' (expected "
                "'Dataset*' folders there). medcurric never downloads weights: copy them from a "
                "machine where `totalseg_download_weights -t "
                f"{self.task}` ran, and point TOTALSEG_HOME_DIR (weights under "
                "$TOTALSEG_HOME_DIR/nnunet/results) or TOTALSEG_WEIGHTS_PATH at them, or pass "
                "weights_dir=..."
            )

    def __repr__(self) -> str:
        return (
            f"TotalSegmentatorSegmenter(task={self.task!r}, fast={self.fast}, "
            f"device={self.device!r}, weights_dir='{self.weights_dir}')"
        )

    def segment(
        self, image: Volume | str | os.PathLike[str], output: str | os.PathLike[str] | None = None
    ) -> LabelMap:
        """Segment one CT volume and return its canonical label map.

        Args:
            image: A :class:`~medcurric.io.Volume` in HU (written to a temporary
                NIfTI with its affine) or a path to a NIfTI file.
            output: Where to keep the multilabel ``.nii.gz``; a temporary file by default.

        Returns:
            The label map, named from TotalSegmentator's header extension.
        """
        with tempfile.TemporaryDirectory(prefix="medcurric-ts-") as tmp:
            if isinstance(image, Volume):
                if image.ndim != 3:
                    raise WrongTypeError(f"Expected a 3D volume, but got shape {image.shape}.")
                src = Path(tmp) / "ct.nii.gz"
                write_nifti(image.array, src, affine=image.affine, spacing=image.spacing)
            elif isinstance(image, (str, os.PathLike)):
                src = Path(image)
                if not src.is_file():
                    raise MissingFileError(
                        f"Expected a CT NIfTI file at '{src}', but it does not exist."
                    )
            else:
                raise WrongTypeError(
                    f"Expected a Volume or a NIfTI path, but got {type(image).__name__}."
                )
            out = Path(output) if output is not None else Path(tmp) / "seg.nii.gz"
            env_before = os.environ.get("TOTALSEG_WEIGHTS_PATH")
            os.environ["TOTALSEG_WEIGHTS_PATH"] = str(self.weights_dir)
            try:
                kwargs: dict[str, Any] = {
                    "ml": True,
                    "task": self.task,
                    "fast": self.fast,
                    "device": self.device,
                    "quiet": True,
                }
                self._api.totalsegmentator(str(src), str(out), **kwargs)
            finally:
                if env_before is None:
                    os.environ.pop("TOTALSEG_WEIGHTS_PATH", None)
                else:
                    os.environ["TOTALSEG_WEIGHTS_PATH"] = env_before
            lm = read_totalsegmentator(out)
            lm.array = lm.array.copy()  # detach from the temporary file
            return lm
