"""The TotalSegmentator v2 ``total`` task: 117 classes, their groups and text synonyms.

The label ids and names follow ``class_map["total"]`` of TotalSegmentator's
``map_to_binary.py`` (v2). Only facts (ids, names) are recorded here.
"""

from __future__ import annotations

__all__ = ["TOTAL_V2", "TOTAL_V2_GROUPS", "TOTAL_V2_SYNONYMS", "group_rule"]


def _build_total_v2() -> dict[int, str]:
    names = [
        "spleen",
        "kidney_right",
        "kidney_left",
        "gallbladder",
        "liver",
        "stomach",
        "pancreas",
        "adrenal_gland_right",
        "adrenal_gland_left",
        "lung_upper_lobe_left",
        "lung_lower_lobe_left",
        "lung_upper_lobe_right",
        "lung_middle_lobe_right",
        "lung_lower_lobe_right",
        "esophagus",
        "trachea",
        "thyroid_gland",
        "small_bowel",
        "duodenum",
        "colon",
        "urinary_bladder",
        "prostate",
        "kidney_cyst_left",
        "kidney_cyst_right",
        "sacrum",
        "vertebrae_S1",
        *(f"vertebrae_L{i}" for i in range(5, 0, -1)),
        *(f"vertebrae_T{i}" for i in range(12, 0, -1)),
        *(f"vertebrae_C{i}" for i in range(7, 0, -1)),
        "heart",
        "aorta",
        "pulmonary_vein",
        "brachiocephalic_trunk",
        "subclavian_artery_right",
        "subclavian_artery_left",
        "common_carotid_artery_right",
        "common_carotid_artery_left",
        "brachiocephalic_vein_left",
        "brachiocephalic_vein_right",
        "atrial_appendage_left",
        "superior_vena_cava",
        "inferior_vena_cava",
        "portal_vein_and_splenic_vein",
        "iliac_artery_left",
        "iliac_artery_right",
        "iliac_vena_left",
        "iliac_vena_right",
        "humerus_left",
        "humerus_right",
        "scapula_left",
        "scapula_right",
        "clavicula_left",
        "clavicula_right",
        "femur_left",
        "femur_right",
        "hip_left",
        "hip_right",
        "spinal_cord",
        "gluteus_maximus_left",
        "gluteus_maximus_right",
        "gluteus_medius_left",
        "gluteus_medius_right",
        "gluteus_minimus_left",
        "gluteus_minimus_right",
        "autochthon_left",
        "autochthon_right",
        "iliopsoas_left",
        "iliopsoas_right",
        "brain",
        "skull",
        *(f"rib_left_{i}" for i in range(1, 13)),
        *(f"rib_right_{i}" for i in range(1, 13)),
        "sternum",
        "costal_cartilages",
    ]
    return {i + 1: n for i, n in enumerate(names)}


#: label id -> class name of TotalSegmentator v2, task ``total`` (117 classes).
TOTAL_V2: dict[int, str] = _build_total_v2()


def group_rule(name: str) -> str | None:
    """Return the group a TotalSegmentator-style class name belongs to, or ``None``.

    Lobes merge into ``lung_left`` / ``lung_right`` (the group keeps the side),
    vertebrae into ``spine``, ribs into ``ribs_left`` / ``ribs_right``, gluteal
    muscles into ``gluteal_muscles_left`` / ``gluteal_muscles_right``.
    """
    tokens = name.split("_")
    side = next((t for t in tokens if t in ("left", "right")), None)
    if tokens[0] == "lung" and "lobe" in tokens and side is not None:
        return f"lung_{side}"
    if tokens[0] in ("vertebrae", "vertebra") and len(tokens) == 2:
        return "spine"
    if tokens[0] == "rib" and side is not None:
        return f"ribs_{side}"
    if tokens[0] == "gluteus" and side is not None:
        return f"gluteal_muscles_{side}"
    return None


#: class name -> group name for the ``total`` task (see :func:`group_rule`).
TOTAL_V2_GROUPS: dict[str, str] = {
    n: g for n in TOTAL_V2.values() if (g := group_rule(n)) is not None
}

#: Extra phrases (besides the display name) that name a structure in text.
#: Keys are class or group names without the side; the side is added by ``ClassMap``.
TOTAL_V2_SYNONYMS: dict[str, tuple[str, ...]] = {
    "liver": ("hepatic",),
    "spleen": ("splenic",),
    "kidney": ("renal",),
    "adrenal_gland": ("adrenal",),
    "gallbladder": ("gall bladder", "biliary"),
    "stomach": ("gastric",),
    "pancreas": ("pancreatic",),
    "lung": ("pulmonary",),
    "heart": ("cardiac",),
    "esophagus": ("oesophagus", "esophageal", "oesophageal"),
    "thyroid_gland": ("thyroid",),
    "small_bowel": ("small intestine", "bowel"),
    "colon": ("large bowel", "colonic", "bowel"),
    "urinary_bladder": ("bladder",),
    "prostate": ("prostatic",),
    "spine": ("spinal column", "vertebral column", "vertebra", "vertebrae", "vertebral"),
    "ribs": ("rib", "costal"),
    "sternum": ("sternal",),
    "brain": ("cerebral", "intracranial"),
    "aorta": ("aortic",),
    "trachea": ("tracheal", "airway"),
    "hip": ("pelvis", "pelvic bone", "iliac bone"),
    "skull": ("cranium", "cranial"),
}
