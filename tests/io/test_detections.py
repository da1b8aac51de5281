from __future__ import annotations

import json

import pytest

from medcurric.errors import DataFormatError, MissingFileError
from medcurric.io import LesionRecord, read_coco_detections, read_deeplesion, read_detection_csv

DL_HEADER = (
    "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,"
    "Bounding_boxes,Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,"
    "Possibly_noisy,Slice_range,Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,"
    "Patient_age,Train_Val_Test\n"
)
DL_ROWS = [
    '000001_01_01_109.png,1,1,1,109,"233.5, 95.3, 248.1, 110.2","226.2, 90.0, 255.4, 115.6","31.1, 24.5",'
    '"0.44, 0.22, 0.59",-1,0,"103, 115","0.78, 0.78, 5","512, 512","-175, 275",F,51,1\n',
    '000001_01_01_109.png,1,1,1,109,"1, 2, 3, 4","300, 310, 320, 330","5, 4","0.5, 0.5, 0.5",4,0,'
    '"103, 115","0.78, 0.78, 5","512, 512","-175, 275",F,51,2\n',
    '000002_02_01_014.png,2,2,1,14,"1, 2, 3, 4","10, 20, 30, 40","5, 4","0.5, 0.5, 0.5",5,1,'
    '"1, 40","0.7, 0.7, 1.25","512, 512","-1350, 150",M,70,3\n',
]


def test_deeplesion(tmp_path):
    f = tmp_path / "DL_info.csv"
    f.write_text(DL_HEADER + "".join(DL_ROWS))
    recs = read_deeplesion(f)
    assert [r.id for r in recs] == ["000001_01_01_109#0", "000001_01_01_109#1", "000002_02_01_014#0"]
    a, b, c = recs
    assert a.lesion_type == "lesion" and b.lesion_type == "liver" and c.lesion_type == "lung"
    assert a.box == (226.2, 90.0, 255.4, 115.6)
    assert a.spacing == (5.0, 0.78, 0.78) and c.spacing == (1.25, 0.7, 0.7)
    assert a.window == (-175.0, 275.0)
    assert (a.split, b.split, c.split) == ("train", "val", "test")
    assert a.slice_index == 109 and c.slice_index == 14
    assert a.image == "Images_png/000001_01_01/109.png"
    assert a.extra["slice_range"] == [103, 115] and a.extra["series"] == "000001_01_01"
    assert a.extra["coarse_type"] == -1 and a.extra["patient_age"] == "51"
    assert LesionRecord.from_json(a.to_json()) == a
    # ids are stable across reads
    assert [r.id for r in read_deeplesion(f)] == [r.id for r in recs]


def test_deeplesion_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_deeplesion(tmp_path / "absent.csv")
    f = tmp_path / "x.csv"
    f.write_text("File_name,Bounding_boxes\na_1.png,\"1,2,3,4\"\n")
    with pytest.raises(DataFormatError, match="Key_slice_index"):
        read_deeplesion(f)
    f.write_text(DL_HEADER + DL_ROWS[0].replace('"226.2, 90.0, 255.4, 115.6"', '"1, 2, 3"'))
    with pytest.raises(DataFormatError, match="expected 4 numbers"):
        read_deeplesion(f)
    f.write_text(DL_HEADER + DL_ROWS[0].replace("000001_01_01_109.png", "weird.png"))
    with pytest.raises(DataFormatError, match="File_name"):
        read_deeplesion(f)


