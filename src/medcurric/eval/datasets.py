"""Loaders for medical VQA test sets (VQA-RAD, SLAKE, PathVQA) and for prediction files.

Every reader takes a local path (nothing is downloaded) and is lenient on field
names, because the same data circulates in several shapes:

* VQA-RAD's ``VQA_RAD Dataset Public.json``: ``qid``, ``image_name``,
  ``image_organ``, ``question``, ``answer``, ``answer_type`` (``"OPEN"``/``"CLOSED"``,
  sometimes with stray spaces) and ``phrase_type`` (``test_freeform``/``test_para``
  mark the test split).
* SLAKE's ``test.json``: ``qid``, ``img_name``, ``question``, ``answer``,
  ``answer_type``, ``location`` (the organ/region) and ``q_lang`` (``"en"``/``"zh"``).
* LLaVA-Med's ``test.json`` (VQA-RAD, SLAKE and PathVQA as LLaVA-Med distributes
  them): ``id``, ``image``, ``conversations`` (question from the human turn,
  answer from the next turn; the misspelt ``conversatons`` is accepted) and
  ``answer_type``.
* medcurric's own generated samples (``medcurric generate`` output, one
  :class:`~medcurric.cot.CoTSample` per line): ``id``, ``question``, ``answer``,
  ``question_type`` as the answer type, ``organ``; rejected samples are skipped.
* Predictions: JSON lines as LLaVA-Med's ``model_vqa_med.py`` writes them
  (``question_id`` and ``text``) or any of ``id``/``qid`` with
  ``answer``/``prediction``/``pred``/``output``/``response``.

Files may be a JSON array, a JSON object of id -> record, or JSON lines; a
``.jsonl``/``.ndjson`` file is always read as JSON lines, even with one line. The
contents are data: nothing read is evaluated or used as a path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcurric._jsonl import read_jsonl
from medcurric._options import StrEnum, look_up_option, warn_ignored
from medcurric._serialization import JsonRecord
from medcurric.errors import DataFormatError, MissingFileError

__all__ = [
    "AnswerType",
    "VQAFormat",
    "VQAItem",
    "load_predictions",
    "load_records",
    "load_texts",
    "load_vqa",
]


class AnswerType(StrEnum):
    """Open-ended or closed (yes/no or a choice) question."""

    OPEN = "open"
    CLOSED = "closed"


class VQAFormat(StrEnum):
    """Layout of a VQA ground-truth file (``AUTO`` detects it from the first record)."""

    AUTO = "auto"
    LLAVA_MED = "llava-med"
    VQA_RAD = "vqa-rad"
    SLAKE = "slake"
    PATHVQA = "pathvqa"
    FLAT = "flat"
    MEDCURRIC = "medcurric"


@dataclass(frozen=True)
class VQAItem(JsonRecord):
    """One ground-truth VQA question.

    Attributes:
        id: Question id, as a string (predictions are matched on it).
        question: Question text (``<image>`` placeholders removed).
        answer: Ground-truth answer text.
        answer_type: ``"open"`` or ``"closed"``.
        image: Image file name as given by the dataset (never opened here).
        organ: Organ or body region, when the dataset gives one (VQA-RAD ``image_organ``,
            SLAKE ``location``).
        dataset: Format the item was read from.
        extra: Other fields of the record, kept as data.

    Examples:
        >>> VQAItem("1", "Is there a nodule?", "yes", "closed").answer_type
        'closed'
    """

    id: str
    question: str
    answer: str
    answer_type: str
    image: str = ""
    organ: str | None = None
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "answer_type", str(_answer_type(self.answer_type, where=f"item {self.id!r}"))
        )


_ID_KEYS = ("question_id", "qid", "id", "question_idx")
_QUESTION_KEYS = ("question", "sent", "query", "prompt")
_ANSWER_KEYS = ("answer", "gt_answer", "ground_truth", "label")
_IMAGE_KEYS = ("image", "image_name", "img_name", "image_path", "img")
_ORGAN_KEYS = ("organ", "image_organ", "location")
_PREDICTION_KEYS = ("text", "prediction", "pred", "answer", "output", "response")
_REPORT_KEYS = ("report", "findings", "text", "reference", "references", "caption", "impression")
_IMAGE_TOKEN = re.compile(r"<image>\s*")

_OPEN_WORDS = {"open", "open-ended", "open ended", "free-form", "freeform", "other"}
_CLOSED_WORDS = {
    "closed",
    "close",
    "closed-ended",
    "close-ended",
    "closed ended",
    "yes/no",
    "yesno",
    "yes-no",
}


def _answer_type(value: Any, *, where: str) -> AnswerType:
    text = str(value).strip().lower() if value is not None else ""
    if text in _OPEN_WORDS:
        return AnswerType.OPEN
    if text in _CLOSED_WORDS:
        return AnswerType.CLOSED
    raise DataFormatError(
        f"{where}: expected answer_type 'OPEN' or 'CLOSED', but got {value!r:.60}. "
        "Fix the record or pass default_answer_type= to load_vqa."
    )


#: Suffixes that always mean JSON lines (one record per line, whatever the line count).
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _read_records(path: str | os.PathLike[str]) -> list[tuple[str | None, Any]]:
    """Read a JSON array, an object of id -> record, or JSON lines as (key, record) pairs.

    A ``.jsonl``/``.ndjson`` file is always JSON lines (a one-line file is one record, not
    an id -> record mapping); any other suffix is JSON when it parses as one document.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(
            f"Expected a JSON or JSON-lines file at '{p}', but it does not exist."
        )
    if p.suffix.lower() in _JSONL_SUFFIXES:
        return [(None, obj) for obj in read_jsonl(p, allow_partial_tail=False)]
    text = p.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        if not text.strip():
            return []
        return [(None, obj) for obj in read_jsonl(p, allow_partial_tail=False)]
    if isinstance(data, list):
        return [(None, obj) for obj in data]
    if isinstance(data, dict):
        # {"data": [...]} or {"0": [...]} wrappers, else an id -> record mapping.
        for key in ("data", "questions", "annotations"):
            if isinstance(data.get(key), list):
                return [(None, obj) for obj in data[key]]
        return [(str(k), v) for k, v in data.items()]
    raise DataFormatError(
        f"{p}: expected a JSON array of records, an object of id -> record or JSON lines, "
        f"but the file holds a JSON {type(data).__name__}."
    )


