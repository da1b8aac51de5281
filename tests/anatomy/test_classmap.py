from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.anatomy import ClassMap, Laterality
from medcurric.errors import DataFormatError, InvalidOptionError, MissingFileError, WrongTypeError

# Written out by hand (TotalSegmentator v2, map_to_binary.py class_map["total"]) so that the
# test does not share the generator loops of medcurric.vocabulary._totalseg.
TOTAL_V2_LITERAL = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right "
    "adrenal_gland_left lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right "
    "lung_middle_lobe_right lung_lower_lobe_right esophagus trachea thyroid_gland small_bowel "
    "duodenum colon urinary_bladder prostate kidney_cyst_left kidney_cyst_right sacrum vertebrae_S1 "
    "vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 vertebrae_T12 vertebrae_T11 "
    "vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 vertebrae_T6 vertebrae_T5 vertebrae_T4 "
    "vertebrae_T3 vertebrae_T2 vertebrae_T1 vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4 "
    "vertebrae_C3 vertebrae_C2 vertebrae_C1 heart aorta pulmonary_vein brachiocephalic_trunk "
    "subclavian_artery_right subclavian_artery_left common_carotid_artery_right "
    "common_carotid_artery_left brachiocephalic_vein_left brachiocephalic_vein_right "
    "atrial_appendage_left superior_vena_cava inferior_vena_cava portal_vein_and_splenic_vein "
    "iliac_artery_left iliac_artery_right iliac_vena_left iliac_vena_right humerus_left humerus_right "
    "scapula_left scapula_right clavicula_left clavicula_right femur_left femur_right hip_left "
    "hip_right spinal_cord gluteus_maximus_left gluteus_maximus_right gluteus_medius_left "
    "gluteus_medius_right gluteus_minimus_left gluteus_minimus_right autochthon_left "
    "autochthon_right iliopsoas_left iliopsoas_right brain skull rib_left_1 rib_left_2 rib_left_3 "
    "rib_left_4 rib_left_5 rib_left_6 rib_left_7 rib_left_8 rib_left_9 rib_left_10 rib_left_11 "
    "rib_left_12 rib_right_1 rib_right_2 rib_right_3 rib_right_4 rib_right_5 rib_right_6 "
    "rib_right_7 rib_right_8 rib_right_9 rib_right_10 rib_right_11 rib_right_12 sternum "
    "costal_cartilages"
).split()


@pytest.fixture(scope="module")
def ts() -> ClassMap:
    return ClassMap.totalsegmentator()


def test_totalsegmentator_v2_ids_and_names(ts: ClassMap) -> None:
    assert len(TOTAL_V2_LITERAL) == 117
    assert list(ts.items()) == list(enumerate(TOTAL_V2_LITERAL, start=1))
    assert ts.labels == tuple(range(1, 118)) and ts.max_label == 117
    spot = {1: "spleen", 5: "liver", 10: "lung_upper_lobe_left", 14: "lung_lower_lobe_right",
            26: "vertebrae_S1", 50: "vertebrae_C1", 51: "heart", 52: "aorta", 90: "brain",
            92: "rib_left_1", 104: "rib_right_1", 115: "rib_right_12", 117: "costal_cartilages"}
    for label, name in spot.items():
        assert ts.name_of(label) == name and ts.label_of(name) == label
    assert ClassMap.totalsegmentator() is ts  # shared immutable instance


def test_totalsegmentator_groups(ts: ClassMap) -> None:
    g = ts.groups
    assert g["lung_left"] == ("lung_upper_lobe_left", "lung_lower_lobe_left")
    assert g["lung_right"] == ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right")
    assert set(g["spine"]) == {n for n in TOTAL_V2_LITERAL if n.startswith("vertebrae_")}
    assert len(g["spine"]) == 25
    assert g["ribs_left"] == tuple(f"rib_left_{i}" for i in range(1, 13))
    assert ts.group_of("vertebrae_L2") == "spine" and ts.group_of("liver") == "liver"
    assert ts.members("lung_right")[1] == "lung_middle_lobe_right" and ts.members("liver") == ("liver",)
    assert ts.member_labels("lung_left") == (10, 11)
    assert "lung_left" in ts and "lung" not in ts


def test_laterality_matches_name_words(ts: ClassMap) -> None:
    for name in TOTAL_V2_LITERAL:
        words = name.split("_")
        want = Laterality.LEFT if "left" in words else Laterality.RIGHT if "right" in words else None
        assert ts.laterality(name) == want, name
    assert ts.laterality("lung_right") is Laterality.RIGHT and ts.laterality("spine") is None


def test_display_names(ts: ClassMap) -> None:
    cases = {
        "kidney_left": "left kidney",
        "liver": "liver",
        "lung_upper_lobe_left": "left upper lobe of the lung",
        "lung_middle_lobe_right": "right middle lobe of the lung",
        "vertebrae_L1": "L1 vertebra",
        "rib_right_11": "right 11th rib",
        "rib_left_2": "left 2nd rib",
        "clavicula_left": "left clavicle",
        "iliac_vena_right": "right iliac vein",
        "urinary_bladder": "urinary bladder",
        "lung_left": "left lung",
        "spine": "spine",
    }
    for name, want in cases.items():
        assert ts.display_name(name) == want
    for name in TOTAL_V2_LITERAL:
        text = ts.display_name(name)
        assert text and "_" not in text and text == text.strip()
    custom = ClassMap({1: "liver"}, display_names={"liver": "hepar"})
    assert custom.display_name("liver") == "hepar"


