"""Host-organ masks from label slices stored beside the images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from medcurric.errors import UnsafePathError
from medcurric.review import label_slice_masks
from medcurric.seeds import build_seeds
from medcurric.testing import make_phantom


def test_label_slice_masks_reads_npy_and_png_slices(tmp_path) -> None:
    ph = make_phantom()
    seeds = build_seeds(ph.key_slice_lesions, ph.label_map())
    liver = next(s for s in seeds if s.organ == "liver")
    nowhere = next(s for s in seeds if s.organ_label is None)
    plane = ph.labels[liver.slice_index]
    (tmp_path / "ct").mkdir()
    np.save(tmp_path / "ct" / "a.npy", plane)
    Image.fromarray(plane).save(tmp_path / "ct" / "b.png")
    masks = label_slice_masks(tmp_path)
    for image in ("ct/a.png", "ct/b.png"):
        got = masks(dataclasses.replace(liver, image=image))
        np.testing.assert_array_equal(got, plane == ph.class_map.label_of("liver"))
    assert masks(dataclasses.replace(nowhere, image="ct/a.png")) is None  # no host organ
    assert masks(dataclasses.replace(liver, image="ct/c.png")) is None  # no slice on disk
    with pytest.raises(UnsafePathError):
        masks(dataclasses.replace(liver, image="../../etc/passwd"))
