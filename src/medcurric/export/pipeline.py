"""Export accepted samples per stage in several formats at once: :func:`export_samples`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcurric._optional import require
from medcurric._options import StrEnum, look_up_option
from medcurric.cot.records import CoTSample
from medcurric.curriculum import EasyPromptBox
from medcurric.export.formats import (
    llamafactory_dataset_info,
    to_hf_dataset,
    to_llava_json,
    to_parquet,
    to_sharegpt_json,
)
from medcurric.export.rows import ImageMode, export_rows, image_path, read_samples
from medcurric.stage import Stage

__all__ = ["ExportFormat", "ExportSummary", "export_samples"]


class ExportFormat(StrEnum):
    """Formats written by :func:`export_samples`."""

    LLAVA = "llava"
    SHAREGPT = "sharegpt"
    PARQUET = "parquet"
    HF = "hf"


#: The JSON formats, which always reference image files.
_JSON_FORMATS = frozenset({ExportFormat.LLAVA, ExportFormat.SHAREGPT})


@dataclass
class ExportSummary:
    """What :func:`export_samples` wrote.

    Attributes:
        out_dir: The export folder.
        counts: Stage -> number of samples exported for it.
        rejected: Rejected samples left out.
        files: Every file or folder written (images excepted), relative to ``out_dir``.
    """

    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    files: list[str] = field(default_factory=list)


def _stage_pool(samples: Sequence[CoTSample], stage: Stage, own: bool) -> list[CoTSample]:
    """The trainer's rule: a stage's own samples (``sample.stage``), or all when it has none."""
    mine = [s for s in samples if s.stage == stage.value]
    return mine if (own and mine) else list(samples)


def export_samples(
    samples: str | os.PathLike[str] | Iterable[CoTSample | Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    formats: Iterable[ExportFormat | str] = tuple(ExportFormat),
    stages: Iterable[Stage | str] = tuple(Stage),
    images: ImageMode | str = ImageMode.REFERENCE,
    image_root: str | os.PathLike[str] | None = None,
    overlay: Any = None,
    easy_prompt_box: EasyPromptBox | str = EasyPromptBox.APPEND,
    stage_pools: bool = True,
) -> ExportSummary:
    """Export accepted samples for other trainers, one file (or dataset split) per stage.

    Every sample is rendered with :func:`medcurric.curriculum.render`, so prompts, targets
    and pixels (the Easy overlay drawn in) are the library trainer's. Written under ``out_dir``:

    * ``images/<stage>/<id>.png``: the rendered images (unless only embedded tables are asked for);
    * ``llava_<stage>.json``: LLaVA conversations (image paths relative to ``out_dir``);
    * ``sharegpt_<stage>.json`` and ``dataset_info.json``: ShareGPT for LLaMA-Factory / ms-swift;
    * ``parquet/<stage>.parquet``: one table per stage;
    * ``hf/``: a ``datasets.DatasetDict`` with one split per stage (``save_to_disk``).

    Medium's attention target is not exported (no outside format carries it): there,
    Medium trains as Easy's text on the clean image.

    Args:
        samples: A samples JSONL (as ``medcurric generate`` writes) or records/dicts.
            Rejected samples are left out.
        out_dir: The export folder (created).
        formats: Any of ``"llava"``, ``"sharegpt"``, ``"parquet"``, ``"hf"``.
        stages: The stages to export.
        images: ``"reference"`` (paths) or ``"embed"`` (PNG bytes in Parquet / ``datasets``).
        image_root: Folder the samples' image paths are relative to.
        overlay: The Easy :class:`~medcurric.overlay.StageOverlay`; the default one when ``None``.
        easy_prompt_box: Passed to :func:`~medcurric.curriculum.render`.
        stage_pools: As the trainer's ``stage_pools``: each stage exports the samples generated
            for it (or all when it has none); ``False`` renders every sample for every stage.

    Returns:
        An :class:`ExportSummary`.

    Raises:
        MissingDependencyError: Parquet needs pyarrow, ``"hf"`` needs datasets
            (``pip install 'medcurric[export]'``); checked before any work.
        UnsafePathError: A sample id or image name leaves its folder.
        InvalidOptionError: An unknown format, stage or image mode.
    """
    chosen = list(dict.fromkeys(look_up_option(f, ExportFormat, name="formats") for f in formats))
    wanted = list(dict.fromkeys(look_up_option(s, Stage, name="stages") for s in stages))
    mode = look_up_option(images, ImageMode, name="images")
    if ExportFormat.PARQUET in chosen:
        require("pyarrow.parquet", feature="export_samples(formats=['parquet'])")
    if ExportFormat.HF in chosen:
        require("datasets", feature="export_samples(formats=['hf'])")
    everything = read_samples(samples)
    accepted = [s for s in everything if s.accepted]
    out = Path(out_dir)
    pools = {stage: _stage_pool(accepted, stage, stage_pools) for stage in wanted}
    for stage, pool in pools.items():  # every id checked before anything is written
        for sample in pool:
            image_path(out, stage, sample.id)
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out_dir=out, rejected=len(everything) - len(accepted))
    write_images = mode is ImageMode.REFERENCE or any(f in _JSON_FORMATS for f in chosen)
    splits: dict[str, Any] = {}
    sharegpt_files: dict[str, str] = {}
    for stage in wanted:
        rows = export_rows(
            pools[stage],
            out,
            stage=stage,
            image_root=image_root,
            images=mode,
            write_images=write_images,
            overlay=overlay,
            easy_prompt_box=easy_prompt_box,
        )
        summary.counts[stage.value] = len(rows)
        if ExportFormat.LLAVA in chosen:
            name = f"llava_{stage.value}.json"
            to_llava_json(rows, out / name)
            summary.files.append(name)
        if ExportFormat.SHAREGPT in chosen:
            name = f"sharegpt_{stage.value}.json"
            to_sharegpt_json(rows, out / name)
            sharegpt_files[f"medcurric_{stage.value}"] = name
            summary.files.append(name)
        if ExportFormat.PARQUET in chosen:
            name = f"parquet/{stage.value}.parquet"
            to_parquet(rows, out / name)
            summary.files.append(name)
        if ExportFormat.HF in chosen:
            splits[stage.value] = to_hf_dataset(rows)
    if sharegpt_files:
        info = llamafactory_dataset_info(sharegpt_files)
        (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        summary.files.append("dataset_info.json")
    if ExportFormat.HF in chosen:
        datasets = require("datasets", feature="export_samples(formats=['hf'])")
        # one shard even for an empty split: with none, load_from_disk cannot read it back
        shards = {name: None if split.num_rows else 1 for name, split in splits.items()}
        datasets.DatasetDict(splits).save_to_disk(os.fspath(out / "hf"), num_shards=shards)
        summary.files.append("hf")
    return summary