def _first(record: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    for key in keys:
        if key in record and record[key] is not None:
            return key, record[key]
    return None, None


def _text(value: Any, *, what: str, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(
            f"{where}: expected {what} to be a string, "
            f"but got {type(value).__name__} {value!r:.60}."
        )
    return str(value)


def _detect(record: Mapping[str, Any]) -> VQAFormat:
    if {"seed_id", "question_type", "stage"} <= set(record):
        return VQAFormat.MEDCURRIC
    if "conversations" in record or "conversatons" in record:
        return VQAFormat.LLAVA_MED
    if "q_lang" in record:
        return VQAFormat.SLAKE
    if "phrase_type" in record or "image_organ" in record:
        return VQAFormat.VQA_RAD
    return VQAFormat.FLAT


def _from_conversations(record: Mapping[str, Any], where: str) -> tuple[str, str]:
    turns = record.get("conversations", record.get("conversatons"))
    if (
        not isinstance(turns, list)
        or len(turns) < 2
        or not all(isinstance(t, Mapping) for t in turns[:2])
    ):
        raise DataFormatError(
            f"{where}: expected 'conversations' to be a list of at least two turns "
            "({'from': 'human', 'value': question}, {'from': 'gpt', 'value': answer})."
        )
    question = _text(turns[0].get("value", ""), what="the question turn", where=where)
    answer = _text(turns[1].get("value", ""), what="the answer turn", where=where)
    return _IMAGE_TOKEN.sub("", question).strip(), answer


def load_vqa(
    path: str | os.PathLike[str],
    *,
    format: str | VQAFormat = VQAFormat.AUTO,
    split: str | None = None,
    language: str | None = "en",
    default_answer_type: str | None = None,
) -> list[VQAItem]:
    """Read a VQA ground-truth file into :class:`VQAItem` records.

    Args:
        path: Local JSON / JSON-lines file (see the module docstring for the layouts).
        format: ``"auto"`` (detect from the first record), ``"llava-med"``, ``"vqa-rad"``,
            ``"slake"``, ``"pathvqa"`` (LLaVA-Med's distribution; conversations or flat
            records), ``"flat"`` (``id``/``question``/``answer``/``answer_type``) or
            ``"medcurric"`` (the library's own samples JSONL; detected by ``seed_id``,
            ``question_type`` and ``stage``).
        split: ``"test"`` or ``"train"`` to keep one split of VQA-RAD's public file
            (``phrase_type`` starting with ``test``); ``None`` keeps every record.
        language: Keep SLAKE questions in this language (``q_lang``); ``None`` keeps all.
        default_answer_type: Answer type for records that have none (otherwise an error).

    Returns:
        The items, in file order.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When a record lacks an id, question, answer or answer type, or ids repeat.

    Examples:
        >>> import json, pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "test.json"
        >>> _ = p.write_text(json.dumps([
        ...     {"qid": 1, "img_name": "a.jpg", "question": "Is the lung normal?", "answer": "No",
        ...      "answer_type": "CLOSED", "q_lang": "en", "location": "Lung"},
        ...     {"qid": 2, "img_name": "a.jpg", "question": "肺正常吗?", "answer": "不",
        ...      "answer_type": "CLOSED", "q_lang": "zh", "location": "Lung"}]))
        >>> [(i.id, i.answer, i.answer_type, i.organ, i.dataset) for i in load_vqa(p)]
        [('1', 'No', 'closed', 'Lung', 'slake')]
    """
    fmt = look_up_option(format, VQAFormat, name="format")
    if split is not None and split.strip().lower() not in ("test", "train"):
        raise DataFormatError(f"Expected split 'test', 'train' or None, but got {split!r}.")
    records = _read_records(path)
    items: list[VQAItem] = []
    seen: set[str] = set()
    split_used = False
    for index, (key, record) in enumerate(records):
        where = f"{path}: record {index}"
        if not isinstance(record, Mapping):
            raise DataFormatError(
                f"{where}: expected a JSON object, but got {type(record).__name__}."
            )
        kind = _detect(record) if fmt is VQAFormat.AUTO else fmt
        if kind is VQAFormat.MEDCURRIC:
            if record.get("accepted", True) is False:
                continue  # rejected samples are not ground truth
            record = {**record, "answer_type": record.get("question_type"), "stage": record.get("stage")}
        if (
            language is not None
            and "q_lang" in record
            and str(record["q_lang"]).strip().lower() != language.lower()
        ):
            continue
        if "phrase_type" in record:
            split_used = True
            if split is not None:
                is_test = str(record["phrase_type"]).strip().lower().startswith("test")
                if is_test != (split.strip().lower() == "test"):
                    continue
        _, rid = _first(record, _ID_KEYS)
        if rid is None:
            rid = key
        if rid is None:
            raise DataFormatError(f"{where}: expected a question id in one of {list(_ID_KEYS)}.")
        rid = _text(rid, what="the id", where=where)
        if "conversations" in record or "conversatons" in record:
            question, answer = _from_conversations(record, where)
        elif kind is VQAFormat.LLAVA_MED:
            raise DataFormatError(f"{where}: format 'llava-med' expects a 'conversations' list.")
        else:
            _, q = _first(record, _QUESTION_KEYS)
            ak, a = _first(record, _ANSWER_KEYS)
            if ak is None:
                raise DataFormatError(
                    f"{where}: expected the answer in one of {list(_ANSWER_KEYS)} "
                    "or a 'conversations' "
                    f"list, but the record has keys {sorted(record)[:12]}."
                )
            question = _text(q if q is not None else "", what="the question", where=where)
            answer = _text(a, what="the answer", where=where)
        atype = record.get("answer_type", record.get("answer_type ", default_answer_type))
        if atype is None:
            raise DataFormatError(
                f"{where}: expected an 'answer_type' ('OPEN' or 'CLOSED'); "
                "pass default_answer_type= "
                "to load_vqa for files without one."
            )
        _, image = _first(record, _IMAGE_KEYS)
        _, organ = _first(record, _ORGAN_KEYS)
        if rid in seen:
            raise DataFormatError(
                f"{where}: question id {rid!r} appears twice; ids must be unique."
            )
        seen.add(rid)
        used = {
            *_ID_KEYS,
            *_QUESTION_KEYS,
            *_ANSWER_KEYS,
            *_IMAGE_KEYS,
            *_ORGAN_KEYS,
            "answer_type",
            "conversations",
            "conversatons",
        }
        items.append(
            VQAItem(
                id=rid,
                question=question,
                answer=answer,
                answer_type=_answer_type(atype, where=where),
                image="" if image is None else str(image),
                organ=None if organ is None or str(organ).strip() == "" else str(organ).strip(),
                dataset=str(kind),
                extra={k: v for k, v in record.items() if k not in used},
            )
        )
    if split is not None and not split_used and records:
        warn_ignored("split", f"{path} has no 'phrase_type' field; the file is taken as one split.")
    return items


def _pick_text(record: Mapping[str, Any], keys: Sequence[str], where: str, what: str) -> Any:
    k, v = _first(record, keys)
    if k is None:
        raise DataFormatError(
            f"{where}: expected {what} in one of {list(keys)}, "
            f"but the record has keys {sorted(record)[:12]}. "
            "Name the field explicitly (text_key=...)."
        )
    return v


def _id_and_value(
    key: str | None,
    record: Any,
    id_keys: Sequence[str],
    value_keys: Sequence[str],
    bare: tuple[type, ...],
    *,
    where: str,
    what: str,
) -> tuple[str, Any]:
    """The id (as text) and the value of one record of an id-keyed file.

    A bare value (of a type in ``bare``) under a key of an id -> value mapping is its own
    record; otherwise the record is an object holding the id (or taking the mapping's
    key) and the value under one of ``value_keys``.
    """
    rid: Any
    if key is not None and isinstance(record, bare):
        rid, value = key, record
    elif isinstance(record, Mapping):
        _, rid = _first(record, id_keys)
        rid = key if rid is None else rid
        if rid is None:
            raise DataFormatError(f"{where}: expected an id in one of {list(id_keys)}.")
        value = _pick_text(record, value_keys, where, what)
    else:
        raise DataFormatError(f"{where}: expected a JSON object, but got {type(record).__name__}.")
    return _text(rid, what="the id", where=where), value


def load_predictions(
    path: str | os.PathLike[str],
    *,
    id_key: str | None = None,
    text_key: str | None = None,
) -> dict[str, str]:
    r"""Read model predictions keyed by question id.

    Args:
        path: JSON lines (LLaVA-Med's ``{"question_id": ..., "text": ...}``), a JSON array of such
            records, or a JSON object mapping id -> text.
        id_key: Field holding the id (default: the first of ``question_id``, ``qid``, ``id``).
        text_key: Field holding the text (default: the first of ``text``, ``prediction``, ``pred``,
            ``answer``, ``output``, ``response``).

    Returns:
        ``{question id: prediction text}``.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When a record lacks an id or a text, or an id repeats.

    Examples:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "answers.jsonl"
        >>> _ = p.write_text('{"question_id": 7, "text": "Yes"}\n'
        ...                  '{"question_id": 8, "text": "liver"}\n')
        >>> load_predictions(p)
        {'7': 'Yes', '8': 'liver'}
    """
    out: dict[str, str] = {}
    id_keys = (id_key,) if id_key else _ID_KEYS
    text_keys = (text_key,) if text_key else _PREDICTION_KEYS
    for index, (key, record) in enumerate(_read_records(path)):
        where = f"{path}: record {index}"
        rid, text = _id_and_value(
            key, record, id_keys, text_keys, (str,), where=where, what="the predicted text"
        )
        if rid in out:
            raise DataFormatError(
                f"{where}: prediction id {rid!r} appears twice; ids must be unique."
            )
        out[rid] = _text(text, what="the predicted text", where=where)
    return out


def load_texts(
    path: str | os.PathLike[str],
    *,
    id_key: str | None = None,
    text_key: str | None = None,
) -> dict[str, list[str]]:
    """Read reference texts (e.g. radiology reports) keyed by id; a record may hold several.

    Args:
        path: JSON lines, a JSON array of records, or a JSON object mapping id -> text(s).
        id_key: Field holding the id (default: the first of ``question_id``, ``qid``, ``id``).
        text_key: Field holding the text or a list of texts (default: the first of
            ``report``, ``findings``, ``text``, ``reference``, ``references``, ``caption``,
            ``impression``).

    Returns:
        ``{id: [text, ...]}``.

    Raises:
        MissingFileError: When the file does not exist.
        DataFormatError: When a record lacks an id or text, a text is empty, or an id repeats.

    Examples:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "refs.json"
        >>> _ = p.write_text('{"s1": "No acute disease.", '
        ...                  '"s2": ["Clear lungs.", "Lungs are clear."]}')
        >>> load_texts(p)
        {'s1': ['No acute disease.'], 's2': ['Clear lungs.', 'Lungs are clear.']}
    """
    out: dict[str, list[str]] = {}
    id_keys = (id_key,) if id_key else _ID_KEYS
    text_keys = (text_key,) if text_key else _REPORT_KEYS
    for index, (key, record) in enumerate(_read_records(path)):
        where = f"{path}: record {index}"
        rid, value = _id_and_value(
            key, record, id_keys, text_keys, (str, list), where=where, what="the text"
        )
        values = value if isinstance(value, list) else [value]
        texts = [_text(v, what="the text", where=where) for v in values]
        if not texts:
            raise DataFormatError(
                f"{where}: expected at least one text for id {rid!r}, but got an empty list."
            )
        if rid in out:
            raise DataFormatError(f"{where}: id {rid!r} appears twice; ids must be unique.")
        out[rid] = texts
    return out


def load_records(
    path: str | os.PathLike[str], *, id_key: str | None = None
) -> list[dict[str, Any]]:
    """Read records (JSON objects) from a JSON / JSONL file and give each a string ``id``.

    Used for grounding targets and predictions. The id is taken from ``id_key``, else
    the first of the usual id keys, else the key of a JSON object of records; a plain
    string record becomes ``{"text": ...}``.

    Args:
        path: A JSON list or object of records, or a JSONL file.
        id_key: The key holding each record's id.

    Returns:
        The records, each with a unique string ``id``.

    Raises:
        DataFormatError: When a record is not an object, has no id, or repeats an id.
    """
    id_keys = (id_key,) if id_key else _ID_KEYS
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, (key, record) in enumerate(_read_records(path)):
        where = f"{path}: record {index}"
        if isinstance(record, str) and key is not None:
            record = {"text": record}
        if not isinstance(record, Mapping):
            raise DataFormatError(
                f"{where}: expected a JSON object, but got {type(record).__name__}."
            )
        _, rid = _first(record, id_keys)
        rid = key if rid is None else rid
        if rid is None:
            raise DataFormatError(f"{where}: expected an id in one of {list(id_keys)}.")
        rid = _text(rid, what="the id", where=where)
        if rid in seen:
            raise DataFormatError(f"{where}: id {rid!r} appears twice; ids must be unique.")
        seen.add(rid)
        out.append({**record, "id": rid})
    return out
