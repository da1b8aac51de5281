"""Box and label-map geometry: conversions, IoU, box/mask overlap, patch grids, token layouts.

Conventions (see :doc:`/conventions`): 2D boxes ``[N, 4]`` xyxy pixels, 3D boxes
``[N, 6]`` ``(x1, y1, z1, x2, y2, z2)``; label maps ``[y, x]`` or ``[z, y, x]``;
a pixel is in a box iff its centre lies in the half-open box.
"""

from medcurric.geometry.boxes import (
    BoxFormat,
    box_area,
    box_convert,
    box_iou,
    boxes_to_masks,
    clip_boxes,
    masks_to_boxes,
    validate_boxes,
)
from medcurric.geometry.overlap import MAX_LABEL, Overlap, box_mask_overlap, label_histogram
from medcurric.geometry.patches import (
    GaussianSmoothing,
    SmoothingPadding,
    box_to_patch_distribution,
    gaussian,
)
from medcurric.geometry.preprocess import (
    CoordinateMap,
    CropBackend,
    MappedBoxes,
    Preprocess,
    Resample,
    map_boxes,
)
from medcurric.geometry.tokens import ImageTokenLayout, TokenGrid, box_to_token_distribution

__all__ = [
    "BoxFormat",
    "CoordinateMap",
    "CropBackend",
    "GaussianSmoothing",
    "ImageTokenLayout",
    "MAX_LABEL",
    "MappedBoxes",
    "Overlap",
    "Preprocess",
    "Resample",
    "SmoothingPadding",
    "TokenGrid",
    "box_area",
    "box_convert",
    "box_iou",
    "box_mask_overlap",
    "box_to_patch_distribution",
    "box_to_token_distribution",
    "boxes_to_masks",
    "clip_boxes",
    "gaussian",
    "label_histogram",
    "map_boxes",
    "masks_to_boxes",
    "validate_boxes",
]