def test_coco(tmp_path):
    data = {
        "images": [
            {"id": 1, "file_name": "ct/a.png", "width": 64, "height": 64, "spacing": [0.5, 0.5]},
            {"id": 2, "file_name": "ct/b.png", "slice_index": 7},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "bbox": [1, 2, 3, 4], "category_id": 1, "score": 0.9},
            {"id": 11, "image_id": 2, "bbox": [5, 5, 10, 10], "category_id": 2},
            {"id": 12, "image_id": 2, "bbox": [0, 0, 1, 1]},
        ],
        "categories": [{"id": 1, "name": "nodule"}, {"id": 2, "name": "{organ.__class__}"}],
    }
    f = tmp_path / "det.json"
    f.write_text(json.dumps(data))
    recs = read_coco_detections(f)
    assert [r.id for r in recs] == ["ct/a.png#10", "ct/b.png#11", "ct/b.png#12"]
    assert recs[0].box == (1.0, 2.0, 4.0, 6.0) and recs[0].spacing == (0.5, 0.5)
    assert recs[0].extra == {"score": 0.9}
    assert recs[1].slice_index == 7 and recs[1].lesion_type == "{organ.__class__}"
    assert recs[2].lesion_type == "lesion"
    f.write_text(json.dumps({"images": [], "annotations": [{"image_id": 3, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(DataFormatError, match="image_id"):
        read_coco_detections(f)
    f.write_text("[1, 2]")
    with pytest.raises(DataFormatError):
        read_coco_detections(f)


def test_csv_plain_and_vindr(tmp_path):
    f = tmp_path / "b.csv"
    f.write_text(
        "image,x1,y1,x2,y2,label,slice_index,z1,z2,spacing,reader\n"
        "c1,1,2,3,4,cyst,5,,,\"2.5, 0.7, 0.7\",r1\n"
        "c1,1,2,3,4,,,0,3,,r2\n"
    )
    a, b = read_detection_csv(f)
    assert (a.id, a.lesion_type, a.slice_index, a.spacing) == ("c1#0", "cyst", 5, (2.5, 0.7, 0.7))
    assert a.extra == {"reader": "r1"}
    assert b.box == (1.0, 2.0, 0.0, 3.0, 4.0, 3.0) and b.lesion_type == "lesion"
    v = tmp_path / "vindr.csv"
    v.write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "img1,No finding,14,R1,,,,\n"
        "img2,Nodule/Mass,8,R2,10,20,30,40\n"
    )
    (r,) = read_detection_csv(v, modality="CXR")
    assert (r.id, r.image, r.lesion_type, r.box, r.modality) == (
        "img2#0", "img2", "Nodule/Mass", (10.0, 20.0, 30.0, 40.0), "CXR"
    )
    assert r.extra == {"class_id": "8", "rad_id": "R2"}
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x1,y1\nc,1,2\n")
    with pytest.raises(DataFormatError, match="missing"):
        read_detection_csv(bad)
    bad.write_text("image,x1,y1,x2,y2\nc,1,2,x,4\n")
    with pytest.raises(DataFormatError, match="numeric"):
        read_detection_csv(bad)


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ('"226.2, 90.0, 255.4, 115.6"', '"226.2, nan, 255.4, 115.6"', "finite"),
        ('"226.2, 90.0, 255.4, 115.6"', '"226.2, inf, 255.4, 115.6"', "finite"),
        ('"0.78, 0.78, 5"', '"0.78, NaN, 5"', "finite"),
        (',1,1,1,109,', ',1,1,1,inf,', "Key_slice_index"),
        (',-1,0,', ',nan,0,', "Coarse_lesion_type"),
    ],
)
def test_deeplesion_non_finite_numbers_name_the_record(tmp_path, old, new, match):
    f = tmp_path / "DL_info.csv"
    f.write_text(DL_HEADER + DL_ROWS[0].replace(old, new, 1))
    with pytest.raises(DataFormatError, match=match) as info:
        read_deeplesion(f)
    assert "DL_info.csv" in str(info.value)


@pytest.mark.parametrize("bbox", [[1, "NaN", 3, 4], [1, 2, float("inf"), 4], [1, 2, None, 4]])
def test_coco_non_finite_bbox_names_the_annotation(tmp_path, bbox):
    f = tmp_path / "det.json"
    data = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 3, "image_id": 1, "bbox": bbox}]}
    f.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"annotations\[0\]"):
        read_coco_detections(f)
