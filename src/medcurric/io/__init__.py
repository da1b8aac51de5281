"""Readers for detections, volumes and masks, and the records they return.

Every volume or mask reader returns arrays indexed ``[z, y, x]`` (or ``[y, x]``)
reoriented so that ``x`` runs towards the patient's left, ``y`` towards posterior
and ``z`` towards superior, with the spacing and the affine of the reoriented
array kept (see :doc:`/conventions`). A lesion box drawn in image pixels therefore
lands on the same voxels whatever the orientation stored in the file.

:func:`load_rgb` turns any stored image (DeepLesion 16-bit PNG, NIfTI or DICOM slice,
8-bit picture, array) into the RGB a model sees, through a :class:`Window`.
"""

from medcurric.io.datasets import (
    Case,
    DetectionFormat,
    LoadedCase,
    SliceOrder,
    detect_detection_format,
    find_cases,
    iter_cases,
    load_case,
    load_dataset,
    read_detections,
)
from medcurric.io.detections import (
    DEEPLESION_TYPES,
    RecordError,
    read_coco_detections,
    read_deeplesion,
    read_detection_csv,
)
from medcurric.io.dicom import read_dicom_seg, read_dicom_series
from medcurric.io.images import MAX_PIXELS, load_rgb
from medcurric.io.nifti import (
    label_names_from_nifti,
    read_nifti,
    read_nifti_labels,
    read_nifti_slices,
    write_nifti,
)
from medcurric.io.orientation import (
    CANONICAL_AXCODES,
    Reorientation,
    orientation_codes,
    reorient_to_canonical,
)
from medcurric.io.png import DEEPLESION_HU_OFFSET, read_deeplesion_slice, read_png_masks
from medcurric.io.records import LabelMap, LesionRecord, Volume
from medcurric.io.totalseg import read_label_map, read_totalsegmentator
from medcurric.io.window import (
    DEFAULT_WINDOW,
    Window,
    WindowFormula,
    WindowPreset,
    apply_window,
    window_to_rgb,
)

__all__ = [
    "CANONICAL_AXCODES",
    "Case",
    "DEEPLESION_HU_OFFSET",
    "DEEPLESION_TYPES",
    "DEFAULT_WINDOW",
    "DetectionFormat",
    "LabelMap",
    "LesionRecord",
    "LoadedCase",
    "MAX_PIXELS",
    "RecordError",
    "Reorientation",
    "SliceOrder",
    "Volume",
    "Window",
    "WindowFormula",
    "WindowPreset",
    "apply_window",
    "detect_detection_format",
    "find_cases",
    "iter_cases",
    "label_names_from_nifti",
    "load_case",
    "load_dataset",
    "load_rgb",
    "orientation_codes",
    "read_coco_detections",
    "read_deeplesion",
    "read_deeplesion_slice",
    "read_detection_csv",
    "read_detections",
    "read_dicom_seg",
    "read_dicom_series",
    "read_label_map",
    "read_nifti",
    "read_nifti_labels",
    "read_nifti_slices",
    "read_png_masks",
    "read_totalsegmentator",
    "reorient_to_canonical",
    "window_to_rgb",
    "write_nifti",
]
