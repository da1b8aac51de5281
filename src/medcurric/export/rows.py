"""Accepted samples rendered for one stage: the rows every export format is written from."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcurric._jsonl import read_jsonl
from medcurric._options import StrEnum, look_up_option
from medcurric._paths import safe_join
from medcurric.cot.records import CoTSample
from medcurric.curriculum import EasyPromptBox, render
from medcurric.errors import DataFormatError, WrongTypeError
from medcurric.stage import Stage

__all__ = ["ExportRow", "ImageMode", "export_rows", "image_path", "read_samples"]

#: Folder (under the export folder) that holds the rendered images, one sub-folder per stage.
IMAGES_DIR = "images"


class ImageMode(StrEnum):
    """How Parquet and ``datasets`` exports carry images.

    * ``REFERENCE``: a path relative to the export folder, where the rendered PNG is written.
    * ``EMBED``: the PNG bytes inside the table (the ``datasets`` ``Image`` layout,
      ``{"bytes", "path"}``). The JSON formats always reference files.
    """

    REFERENCE = "reference"
    EMBED = "embed"


@dataclass(frozen=True)
class ExportRow:
    r"""One accepted sample as one stage trains it, ready for any export format.

    The texts are those of :func:`medcurric.curriculum.render`, so an export teaches
    what the library's own trainer teaches.

    Attributes:
        id: The sample's id.
        stage: ``"easy"``, ``"medium"`` or ``"hard"``.
        prompt: ``render().prompt``: VIP-LLaVA's template around the question.
        question: ``render().question``: the question, with the box cited for Easy.
        target: ``render().target``: ``"Reasoning: ...\n\nAnswer: ..."`` or ``"Answer: ..."`` (Hard).
        answer: The answer text.
        rationale: The rationale; ``None`` for Hard.
        image: Path of the rendered PNG, relative to the export folder (``images/<stage>/<id>.png``).
        image_bytes: The PNG bytes when embedded, else ``None``.
        source_image: ``sample.image``, the image the rendering was made from.
        question_type: ``"open"`` or ``"closed"``.
        organ: The host organ, if any.
        lesion_type: The lesion type.
        box_norm: The normalised box (Easy, Medium), else ``None``.
        phrase: How the Easy question names the drawn shape, else ``None``.
    """

    id: str
    stage: str
    prompt: str
    question: str
    target: str
    answer: str
    rationale: str | None
    image: str
    image_bytes: bytes | None
    source_image: str
    question_type: str
    organ: str | None
    lesion_type: str
    box_norm: tuple[float, ...] | None
    phrase: str | None


def read_samples(
    source: str | os.PathLike[str] | Iterable[CoTSample | Mapping[str, Any]],
) -> list[CoTSample]:
    """Load samples from a JSONL path (as ``medcurric generate`` writes) or an iterable.

    Args:
        source: A path, or :class:`~medcurric.cot.records.CoTSample` records or their dicts.

    Returns:
        The samples in order, rejected ones included (see :func:`export_rows`).

    Raises:
        MissingFileError: The path does not exist.
        DataFormatError: A line or dict is not a sample.
        WrongTypeError: An item is neither a sample nor a dict.
    """
    items: Iterable[Any] = read_jsonl(source) if isinstance(source, (str, os.PathLike)) else source
    out: list[CoTSample] = []
    for item in items:
        if isinstance(item, CoTSample):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(CoTSample.from_dict(dict(item)))
        else:
            raise WrongTypeError(f"Expected CoTSample records or dicts, but got {type(item).__name__}.")
    return out


def image_path(out_dir: str | os.PathLike[str], stage: Stage | str, sample_id: str) -> str:
    """The relative path of a sample's rendered image, checked to stay inside ``out_dir``.

    Args:
        out_dir: The export folder.
        stage: The stage rendered.
        sample_id: The sample's id (untrusted text).

    Returns:
        ``images/<stage>/<id>.png`` as a POSIX path relative to ``out_dir``.

    Raises:
        UnsafePathError: The id would name a path outside ``out_dir/images/<stage>``.

    Examples:
        >>> image_path("out", "easy", "s1")
        'images/easy/s1.png'
    """
    st = look_up_option(stage, Stage, name="stage")
    folder = safe_join(out_dir, f"{IMAGES_DIR}/{st.value}")
    if not sample_id or sample_id.strip(". ") == "" or "\\" in sample_id:
        raise DataFormatError(
            f"Expected a sample id usable as a file name, but got {sample_id!r}; ids name the exported images."
        )
    path = safe_join(folder, f"{sample_id}.png")
    return path.relative_to(Path(out_dir).resolve()).as_posix()


def export_rows(
    samples: Iterable[CoTSample | Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    stage: Stage | str,
    image_root: str | os.PathLike[str] | None = None,
    images: ImageMode | str = ImageMode.REFERENCE,
    write_images: bool = True,
    overlay: Any = None,
    easy_prompt_box: EasyPromptBox | str = EasyPromptBox.APPEND,
) -> list[ExportRow]:
    """Render accepted samples for one stage and write their images as PNG.

    Each sample goes through :func:`medcurric.curriculum.render` (Easy: the overlay drawn
    on the image and the box cited in the question), so texts and pixels are the trainer's.
    Rejected samples (``accepted`` false) are left out.

    Args:
        samples: The samples (records or dicts).
        out_dir: The export folder; images go to ``images/<stage>/<id>.png`` under it.
        stage: The stage to render every sample for.
        image_root: Folder the samples' image paths are relative to.
        images: ``"embed"`` keeps the PNG bytes on each row; ``"reference"`` does not.
        write_images: Write the PNG files (needed by references and the JSON formats).
        overlay: The Easy :class:`~medcurric.overlay.StageOverlay`; the default one when ``None``.
        easy_prompt_box: Passed to :func:`~medcurric.curriculum.render`.

    Returns:
        One :class:`ExportRow` per accepted sample, in order.

    Raises:
        UnsafePathError: A sample id or image name leaves its folder.
        DataFormatError: Two accepted samples share an id (their images would collide).
        MissingFileError: An image is missing under ``image_root``.
    """
    st = look_up_option(stage, Stage, name="stage")
    mode = look_up_option(images, ImageMode, name="images")
    rows: list[ExportRow] = []
    seen: set[str] = set()
    for sample in read_samples(samples):
        if not sample.accepted:
            continue
        if sample.id in seen:
            raise DataFormatError(
                f"Expected unique sample ids, but {sample.id!r} occurs twice among the {st.value} samples."
            )
        seen.add(sample.id)
        relative = image_path(out_dir, st, sample.id)
        rendered = render(sample, st, overlay=overlay, image_root=image_root, easy_prompt_box=easy_prompt_box)
        buffer = io.BytesIO()
        rendered.image.save(buffer, format="PNG")
        png = buffer.getvalue()
        if write_images:
            target = safe_join(out_dir, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(png)
        rows.append(
            ExportRow(
                id=sample.id,
                stage=st.value,
                prompt=rendered.prompt,
                question=rendered.question,
                target=rendered.target,
                answer=rendered.answer,
                rationale=rendered.rationale,
                image=relative,
                image_bytes=png if mode is ImageMode.EMBED else None,
                source_image=sample.image,
                question_type=sample.question_type,
                organ=sample.organ,
                lesion_type=sample.lesion_type,
                box_norm=rendered.box_norm,
                phrase=rendered.phrase,
            )
        )
    return rows
