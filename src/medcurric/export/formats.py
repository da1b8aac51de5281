r"""Write :class:`~medcurric.export.rows.ExportRow` lists in the formats other trainers read.

* LLaVA conversation JSON (LLaVA, LLaVA-Med, VIP-LLaVA training scripts):
  ``[{"id", "image", "conversations": [{"from": "human", "value": "<image>\n..."},
  {"from": "gpt", "value": ...}]}]``.
* ShareGPT JSON as LLaMA-Factory and ms-swift read it: ``[{"messages": [{"role", "content"}],
  "images": [...]}]``, plus a LLaMA-Factory ``dataset_info.json`` entry.
* Parquet (pyarrow) and a Hugging Face ``datasets.Dataset``: one row per sample with the
  prompt, target and metadata; the image as a relative path or embedded PNG bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medcurric._optional import require
from medcurric.errors import DataFormatError
from medcurric.export.rows import ExportRow

__all__ = ["llamafactory_dataset_info", "to_hf_dataset", "to_llava_json", "to_parquet", "to_sharegpt_json"]

#: The image placeholder both conversation formats put before the question.
IMAGE_TOKEN = "<image>"

_TEXT_COLUMNS = ("id", "stage", "prompt", "question", "target", "answer")
_OPTIONAL_TEXT_COLUMNS = ("rationale", "source_image", "question_type", "organ", "lesion_type", "phrase")


def _write_json(records: list[dict[str, Any]] | dict[str, Any], path: str | os.PathLike[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def to_llava_json(rows: Sequence[ExportRow], path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    r"""LLaVA conversation records: the human turn is ``"<image>\n" + question``, the reply the target.

    Args:
        rows: Rows of one stage (from :func:`~medcurric.export.export_rows`).
        path: Where to write the JSON list; nothing is written when ``None``.

    Returns:
        The records, with ``image`` relative to the export folder (LLaVA's ``--image_folder``).

    Examples:
        >>> from medcurric.export import ExportRow
        >>> row = ExportRow(id="s1", stage="hard", prompt="", question="Is it a cyst?",
        ...     target="Answer: yes", answer="yes", rationale=None, image="images/hard/s1.png",
        ...     image_bytes=None, source_image="ct.png", question_type="closed", organ="liver",
        ...     lesion_type="cyst", box_norm=None, phrase=None)
        >>> to_llava_json([row])[0]["conversations"][0]["value"]
        '<image>\nIs it a cyst?'
    """
    records = [
        {
            "id": row.id,
            "image": row.image,
            "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{row.question}"},
                {"from": "gpt", "value": row.target},
            ],
        }
        for row in rows
    ]
    if path is not None:
        _write_json(records, path)
    return records


def to_sharegpt_json(rows: Sequence[ExportRow], path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    r"""ShareGPT records (LLaMA-Factory, ms-swift): ``messages`` with ``role``/``content`` and ``images``.

    Args:
        rows: Rows of one stage.
        path: Where to write the JSON list; nothing is written when ``None``.

    Returns:
        The records; ``images`` paths are relative to the export folder (LLaMA-Factory's
        ``dataset_dir`` when ``dataset_info.json`` sits there).
    """
    records = [
        {
            "messages": [
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{row.question}"},
                {"role": "assistant", "content": row.target},
            ],
            "images": [row.image],
        }
        for row in rows
    ]
    if path is not None:
        _write_json(records, path)
    return records


def llamafactory_dataset_info(files: Mapping[str, str]) -> dict[str, Any]:
    """LLaMA-Factory ``dataset_info.json`` entries for ShareGPT files.

    Args:
        files: Dataset name -> ShareGPT JSON file name (relative to the info file's folder).

    Returns:
        The entries, to be written as ``dataset_info.json``.

    Examples:
        >>> llamafactory_dataset_info({"medcurric_easy": "sharegpt_easy.json"})["medcurric_easy"]["formatting"]
        'sharegpt'
    """
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": dict(tags),
        }
        for name, file_name in files.items()
    }


def _embedded(rows: Sequence[ExportRow]) -> bool:
    """Whether the rows carry PNG bytes (all of them) or paths (none of them)."""
    flags = {row.image_bytes is not None for row in rows}
    if len(flags) > 1:
        raise DataFormatError(
            "Expected rows that all embed their image or none, but got a mix; build them with one images= mode."
        )
    return flags == {True}


def _columns(rows: Sequence[ExportRow]) -> dict[str, list[Any]]:
    """Plain columns shared by Parquet and ``datasets``; the image column is added by the caller."""
    names = (*_TEXT_COLUMNS, *_OPTIONAL_TEXT_COLUMNS)
    columns: dict[str, list[Any]] = {name: [getattr(row, name) for row in rows] for name in names}
    columns["box_norm"] = [None if row.box_norm is None else list(row.box_norm) for row in rows]
    return columns


def _arrow_table(rows: Sequence[ExportRow]) -> Any:
    pa = require("pyarrow", feature="to_parquet")
    embed = _embedded(rows)
    fields = [pa.field(name, pa.string(), nullable=False) for name in _TEXT_COLUMNS]
    fields += [pa.field(name, pa.string()) for name in _OPTIONAL_TEXT_COLUMNS]
    fields.append(pa.field("box_norm", pa.list_(pa.float64())))
    columns = _columns(rows)
    if embed:
        fields.append(pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
        columns["image"] = [{"bytes": row.image_bytes, "path": row.image} for row in rows]
    else:
        fields.append(pa.field("image", pa.string()))
        columns["image"] = [row.image for row in rows]
    schema = pa.schema(fields)
    return pa.Table.from_pydict(columns, schema=schema)


def to_parquet(rows: Sequence[ExportRow], path: str | os.PathLike[str]) -> Any:
    """Write the rows as one Parquet file.

    Columns: ``id, stage, prompt, question, target, answer, rationale, source_image,
    question_type, organ, lesion_type, phrase, box_norm`` and ``image``: a path relative to
    the export folder, or ``{"bytes": PNG, "path": ...}`` when embedded (the layout that
    ``datasets.Image`` decodes).

    Args:
        rows: Rows of one stage.
        path: The Parquet file to write.

    Returns:
        The ``pyarrow.Table`` written.

    Raises:
        MissingDependencyError: pyarrow is missing (``pip install 'medcurric[export]'``).
    """
    pq = require("pyarrow.parquet", feature="to_parquet")
    table = _arrow_table(rows)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, p)
    return table


def to_hf_dataset(rows: Sequence[ExportRow], path: str | os.PathLike[str] | None = None) -> Any:
    """The rows as a Hugging Face ``datasets.Dataset`` (in memory), saved with ``save_to_disk`` when asked.

    The columns are those of :func:`to_parquet`; an embedded ``image`` is a
    ``datasets.Image`` feature (decoded to PIL on access), a referenced one a path string.

    Args:
        rows: Rows of one stage.
        path: Folder for ``Dataset.save_to_disk``; nothing is written when ``None``.

    Returns:
        The ``datasets.Dataset``.

    Raises:
        MissingDependencyError: datasets is missing (``pip install 'medcurric[export]'``).
    """
    ds = require("datasets", feature="to_hf_dataset")
    embed = _embedded(rows)
    features = {name: ds.Value("string") for name in (*_TEXT_COLUMNS, *_OPTIONAL_TEXT_COLUMNS)}
    features["box_norm"] = ds.Sequence(ds.Value("float64"))
    columns = _columns(rows)
    if embed:
        features["image"] = ds.Image()
        columns["image"] = [{"bytes": row.image_bytes, "path": row.image} for row in rows]
    else:
        features["image"] = ds.Value("string")
        columns["image"] = [row.image for row in rows]
    dataset = ds.Dataset.from_dict(columns, features=ds.Features(features))
    if path is not None:
        # one shard even when empty: with none, load_from_disk cannot read it back
        dataset.save_to_disk(os.fspath(path), num_shards=None if dataset.num_rows else 1)
    return dataset
