"""medcurric: components for medical VLMs that localise before they reason.

The public names below are imported lazily, so ``import medcurric`` stays cheap
and optional dependencies are only needed by the parts that use them.

Examples:
    >>> import medcurric
    >>> medcurric.box_iou([[0, 0, 4, 2]], [[0, 0, 2, 2]]).tolist()
    [[0.5]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcurric._optional import lazy_exports

__version__ = "0.1.0.dev0"

_EXPORTS: dict[str, str] = {
    "AttentionCapture": "medcurric.attention",
    "AttentionKLLoss": "medcurric.losses",
    "BoxOrganMatcher": "medcurric.anatomy",
    "ClassMap": "medcurric.vocabulary",
    "CoTGenerator": "medcurric.cot",
    "CoTSample": "medcurric.cot",
    "CurriculumCollator": "medcurric.curriculum",
    "CurriculumScheduler": "medcurric.curriculum",
    "FactualSeed": "medcurric.seeds",
    "LabelMap": "medcurric.io",
    "LesionRecord": "medcurric.io",
    "Location": "medcurric.anatomy",
    "MedcurricError": "medcurric.errors",
    "OrganMatch": "medcurric.anatomy",
    "Preprocess": "medcurric.geometry",
    "SeedBuilder": "medcurric.seeds",
    "Stage": "medcurric.stage",
    "StageOverlay": "medcurric.overlay",
    "attention_kl_loss": "medcurric.losses",
    "box_iou": "medcurric.geometry",
    "box_mask_overlap": "medcurric.geometry",
    "box_to_patch_distribution": "medcurric.geometry",
    "describe_location": "medcurric.anatomy",
    "map_boxes": "medcurric.geometry",
    "render": "medcurric.curriculum",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports("medcurric", _EXPORTS, globals())


if TYPE_CHECKING:  # pragma: no cover
    from medcurric.anatomy import BoxOrganMatcher, ClassMap, Location, OrganMatch, describe_location
    from medcurric.attention import AttentionCapture
    from medcurric.cot import CoTGenerator, CoTSample
    from medcurric.curriculum import CurriculumCollator, CurriculumScheduler, Stage, render
    from medcurric.errors import MedcurricError
    from medcurric.geometry import (
        Preprocess,
        box_iou,
        box_mask_overlap,
        box_to_patch_distribution,
        map_boxes,
    )
    from medcurric.io import LabelMap, LesionRecord
    from medcurric.losses import AttentionKLLoss, attention_kl_loss
    from medcurric.overlay import StageOverlay
    from medcurric.seeds import FactualSeed, SeedBuilder
