"""Loaders for VQA-RAD, SLAKE, LLaVA-Med/PathVQA test files and prediction files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from medcurric.errors import DataFormatError, InvalidOptionError, MedcurricWarning, MissingFileError
from medcurric.eval import VQAItem, load_predictions, load_texts, load_vqa, score_vqa

VQA_RAD = [
    {
        "qid": 1,
        "image_name": "synpic1.jpg",
        "image_organ": "CHEST",
        "answer": "Yes",
        "answer_type": "CLOSED",
        "question_type": "PRES",
        "question": "Is there a nodule?",
        "phrase_type": "freeform",
    },
    {
        "qid": 2,
        "image_name": "synpic2.jpg",
        "image_organ": "HEAD",
        "answer": 2,
        "answer_type": "OPEN ",
        "question_type": "COUNT",
        "question": "How many lesions?",
        "phrase_type": "test_freeform",
    },
    {
        "qid": 3,
        "image_name": "synpic2.jpg",
        "image_organ": "HEAD",
        "answer": "no",
        "answer_type": "CLOSED",
        "question_type": "PRES",
        "question": "Is it normal?",
        "phrase_type": "test_para",
    },
]
SLAKE = [
    {
        "img_id": 1,
        "img_name": "xmlab1/source.jpg",
        "question": "Which organ is abnormal?",
        "answer": "Lung",
        "q_lang": "en",
        "location": "Lung",
        "modality": "CT",
        "answer_type": "OPEN",
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["a", "b", "c"],
        "qid": 11,
    },
    {
        "img_id": 1,
        "img_name": "xmlab1/source.jpg",
        "question": "哪个器官异常?",
        "answer": "肺",
        "q_lang": "zh",
        "location": "Lung",
        "modality": "CT",
        "answer_type": "OPEN",
        "qid": 12,
    },
]
LLAVA_MED = [
    {
        "id": "p1",
        "image": "test/img1.png",
        "answer_type": "CLOSED",
        "conversations": [
            {"from": "human", "value": "<image>\nIs this tissue malignant?"},
            {"from": "gpt", "value": "yes"},
        ],
    },
    {
        "id": "p2",
        "image": "test/img2.png",
        "answer_type": "OPEN",
        "conversatons": [
            {"from": "human", "value": "<image>\nWhat is present?"},
            {"from": "gpt", "value": "granuloma"},
        ],
    },
]


def _write(tmp_path: Path, name: str, data: object) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return p


def test_vqa_rad_public_json(tmp_path: Path) -> None:
    p = _write(tmp_path, "VQA_RAD Dataset Public.json", VQA_RAD)
    items = load_vqa(p)
    assert [i.id for i in items] == ["1", "2", "3"]
    assert items[1] == VQAItem(
        id="2",
        question="How many lesions?",
        answer="2",
        answer_type="open",
        image="synpic2.jpg",
        organ="HEAD",
        dataset="vqa-rad",
        extra={"question_type": "COUNT", "phrase_type": "test_freeform"},
    )
    assert [i.id for i in load_vqa(p, split="test")] == ["2", "3"]
    assert [i.id for i in load_vqa(p, split="train")] == ["1"]


def test_slake_language_filter(tmp_path: Path) -> None:
    p = _write(tmp_path, "test.json", SLAKE)
    items = load_vqa(p)
    assert [(i.id, i.organ, i.dataset) for i in items] == [("11", "Lung", "slake")]
    assert len(load_vqa(p, language=None)) == 2
    assert [i.answer for i in load_vqa(p, language="zh")] == ["肺"]
    with pytest.warns(MedcurricWarning, match="split"):
        load_vqa(p, split="test")


def test_llava_med_conversations_and_jsonl(tmp_path: Path) -> None:
    p = _write(tmp_path, "test.json", LLAVA_MED)
    items = load_vqa(p)
    assert [(i.id, i.question, i.answer, i.answer_type) for i in items] == [
        ("p1", "Is this tissue malignant?", "yes", "closed"),
        ("p2", "What is present?", "granuloma", "open"),
    ]
    jl = tmp_path / "test.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in LLAVA_MED) + "\n")
    assert load_vqa(jl, format="pathvqa") == [
        VQAItem(**{**i.to_dict(), "dataset": "pathvqa"}) for i in items
    ]


def test_flat_records_and_default_answer_type(tmp_path: Path) -> None:
    p = _write(tmp_path, "flat.json", {"q1": {"question": "Organ?", "answer": "liver"}})
    with pytest.raises(DataFormatError, match="default_answer_type"):
        load_vqa(p)
    (item,) = load_vqa(p, default_answer_type="open")
    assert (item.id, item.answer, item.answer_type) == ("q1", "liver", "open")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([{"qid": 1, "question": "q", "answer": "a", "answer_type": "MAYBE"}], "OPEN' or 'CLOSED"),
        ([{"qid": 1, "question": "q", "answer_type": "OPEN"}], "expected the answer"),
        ([{"question": "q", "answer": "a", "answer_type": "OPEN"}], "question id"),
        ([{"qid": 1, "question": "q", "answer": "a", "answer_type": "OPEN"}] * 2, "appears twice"),
        ([{"qid": 1, "question": "q", "answer": ["a"], "answer_type": "OPEN"}], "string"),
        ([{"id": 1, "conversations": [{"value": "q"}], "answer_type": "OPEN"}], "two turns"),
        ([3], "JSON object"),
        ("just a string", "JSON str"),
    ],
)
def test_bad_vqa_files(tmp_path: Path, data: object, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        load_vqa(_write(tmp_path, "bad.json", data))


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="does not exist"):
        load_vqa(tmp_path / "nope.json")
    p = _write(tmp_path, "t.json", VQA_RAD)
    with pytest.raises(InvalidOptionError, match="vqa-rad"):
        load_vqa(p, format="vqarad")
    with pytest.raises(DataFormatError, match="split"):
        load_vqa(p, split="val")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 1}\nnot json\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2"):
        load_vqa(bad)


def test_predictions(tmp_path: Path) -> None:
    jl = tmp_path / "answers.jsonl"
    jl.write_text(
        '{"question_id": 2, "prompt": "q", "text": "Two.", "answer_id": "x", "model_id": "m"}\n'
        '{"question_id": "3", "text": "No"}\n'
    )
    assert load_predictions(jl) == {"2": "Two.", "3": "No"}
    assert load_predictions(_write(tmp_path, "p.json", {"2": "x"})) == {"2": "x"}
    custom = _write(tmp_path, "c.json", [{"uid": "a", "out": "yes"}])
    assert load_predictions(custom, id_key="uid", text_key="out") == {"a": "yes"}
    with pytest.raises(DataFormatError, match="text_key"):
        load_predictions(_write(tmp_path, "d.json", [{"id": 1, "foo": "x"}]))
    with pytest.raises(DataFormatError, match="appears twice"):
        load_predictions(
            _write(tmp_path, "e.json", [{"id": 1, "text": "a"}, {"id": 1, "text": "b"}])
        )


def test_texts(tmp_path: Path) -> None:
    jl = tmp_path / "refs.jsonl"
    jl.write_text('{"id": "s1", "findings": "Clear."}\n{"id": "s2", "report": ["A.", "B."]}\n')
    assert load_texts(jl) == {"s1": ["Clear."], "s2": ["A.", "B."]}
    with pytest.raises(DataFormatError, match="empty list"):
        load_texts(_write(tmp_path, "r.json", {"s1": []}))


def test_load_then_score_end_to_end(tmp_path: Path) -> None:
    gt = load_vqa(_write(tmp_path, "VQA_RAD Dataset Public.json", VQA_RAD), split="test")
    preds = load_predictions(
        _write(
            tmp_path,
            "a.json",
            [{"question_id": 2, "text": "two"}, {"question_id": 3, "text": "No."}],
        )
    )
    s = score_vqa(gt, preds, compat="llava-med")
    assert (s.open_recall, s.closed_accuracy) == (1.0, 1.0)
    assert {r["organ"] for r in s.breakdown("organ")} == {"HEAD", "all"}


def test_a_one_line_jsonl_file_is_one_record_not_a_mapping(tmp_path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": "q1", "prediction": "yes"}\n')
    assert load_predictions(one) == {"q1": "yes"}
    two = tmp_path / "two.jsonl"
    two.write_text('{"id": "q1", "prediction": "yes"}\n{"id": "q2", "prediction": "no"}\n')
    assert load_predictions(two) == {"q1": "yes", "q2": "no"}
    # a .json file holding one object is still an id -> text mapping
    mapping = tmp_path / "map.json"
    mapping.write_text('{"q1": "yes", "q2": "no"}')
    assert load_predictions(mapping) == {"q1": "yes", "q2": "no"}


def test_the_librarys_own_samples_are_vqa_references(tmp_path) -> None:
    from medcurric.testing import bundled_sample

    bundle = bundled_sample()
    reject = dataclasses.replace(bundle.samples[0], id="rejected-1", accepted=False)
    path = tmp_path / "samples.jsonl"
    rows = [s.to_dict() for s in [*bundle.samples, reject]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_vqa(path)
    assert [i.id for i in items] == [s.id for s in bundle.samples]  # the reject is skipped
    assert {i.dataset for i in items} == {"medcurric"}
    for item, sample in zip(items, bundle.samples, strict=True):
        assert (item.question, item.answer, item.answer_type) == (sample.question, sample.answer, sample.question_type)
        assert item.organ == sample.organ and item.extra["stage"] == sample.stage
    # every sample scored against its own answer is right
    scores = score_vqa(items, {s.id: s.answer for s in bundle.samples})
    assert scores.closed_accuracy == 1.0 and scores.open_recall == 1.0
