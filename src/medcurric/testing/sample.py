"""The bundled sample: the phantom run through matching, seeds and template CoT generation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcurric.cot.records import CoTSample

__all__ = ["BundledSample", "bundled_sample"]


@dataclass
class BundledSample:
    """The bundled sample: the phantom run through matching, seeds and template CoT generation.

    Attributes:
        phantom: The :class:`~medcurric.testing.Phantom`.
        records: Key-slice lesion records whose ``image`` names the slice (``phantom/<id>.png``).
        matches: Host-organ matches, in ``records`` order.
        seeds: Factual seeds, in ``records`` order.
        samples: Accepted CoT samples.
        rejects: Rejected CoT samples.
        images: ``image name -> uint8 [H, W, 3]`` soft-tissue-windowed key slice.
        slices: ``image name -> (int16 HU slice, uint8 label slice)``.
    """

    phantom: Any
    records: list[Any]
    matches: list[Any]
    seeds: list[Any]
    samples: list[CoTSample]
    rejects: list[CoTSample]
    images: dict[str, np.ndarray]
    slices: dict[str, tuple[np.ndarray, np.ndarray]]


def bundled_sample(seed: int = 0, shape: Sequence[int] = (32, 64, 64)) -> BundledSample:
    """Build the bundled sample: phantom -> matches -> seeds -> template-backend CoT samples.

    Args:
        seed: Phantom seed.
        shape: Phantom shape ``(D, H, W)`` (small by default, so it takes seconds).

    Returns:
        The :class:`BundledSample`.
    """
    from medcurric.anatomy import BoxOrganMatcher
    from medcurric.cot import CoTGenerator, TemplateBackend
    from medcurric.overlay import window_to_rgb
    from medcurric.seeds.pipeline import build_seeds
    from medcurric.testing.phantom import make_phantom

    ph = make_phantom(seed=seed, shape=shape)
    records = [dataclasses.replace(r, image=f"phantom/{r.id}.png") for r in ph.key_slice_lesions]
    label_map = ph.label_map()
    matcher = BoxOrganMatcher(ph.class_map, criterion="ioa", min_score=0.5, adjacent_mm=5.0)
    matches = matcher.match_records(records, label_map)
    seeds = build_seeds(records, label_map, matcher=matcher)
    height, width = int(ph.shape[1]), int(ph.shape[2])
    seeds = [dataclasses.replace(s, image_size=(width, height)) for s in seeds]
    generator = CoTGenerator(TemplateBackend(), vocabulary=ph.class_map)
    generated = list(generator.generate(seeds))
    images: dict[str, np.ndarray] = {}
    slices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in records:
        z = int(r.slice_index or 0)
        hu = np.ascontiguousarray(ph.hu[z])
        images[r.image] = np.asarray(window_to_rgb(hu.astype(np.float32), "soft_tissue"))
        slices[r.image] = (hu, np.ascontiguousarray(ph.labels[z]))
    return BundledSample(
        phantom=ph,
        records=records,
        matches=list(matches),
        seeds=seeds,
        samples=[s for s in generated if s.accepted],
        rejects=[s for s in generated if not s.accepted],
        images=images,
        slices=slices,
    )