def test_synonyms(ts: ClassMap) -> None:
    assert ts.synonyms("kidney_left")[:2] == ["left kidney", "kidney left"]
    assert "left renal" in ts.synonyms("kidney_left")
    assert ts.synonyms("liver")[0] == "liver" and "hepatic" in ts.synonyms("liver")
    lobe = ts.synonyms("lung_upper_lobe_left")
    assert lobe[0] == "left upper lobe of the lung" and "left lung" in lobe  # the group's phrases follow
    for name in TOTAL_V2_LITERAL:
        syn = ts.synonyms(name)
        assert syn[0] == ts.display_name(name) and len(syn) == len(set(syn))
    cm = ClassMap({1: "liver"}, synonyms={"liver": ["hepar", "hepar"]})
    assert cm.synonyms("liver").count("hepar") == 1


def test_round_trips(tmp_path) -> None:
    cm = ClassMap({3: "liver", 1: "lung_upper_lobe_left", 2: "lung_lower_lobe_left"}, groups="auto",
                  synonyms={"liver": ["hepar"]}, display_names={"lung_left": "left lung field"},
                  name="mine")
    assert cm.labels == (1, 2, 3)
    again = ClassMap.from_dict(json.loads(json.dumps(cm.to_dict())))
    assert again == cm and hash(again) == hash(cm) and again.name == "mine"
    path = cm.write_json(tmp_path / "sub" / "cm.json")
    assert ClassMap.from_json(path) == cm
    ts = ClassMap.totalsegmentator()
    assert ClassMap.from_dict(ts.to_dict()) == ts
    # plain forms
    assert ClassMap.from_dict({"1": "a", "2": "b"}) == ClassMap({1: "a", 2: "b"})
    assert ClassMap.from_dict({"a": 1, "b": 2}) == ClassMap({1: "a", 2: "b"})
    assert ClassMap.from_list(["background", "a", "b"]) == ClassMap.from_list(["a", "b"])
    assert ClassMap.from_list(["a", None, "c"]).labels == (1, 3)
    (tmp_path / "list.json").write_text(json.dumps(["background", "x", "y"]))
    assert ClassMap.from_json(tmp_path / "list.json").label_of("y") == 2
    assert ClassMap({0: "background", 1: "a"}) == ClassMap({1: "a"})
    assert ClassMap({1: "a"}) != ClassMap({1: "b"})


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.integers(1, 300), st.from_regex(r"[a-z]{1,8}(_(left|right))?", fullmatch=True),
                       max_size=12))
def test_round_trip_property(classes: dict[int, str]) -> None:
    if len(set(classes.values())) != len(classes):
        with pytest.raises(DataFormatError, match="Duplicate class name"):
            ClassMap(classes)
        return
    cm = ClassMap(classes, groups="auto")
    assert ClassMap.from_dict(json.loads(json.dumps(cm.to_dict()))) == cm
    for label, name in classes.items():
        assert cm.name_of(label) == name and cm.label_of(name) == label
        assert cm.synonyms(name)[0] == cm.display_name(name)


def test_validation_errors() -> None:
    with pytest.raises(DataFormatError, match="Duplicate class name 'a'"):
        ClassMap({1: "a", 2: "a"})
    with pytest.raises(DataFormatError, match="Duplicate label id 1"):
        ClassMap.from_dict({"1": "a", "01": "b"})
    with pytest.raises(DataFormatError, match="Duplicate label id 1"):
        ClassMap.from_dict({"a": 1, "b": 1})
    with pytest.raises(DataFormatError, match="Label 0 is reserved for background"):
        ClassMap({0: "liver"})
    with pytest.raises(DataFormatError, match="reserved for label 0"):
        ClassMap({4: "background"})
    with pytest.raises(DataFormatError, match=">= 1"):
        ClassMap({-1: "a"})
    with pytest.raises(DataFormatError, match="non-empty class name"):
        ClassMap({1: " "})
    with pytest.raises(DataFormatError, match="integer label id"):
        ClassMap({"one": "a"})
    with pytest.raises(DataFormatError, match="also a class name"):
        ClassMap({1: "a", 2: "b"}, groups={"a": "b"})
    with pytest.raises(InvalidOptionError, match="Did you mean 'liver'"):
        ClassMap({1: "liver"}, groups={"livr": "g"})
    with pytest.raises(InvalidOptionError, match="'auto'"):
        ClassMap({1: "a"}, groups="automatic")
    with pytest.raises(WrongTypeError):
        ClassMap(["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="Unknown class map field"):
        ClassMap.from_dict({"classes": {"1": "a"}, "colour": {}})


def test_lookup_errors_suggest_names(ts: ClassMap, tmp_path) -> None:
    with pytest.raises(InvalidOptionError, match="Did you mean 'kidney_left'"):
        ts.label_of("kidney_lef")
    with pytest.raises(InvalidOptionError, match="Did you mean 'spleen'"):
        ts.display_name("spleeen")
    with pytest.raises(InvalidOptionError, match="Did you mean 'lung_left'"):
        ts.members("lung_lft")
    with pytest.raises(InvalidOptionError, match="label id"):
        ts.name_of(200)
    with pytest.raises(InvalidOptionError):
        ts.name_of(True)  # type: ignore[arg-type]
    with pytest.raises(MissingFileError):
        ClassMap.from_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        ClassMap.from_json(tmp_path / "bad.json")
