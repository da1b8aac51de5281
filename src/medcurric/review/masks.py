"""Host-organ masks for the review report, from label slices stored beside the images."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medcurric._paths import safe_join
from medcurric.seeds.records import FactualSeed

__all__ = ["label_slice_masks"]


def label_slice_masks(root: str | os.PathLike[str]) -> Callable[[FactualSeed], np.ndarray | None]:
    """Host-organ masks from 2D label slices stored under ``root``, as :func:`write_review` takes them.

    For a seed on image ``ct/a.png`` the label slice is ``<root>/ct/a.npy`` or
    ``<root>/ct/a.png`` (organ label ids, aligned with the image); the mask is
    ``labels == seed.organ_label``. Each slice is read once; paths may not leave ``root``.

    Args:
        root: Folder of label slices mirroring the image paths.

    Returns:
        ``seed -> boolean mask``, or ``None`` when the seed has no host organ or no slice.
    """
    cache: dict[str, np.ndarray | None] = {}

    def provider(seed: FactualSeed) -> np.ndarray | None:
        if seed.organ_label is None:
            return None
        if seed.image not in cache:
            arr = None
            stem = Path(seed.image).with_suffix("")
            for suffix in (".npy", ".png"):
                path = safe_join(root, str(stem) + suffix)
                if path.is_file():
                    if suffix == ".npy":
                        arr = np.load(path, allow_pickle=False)
                    else:
                        from PIL import Image

                        with Image.open(path) as im:
                            arr = np.asarray(im)
                    break
            cache[seed.image] = arr
        labels = cache[seed.image]
        return None if labels is None else labels == seed.organ_label

    return provider
