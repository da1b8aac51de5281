"""Datasets on disk: which mask each record belongs to, and records in the map's coordinates."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcurric.errors import InvalidOptionError, MedcurricWarning, MissingFileError
from medcurric.io import (
    LesionRecord,
    find_cases,
    iter_cases,
    load_case,
    load_dataset,
    read_detections,
    write_nifti,
)
from medcurric.testing import make_phantom, phantom_dataset


def _dl_store(path: Path, canonical: np.ndarray, spacing) -> None:
    """Store a canonical [z, y, x] array as DeepLesion's DL_save_nifti.py does (slices run inferior)."""
    sz, sy, sx = spacing
    v = canonical[::-1].transpose(1, 2, 0).copy()
    t = np.array([[0, -sy, 0, 0], [-sx, 0, 0, 0], [0, 0, -sz, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(v, t), str(path))


def _dl_record(series: str, key: int, rid: str, box=(1.0, 1.0, 5.0, 5.0)) -> LesionRecord:
    return LesionRecord(id=rid, image=f"{series}_{key:03d}.png", box=box, slice_index=key,
                        extra={"series": series})


def test_deeplesion_sub_volumes_and_key_slices(tmp_path: Path) -> None:
    ph = make_phantom()
    nz = ph.labels.shape[0]
    lo = 11
    _dl_store(tmp_path / f"000001_01_01_{lo:03d}-{lo + nz - 1:03d}.nii", ph.labels, ph.spacing)
    _dl_store(tmp_path / "000002_01_01.nii", ph.labels, ph.spacing)  # a whole series, slice 1 first
    records = []
    for r in ph.key_slice_lesions:
        stored = nz - 1 - r.slice_index  # the file's slice axis runs inferior
        records.append(_dl_record("000001_01_01", lo + stored, r.id, r.box))
        records.append(_dl_record("000002_01_01", 1 + stored, "whole/" + r.id, r.box))
    records.append(_dl_record("000001_01_01", lo + nz + 5, "past-the-range"))
    cases = find_cases(records, tmp_path, fmt="deeplesion")
    by_key = {Path(c.key).name: c for c in cases}
    sub = by_key[f"000001_01_01_{lo:03d}-{lo + nz - 1:03d}.nii"]
    whole = by_key["000002_01_01.nii"]
    assert set(sub.first_slice.values()) == {lo} and set(whole.first_slice.values()) == {1}
    missing = by_key[f"missing:000001_01_01_{lo + nz + 5:03d}.png"]
    assert [r.id for r in missing.records] == ["past-the-range"] and "no mask" in (missing.error or "")
    for case in (sub, whole):
        loaded = load_case(case)
        assert [r.slice_index for r in loaded.records] == [r.slice_index for r in ph.key_slice_lesions]
        assert all(r.extra["key_slice"] == o.slice_index for r, o in zip(loaded.records, case.records, strict=True))
        np.testing.assert_array_equal(loaded.label_map.array, ph.labels)
        assert loaded.vertical and loaded.key_slices == {}
    with pytest.raises(MissingFileError, match="no mask"):
        load_case(missing)


def test_coco_csv_naming_slabs_and_path_escapes(tmp_path: Path) -> None:
    ph = make_phantom()
    (tmp_path / "ct").mkdir()
    write_nifti(ph.labels, tmp_path / "ct" / "a.nii.gz", affine=ph.affine, label_names=dict(ph.class_map.items()))
    keys = ph.key_slice_lesions[:3]
    records = [LesionRecord(id=r.id, image="ct/a.png", box=r.box, slice_index=r.slice_index) for r in keys]
    records.append(LesionRecord(id="evil", image="../../etc/passwd", box=(1, 1, 2, 2), slice_index=0))
    cases = find_cases(records, tmp_path, fmt="csv")
    assert [len(c.records) for c in cases] == [3, 1]
    assert cases[0].mask == (tmp_path / "ct" / "a.nii.gz").resolve() and cases[0].error is None
    assert "leaves" in (cases[1].error or "")
    slab = load_case(cases[0], slices_only=True)
    z0 = min(r.slice_index for r in keys)
    assert not slab.vertical and slab.label_map.array.shape[0] == max(r.slice_index for r in keys) - z0 + 1
    assert [r.slice_index for r in slab.records] == [r.slice_index - z0 for r in keys]
    assert slab.key_slices == {r.id: r.slice_index for r in keys}
    np.testing.assert_array_equal(slab.label_map.array, ph.labels[z0 : z0 + slab.label_map.array.shape[0]])
    # stored slice order: counted along the file's slice axis, converted through its affine
    _dl_store(tmp_path / "ct" / "b.nii", ph.labels, ph.spacing)
    stored = [LesionRecord(id=r.id, image="ct/b.png", box=r.box, slice_index=ph.labels.shape[0] - 1 - r.slice_index)
              for r in keys]
    (case,) = find_cases(stored, tmp_path, fmt="coco", slice_order="stored")
    assert [r.slice_index for r in load_case(case).records] == [r.slice_index for r in keys]
    with pytest.raises(InvalidOptionError, match="Did you mean 'stored'"):
        find_cases(stored, tmp_path, slice_order="sotred")
    with pytest.raises(MissingFileError, match="folder of masks"):
        find_cases(stored, tmp_path / "nowhere")


def test_iter_cases_from_a_detection_file(tmp_path: Path) -> None:
    ph = make_phantom()
    (tmp_path / "masks").mkdir()
    write_nifti(ph.labels, tmp_path / "masks" / "a.nii.gz", affine=ph.affine,
                label_names=dict(ph.class_map.items()))
    rows = ["id,image,x1,y1,x2,y2,slice_index,label"]
    rows += [f"{r.id},a.nii.gz,{','.join(map(str, r.box))},{r.slice_index},cyst" for r in ph.key_slice_lesions]
    rows.append("lost,b.nii.gz,1,1,5,5,3,cyst")
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    assert len(read_detections(tmp_path / "boxes.csv", "csv")) == len(ph.key_slice_lesions) + 1
    with pytest.raises(MissingFileError, match=r"'b\.nii\.gz'"):
        load_dataset(tmp_path / "boxes.csv", tmp_path / "masks", fmt="csv")
    with pytest.warns(MedcurricWarning, match="skipping 1 lesion"):
        (loaded,) = iter_cases(tmp_path / "boxes.csv", tmp_path / "masks", fmt="csv", skip_missing=True)
    assert [r.id for r in loaded.records] == [r.id for r in ph.key_slice_lesions]
    assert loaded.label_map.spacing == pytest.approx(ph.spacing)


def test_the_phantom_as_a_dataset() -> None:
    cases = phantom_dataset(2)
    assert [c.key for c in cases] == ["phantom0", "phantom1"]
    loaded = load_case(cases[1])
    ph = make_phantom(seed=1)
    np.testing.assert_array_equal(loaded.label_map.array, ph.labels)
    assert [r.id for r in loaded.records] == [f"phantom1/{r.id}" for r in ph.key_slice_lesions]
    assert {r.image for r in loaded.records} == {"phantom1"}


def test_iter_cases_detects_the_format_when_asked(tmp_path) -> None:
    import json

    from medcurric.io import iter_cases

    (tmp_path / "masks").mkdir()
    coco = tmp_path / "det.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": []}))
    assert list(iter_cases(coco, tmp_path / "masks", fmt="auto")) == []
