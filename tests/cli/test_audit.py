"""``medcurric audit`` on the phantom and on a dataset on disk (detections CSV + NIfTI masks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcurric.anatomy import BoxOrganMatcher
from medcurric.cli import main
from medcurric.io import LabelMap, write_nifti
from medcurric.review import Perturbation, audit_matching
from medcurric.testing import Phantom, make_phantom

PERTURBATIONS = ["--perturbations", "erode:2,swap_lr"]


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom()


def _rows(out: Path) -> list[tuple[str, str | None, str | None, bool]]:
    data = json.loads((out / "audit.json").read_text())
    return [(r["lesion_id"], r["organ"], r["new_organ"], r["outcome_changed"]) for r in data["rows"]]


def _direct(label_map: LabelMap, lesions) -> list[tuple[str, str | None, str | None, bool]]:
    """The same audit, straight from a label map in memory."""
    res = audit_matching([(label_map, lesions)], BoxOrganMatcher(),
                         [Perturbation("erode", 2.0), Perturbation("swap_lr")], progress=False)
    return [(r.lesion_id, r.organ, r.new_organ, r.outcome_changed) for r in res.rows]


def _write_dataset(root: Path, phantom: Phantom, labels, lesions, *, lost: bool = True) -> tuple[Path, Path]:
    masks = root / "masks" / "ct"
    masks.mkdir(parents=True)
    write_nifti(labels, masks / "case1.nii.gz", affine=phantom.affine,
                label_names=dict(phantom.class_map.items()))
    rows = ["id,image,x1,y1,x2,y2,slice_index,label\n"]
    for r in lesions:
        rows.append(f"{r.id},ct/case1.nii.gz,{r.box[0]},{r.box[1]},{r.box[2]},{r.box[3]},{r.slice_index},cyst\n")
    if lost:
        rows.append("lost,ct/nowhere.nii.gz,1,1,5,5,3,cyst\n")  # no mask: skipped with a message
    (root / "boxes.csv").write_text("".join(rows))
    return root / "boxes.csv", root / "masks"


def test_audit_cli_on_phantom(tmp_path) -> None:
    assert main(["audit", "--phantom", "--out", str(tmp_path), "--seed", "0"]) == 0
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["num_lesions"] == 10 and data["rows"] and data["summary"]
    assert (tmp_path / "audit.md").read_text().startswith("Audited 10 lesions")
    assert (tmp_path / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "audit.csv").read_text().splitlines()[0].startswith("lesion_id,")
    # no inputs at all: the phantom too (the documented default)
    assert main(["audit", "--out", str(tmp_path / "default"), "--seed", "0"]) == 0
    assert _rows(tmp_path / "default") == _rows(tmp_path)


def test_audit_cli_on_a_dataset_on_disk(tmp_path, phantom, capsys) -> None:
    """The phantom written to disk, found as `medcurric seeds` finds it, audits like the phantom in memory."""
    det, masks = _write_dataset(tmp_path, phantom, phantom.labels, phantom.key_slice_lesions)
    out = tmp_path / "audit"
    assert main(["audit", "--detections", str(det), "--format", "csv", "--masks", str(masks),
                 "--out", str(out), *PERTURBATIONS]) == 0
    assert "skipping 1 lesion(s)" in capsys.readouterr().err
    assert json.loads((out / "audit.json").read_text())["num_lesions"] == len(phantom.key_slice_lesions)
    assert _rows(out) == _direct(phantom.label_map(), phantom.key_slice_lesions)
    assert any(r[3] for r in _rows(out)) or any(r[1] != r[2] for r in _rows(out))


def test_audit_cli_audits_the_given_data_not_the_phantom(tmp_path, phantom) -> None:
    """Other masks and fewer lesions on disk: the rows follow the files, not the bundled phantom."""
    labels = phantom.labels.copy()
    liver = phantom.class_map.label_of("liver")
    labels[labels == liver] = 0  # a segmentation that missed the liver
    lesions = phantom.key_slice_lesions[:6]
    det, masks = _write_dataset(tmp_path, phantom, labels, lesions, lost=False)
    out = tmp_path / "audit"
    assert main(["audit", "--detections", str(det), "--format", "csv", "--masks", str(masks),
                 "--out", str(out), *PERTURBATIONS]) == 0
    got = _rows(out)
    assert got == _direct(phantom.label_map().replace(array=labels), lesions)
    assert main(["audit", "--phantom", "--mode", "2d", "--out", str(tmp_path / "ph"), *PERTURBATIONS]) == 0
    phantom_rows = _rows(tmp_path / "ph")
    assert len(got) == 2 * len(lesions) < len(phantom_rows)
    # a liver lesion is matched to the liver in the phantom, never in the data without one
    assert any(r[1] == "liver" for r in phantom_rows) and not any(r[1] == "liver" for r in got)


def test_audit_cli_names_a_missing_input(tmp_path, phantom, capsys) -> None:
    det, masks = _write_dataset(tmp_path, phantom, phantom.labels, phantom.key_slice_lesions)
    out = str(tmp_path / "audit")
    assert main(["audit", "--detections", str(det), "--format", "csv", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "--masks DIR is missing" in err and "--detections" in err
    assert main(["audit", "--masks", str(masks), "--out", out]) == 1
    assert "--detections FILE is missing" in capsys.readouterr().err
    assert main(["audit", "--detections", str(det), "--format", "csv", "--masks",
                 str(tmp_path / "nowhere"), "--out", out]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["audit", "--phantom", "--detections", str(det), "--masks", str(masks), "--out", out]) == 1
    assert "but got both" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()
