"""CoTGenerator: factual seeds in, validated QA + chain-of-thought samples out, resumably.

For each seed, stage and question type the generator picks a template, fills it
with the seed's facts, asks the backend, parses the reply (re-asking a bounded
number of times when it cannot be parsed), validates the sample against the seed
and writes it to the samples file when every check passes, else to the rejects
file with its verdicts and the reason.

Ids are stable: ``sample_id(seed id, stage, template id, backend, model)`` is a
SHA-256 digest, so a rerun over the same seeds skips every sample already in either
file (never duplicating one), and ``--shard i/n`` workers split seeds by a stable
hash of the seed id. Both files are append-only JSON lines, flushed line by line,
so a run killed at any moment loses nothing already written. A request that fails
for good (server down, retries exhausted) or a seed whose image cannot be read is
*not* written anywhere: it is counted in :class:`RunSummary` and tried again by the
next run.

Unmatched seeds (organ ``None``) get the ``matched=False`` templates: questions
about the lesion itself (what it is, whether it is there) whose rationales must not
claim any organ; validation checks that they do not. Seeds whose lesion lies
*next to* its organ (outcome ``"adjacent"``) are described as "adjacent to the
<organ>", and their closed questions ask whether the lesion is in that organ,
answered "no".

Two switches reproduce the authors' generation where this library deviates (see
:doc:`/faithfulness`): ``medium_cites_box=True`` gives Medium prompts the box and asks
the rationale to mention it (the library's Medium localises by anatomy alone), and
``hard_asks_location=False`` writes Hard pairs without any location (the library's
Hard asks where the lesion is), which hold for any image of the same domain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcurric._jsonl import JsonlWriter
from medcurric._options import look_up_option
from medcurric._paths import safe_join
from medcurric.cot.backends import Backend, Completion, GenerationRequest
from medcurric.cot.parsing import ParsedReply, parse_reply
from medcurric.cot.records import CoTSample, Verdict
from medcurric.cot.templates import (
    PromptTemplate,
    QuestionType,
    _check_templates,
    default_templates,
    reply_format,
)
from medcurric.cot.validation import OrganLexicon, validate_sample
from medcurric.errors import (
    DataFormatError,
    InvalidOptionError,
    MedcurricError,
    MissingFileError,
    WrongTypeError,
)
from medcurric.io.images import MAX_PIXELS
from medcurric.seeds.pipeline import rejects_path as default_rejects_path
from medcurric.seeds.records import FactualSeed
from medcurric.seeds.templates import lesion_at
from medcurric.stage import Stage

__all__ = ["CoTGenerator", "RunSummary", "parse_shard", "sample_id", "seeds_of_shard", "shard_of"]

logger = logging.getLogger(__name__)


def _digest(*parts: str) -> str:
    blob = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sample_id(seed_id: str, stage: str, template_id: str, backend: str, model: str = "") -> str:
    """Return the stable id of a sample: 24 hex digits of SHA-256 over its identity.

    Examples:
        >>> from medcurric.cot import sample_id
        >>> sample_id("les-1", "easy", "easy-open-v1", "template")
        '...'
        >>> len(sample_id("les-1", "easy", "easy-open-v1", "template"))
        24
        >>> sample_id("a", "easy", "t", "b") == sample_id("a", "easy", "t", "b")
        True
    """
    return _digest("sample", str(seed_id), str(stage), str(template_id), str(backend), str(model))[
        :24
    ]


def shard_of(seed_id: str, count: int) -> int:
    """Return which of ``count`` shards a seed belongs to (stable across runs and machines).

    Examples:
        >>> from medcurric.cot import shard_of
        >>> shard_of("les-1", 4) == shard_of("les-1", 4)
        True
        >>> sorted({shard_of(str(i), 3) for i in range(50)})
        [0, 1, 2]
    """
    if count < 1:
        raise InvalidOptionError(f"Expected a shard count >= 1, but got {count}.")
    return int(_digest("shard", str(seed_id))[:16], 16) % count


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0-based shard ``i`` of ``n``).

    Examples:
        >>> from medcurric.cot import parse_shard
        >>> parse_shard("1/4")
        (1, 4)
        >>> parse_shard("4/4")
        Traceback (most recent call last):
        ...
        medcurric.errors.InvalidOptionError: Expected --shard as 'i/n' with 0 <= i < n, ...
    """
    try:
        i_text, n_text = str(text).split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        i, n = -1, 0
    if n < 1 or not 0 <= i < n:
        raise InvalidOptionError(f"Expected --shard as 'i/n' with 0 <= i < n, but got {text!r}.")
    return i, n


def seeds_of_shard(
    seeds: Iterable[FactualSeed], shard: tuple[int, int] | str = (0, 1), limit: int | None = None
) -> list[FactualSeed]:
    """The seeds one worker of a sharded run takes: ``shard_of(seed.id, n) == i``, at most ``limit``.

    Args:
        seeds: All the seeds, in their order.
        shard: ``(i, n)`` or ``"i/n"``.
        limit: At most this many seeds of the shard.

    Raises:
        InvalidOptionError: When ``shard`` is not ``0 <= i < n`` or ``limit`` is negative.

    Examples:
        >>> from types import SimpleNamespace
        >>> seeds = [SimpleNamespace(id=f"s{k}") for k in range(10)]
        >>> halves = [seeds_of_shard(seeds, (i, 2)) for i in range(2)]
        >>> sorted(s.id for half in halves for s in half) == sorted(s.id for s in seeds)
        True
        >>> len(seeds_of_shard(seeds, "0/1", limit=3))
        3
    """
    index, count = parse_shard(shard) if isinstance(shard, str) else (int(shard[0]), int(shard[1]))
    if count < 1 or not 0 <= index < count:
        raise InvalidOptionError(f"Expected shard (i, n) with 0 <= i < n, but got {(index, count)}.")
    if limit is not None and limit < 0:
        raise InvalidOptionError(f"Expected limit >= 0, but got {limit}.")
    mine = [s for s in seeds if shard_of(s.id, count) == index]
    return mine if limit is None else mine[:limit]


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        planned: Samples this run was responsible for (after sharding and the limit).
        skipped: Of those, already present in the samples or rejects file.
        accepted: Written to the samples file by this run.
        rejected: Written to the rejects file by this run (an image that cannot be decoded
            rejects its seed's samples, naming the file).
        failed: Not written (request failed for good, missing image); a rerun retries them.
        reasked: Re-asks sent after unparseable replies.
        errors: The first few failure messages.
        accepted_before: Of ``skipped``, samples an earlier run accepted.
        rejected_before: Of ``skipped``, samples an earlier run rejected.
    """

    planned: int = 0
    skipped: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    reasked: int = 0
    errors: list[str] = field(default_factory=list)
    accepted_before: int = 0
    rejected_before: int = 0

    @property
    def accept_rate(self) -> float:
        """Accepted / judged over the planned samples, earlier runs' included (0 when none).

        A resumed run reports the rate of everything in its files, not of the few
        samples it judged itself.
        """
        accepted = self.accepted + self.accepted_before
        judged = accepted + self.rejected + self.rejected_before
        return accepted / judged if judged else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON types."""
        return {
            "planned": self.planned,
            "skipped": self.skipped,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "failed": self.failed,
            "reasked": self.reasked,
            "accepted_before": self.accepted_before,
            "rejected_before": self.rejected_before,
            "accept_rate": round(self.accept_rate, 4),
            "errors": list(self.errors),
        }


@dataclass
class _Job:
    request: GenerationRequest
    seed: FactualSeed
    template: PromptTemplate
    box: tuple[float, ...] | None
    box_norm: tuple[float, ...] | None
    image_size: tuple[int, int] | None
    extra: dict[str, Any]
    reasks: int = 0
    attempts: int = 0


@dataclass
class _Failure:
    request_id: str
    message: str
    count: int = 1


_Outcome = CoTSample | _Failure


class _UnreadableImage(DataFormatError):
    """A seed's image exists but cannot be decoded: its samples are rejected, not retried."""


def _read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, refusing one too large to decode or cut short.

    Only the header is parsed and the chunks' checksums checked (``Image.verify``): no
    pixels are inflated, so a 100-byte PNG claiming 100000 x 100000 pixels costs nothing.
    """
    from PIL import Image

    if not path.is_file():  # may appear later (a mount, a copy): a failure, retried
        raise MissingFileError(f"Expected an image at '{path}', but it does not exist.")
    try:
        with Image.open(path) as im:
            width, height = int(im.width), int(im.height)
            if width * height > MAX_PIXELS:
                raise _UnreadableImage(
                    f"image '{path}' is {width} x {height} pixels; expected at most "
                    f"{MAX_PIXELS} pixels (a decompression bomb, or not an image to train on)."
                )
            im.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, _UnreadableImage):
            raise
        raise _UnreadableImage(f"image '{path}' cannot be read: {exc}") from exc
    return width, height


def _stable_pick(options: Sequence[Any], *key: str) -> Any:
    return options[int(_digest("pick", *key)[:12], 16) % len(options)]


def _default_lexicon(seeds_organs: Iterable[str]) -> OrganLexicon:
    try:
        from medcurric.anatomy import ClassMap  # type: ignore[attr-defined]

        return OrganLexicon.from_vocabulary(ClassMap.totalsegmentator())
    except (ImportError, AttributeError, MedcurricError):
        return OrganLexicon({n: [] for n in seeds_organs})


class CoTGenerator:
    """Generate stage-specific QA pairs with grounded rationales from factual seeds.

    Args:
        backend: A :class:`~medcurric.cot.backends.Backend` (template, transformers, OpenAI).
        templates: Prompt templates; by default :func:`~medcurric.cot.templates.default_templates`.
            For each (stage, question type, matched/unmatched) the template is chosen by a stable
            hash of the seed id among those that fit.
        vocabulary: Organ names and synonyms for validation and closed-question distractors: a
            :class:`medcurric.anatomy.ClassMap`, an :class:`~medcurric.cot.validation.OrganLexicon`
            or a dict of organ -> synonyms. By default the TotalSegmentator class map.
        stages: Stages to generate.
        question_types: Question types to generate.
        image_root: Directory the seeds' image paths are relative to (joined with
            :func:`~medcurric._paths.safe_join`). Needed by backends that send pixels, and for
            Easy samples unless seeds carry ``image_size = (width, height)``.
        max_reasks: Re-asks after an unparseable reply before the sample is rejected.
        box_tolerance: Largest per-coordinate error of the cited normalised box (Easy).
        chunk_size: Requests handed to the backend at once (default: 16 x its concurrency or 64).
        closed_yes_fraction: Share of closed questions that ask about the host organ (answer
            yes); the rest ask about a distractor organ (answer no).
        medium_cites_box: Deviation switch, off by default. ``True`` fills ``{box}`` in Medium
            prompts and, without ``templates``, uses the authors' Medium prompt (the box is
            given and the rationale mentions it; ``default_templates(medium_cites_box=True)``).
        hard_asks_location: Deviation switch, on by default. ``False`` writes the authors'
            Hard stage: every seed gets the ``matched=False`` Hard templates (by default
            ``hard-*-nolocation-v1``), and the samples carry ``organ=None`` (the host organ
            moves to ``extra["host_organ"]``), so validation rejects any organ claim and the
            pair stays true beside another image of the domain.

    Examples:
        >>> from medcurric.cot import CoTGenerator, TemplateBackend
        >>> from medcurric.seeds.records import FactualSeed
        >>> seed = FactualSeed(id="les-1", text="a 14 mm cyst in the right part of the liver",
        ...     lesion_type="cyst", organ="liver", organ_label=5, outcome="inside", score=0.9,
        ...     criterion="ioa", image="ct/001.png", box=(10.0, 20.0, 30.0, 40.0),
        ...     location_phrase="right part of the", image_size=(100, 100))
        >>> gen = CoTGenerator(TemplateBackend(), vocabulary={"liver": ["hepatic"], "spleen": []})
        >>> samples = list(gen.generate([seed]))
        >>> len(samples), all(s.accepted for s in samples)
        (6, True)
        >>> easy = [s for s in samples if s.stage == "easy" and s.question_type == "open"][0]
        >>> easy.box_norm
        (0.1, 0.2, 0.3, 0.4)
        >>> "[0.1000, 0.2000, 0.3000, 0.4000]" in easy.rationale
        True
    """

    def __init__(
        self,
        backend: Backend,
        *,
        templates: Iterable[PromptTemplate] | None = None,
        vocabulary: Any = None,
        stages: Iterable[Stage | str] = (Stage.EASY, Stage.MEDIUM, Stage.HARD),
        question_types: Iterable[QuestionType | str] = (QuestionType.OPEN, QuestionType.CLOSED),
        image_root: str | os.PathLike[str] | None = None,
        max_reasks: int = 1,
        box_tolerance: float = 0.02,
        chunk_size: int | None = None,
        closed_yes_fraction: float = 0.5,
        medium_cites_box: bool = False,
        hard_asks_location: bool = True,
    ) -> None:
        for attr in ("name", "model_name", "needs_images", "complete"):
            if not hasattr(backend, attr):
                raise WrongTypeError(
                    f"Expected a backend with name, model_name, needs_images and complete(), but "
                    f"{type(backend).__name__} has no {attr!r}."
                )
        self.backend = backend
        self.medium_cites_box = bool(medium_cites_box)
        self.hard_asks_location = bool(hard_asks_location)
        self.templates = _check_templates(
            templates
            if templates is not None
            else default_templates(
                medium_cites_box=self.medium_cites_box, hard_asks_location=self.hard_asks_location
            )
        )
        self.stages = tuple(dict.fromkeys(look_up_option(s, Stage, name="stage") for s in stages))
        self.question_types = tuple(
            dict.fromkeys(
                look_up_option(q, QuestionType, name="question_type") for q in question_types
            )
        )
        if not self.stages or not self.question_types:
            raise InvalidOptionError(
                "Expected at least one stage and one question type, but got none."
            )
        if max_reasks < 0 or not 0.0 <= closed_yes_fraction <= 1.0 or box_tolerance < 0:
            raise InvalidOptionError(
                "Expected max_reasks >= 0, 0 <= closed_yes_fraction <= 1 and box_tolerance >= 0, "
                f"but got {max_reasks}, {closed_yes_fraction}, {box_tolerance}."
            )
        self._vocabulary = vocabulary
        self._lexicon: OrganLexicon | None = (
            OrganLexicon.from_vocabulary(vocabulary) if vocabulary is not None else None
        )
        self.image_root = Path(image_root) if image_root is not None else None
        self.max_reasks = int(max_reasks)
        self.box_tolerance = float(box_tolerance)
        conc = int(getattr(backend, "concurrency", 0) or 0) or int(
            getattr(backend, "batch_size", 0) or 0
        )
        self.chunk_size = int(chunk_size) if chunk_size else max(64, 16 * conc)
        self.closed_yes_fraction = float(closed_yes_fraction)
        self._size_cache: dict[str, tuple[int, int]] = {}
        self._warned: set[tuple[str, str, bool]] = set()

    def __repr__(self) -> str:
        return (
            f"CoTGenerator(backend={self.backend!r}, stages={[s.value for s in self.stages]}, "
            f"question_types={[q.value for q in self.question_types]}, "
            f"max_reasks={self.max_reasks})"
        )

    # ------------------------------------------------------------------ planning

    def lexicon(self, seeds: Sequence[FactualSeed] = ()) -> OrganLexicon:
        """The organ lexicon used for validation (built on first use)."""
        if self._lexicon is None:
            self._lexicon = _default_lexicon(sorted({s.organ for s in seeds if s.organ}))
        return self._lexicon

    def _located(self, stage: Stage) -> bool:
        """Whether samples of ``stage`` may say where the lesion is (not the authors' Hard)."""
        return self.hard_asks_location or stage is not Stage.HARD

    def _cites_box(self, stage: Stage) -> bool:
        return stage is Stage.EASY or (stage is Stage.MEDIUM and self.medium_cites_box)

    def _template_for(
        self, seed: FactualSeed, stage: Stage, qtype: QuestionType
    ) -> PromptTemplate | None:
        matched = seed.organ is not None and self._located(stage)
        fits = [
            t
            for t in self.templates
            if t.stage is stage and t.question_type is qtype and t.matched == matched
        ]
        if not fits:
            key = (stage.value, qtype.value, matched)
            if key not in self._warned:
                self._warned.add(key)
                logger.warning(
                    "No template for stage=%s question_type=%s matched=%s: samples skipped.",
                    *key,
                )
            return None
        return fits[0] if len(fits) == 1 else _stable_pick(fits, seed.id, stage.value, qtype.value)

    def _image_path(self, seed: FactualSeed) -> Path | None:
        if self.image_root is None:
            return None
        return safe_join(self.image_root, seed.image)

    def _image_size(self, seed: FactualSeed, path: Path | None) -> tuple[int, int] | None:
        if seed.image_size is not None:
            return seed.image_size
        if path is None:
            return None
        key = str(path)
        if key not in self._size_cache:
            self._size_cache[key] = _read_image_size(path)
        return self._size_cache[key]

    def _fields(
        self,
        seed: FactualSeed,
        stage: Stage,
        qtype: QuestionType,
        lexicon: OrganLexicon,
        box_norm: tuple[float, ...] | None,
        size: tuple[int, int] | None,
    ) -> tuple[dict[str, str], dict[str, Any]]:
        host = seed.organ if self._located(stage) else None
        organ = lexicon.display_name(host) if host else ""
        adjacent = host is not None and seed.outcome == "adjacent"
        phrase = "" if adjacent else " ".join(seed.location_phrase.split())
        if organ:
            location = f"the {phrase} {organ}" if phrase else f"the {organ}"
            location = location.replace("the the ", "the ")
        else:
            location = "an undetermined location"
        queried, expected = organ, "no" if adjacent else "yes"
        if host is not None and qtype is QuestionType.CLOSED and not adjacent:
            names = set(lexicon.synonyms(host)) | {host}
            # a distractor the lesion phrase names ("a liver lesion" -> the liver) would make
            # "Is there a liver lesion in the liver?" answered "no": leave those out
            others = [
                n
                for n in lexicon.names
                if n != host
                and not names & set(lexicon.synonyms(n))
                and _lesion_for(seed.lesion_phrase, n, lexicon) == seed.lesion_phrase
            ]
            u = int(_digest("closed", seed.id, stage.value)[:12], 16) / float(16**12)
            if others and u >= self.closed_yes_fraction:
                queried = lexicon.display_name(
                    _stable_pick(others, seed.id, stage.value, "distractor")
                )
                expected = "no"
        size_text = ""
        if seed.size_mm is not None:
            long_ax, short_ax = seed.size_mm
            size_text = f"{long_ax:.0f} x {short_ax:.0f} mm"
        box_text = ""
        if self._cites_box(stage) and box_norm is not None:
            box_text = "[" + ", ".join(f"{v:.4f}" for v in box_norm) + "]"
        lesion = _lesion_for(seed.lesion_phrase, seed.organ, lexicon)
        fields = {
            "seed_text": seed.text,
            "lesion": lesion,
            "lesion_noun": _without_article(lesion),
            "organ": organ,
            "location": location,
            "relation": "adjacent to" if adjacent else "in",
            "size": size_text,
            "box": box_text,
            "image_width": str(size[0]) if size else "unknown",
            "image_height": str(size[1]) if size else "unknown",
            "modality": seed.modality,
            "queried_organ": queried,
            "expected_answer": expected,
            "stage": stage.value,
            "question_type": qtype.value,
            "reply_format": reply_format(stage),
        }
        extra = {"seed_text": seed.text, "outcome": seed.outcome, "lesion_phrase": seed.lesion_phrase}
        if host is None and seed.organ is not None:  # the authors' Hard: no location in the sample
            extra["host_organ"] = seed.organ
        if qtype is QuestionType.CLOSED:
            extra.update(queried_organ=queried, expected_answer=expected)
        return fields, extra

    def requests(self, seed: FactualSeed) -> list[GenerationRequest]:
        """Return the requests the generator would send for one seed.

        Raises:
            MedcurricError: When the seed cannot be prompted (missing image, unknown image size
                for an Easy prompt, unsafe image path).
        """
        return [job.request for job in self._plan(seed, self.lexicon([seed]))]

    def _plan(self, seed: FactualSeed, lexicon: OrganLexicon) -> list[_Job]:
        backend_name, model = str(self.backend.name), str(self.backend.model_name)
        path = self._image_path(seed)
        if self.backend.needs_images and path is None:
            raise InvalidOptionError(
                f"Backend {backend_name!r} sends images, but no image root was given; pass "
                "image_root=... (--images DIR)."
            )
        if self.backend.needs_images and path is not None and not path.is_file():
            raise DataFormatError(f"Seed {seed.id!r}: image '{path}' does not exist.")
        box2d = _in_plane_box(seed.box)
        size: tuple[int, int] | None = None
        box_norm: tuple[float, ...] | None = None
        jobs = []
        for stage in self.stages:
            for qtype in self.question_types:
                template = self._template_for(seed, stage, qtype)
                if template is None:
                    continue
                if size is None and (
                    self._cites_box(stage) or path is not None or seed.image_size is not None
                ):
                    size = self._image_size(seed, path)
                    if size is not None and box2d is not None:
                        w, h = size
                        scale = (w, h, w, h)
                        box_norm = tuple(
                            round(min(max(v / d, 0.0), 1.0), 4)
                            for v, d in zip(box2d, scale, strict=True)
                        )
                if self._cites_box(stage) and box_norm is None:
                    raise DataFormatError(
                        f"Seed {seed.id!r}: the {stage.value.capitalize()} prompt cites the "
                        "normalised box, which needs "
                        "the image size; pass image_root=... (--images DIR) or set the "
                        "seed's image_size."
                    )
                fields, extra = self._fields(seed, stage, qtype, lexicon, box_norm, size)
                system, prompt = template.render(fields)
                rid = sample_id(seed.id, stage.value, template.id, backend_name, model)
                request = GenerationRequest(
                    id=rid,
                    system=system,
                    prompt=prompt,
                    stage=stage,
                    question_type=qtype,
                    template_id=template.id,
                    fields=fields,
                    image_path=path if self.backend.needs_images else None,
                    window=seed.window,
                )
                jobs.append(_Job(request, seed, template, box2d, box_norm, size, extra))
        return jobs

    def _image_rejects(self, seed: FactualSeed, exc: _UnreadableImage) -> list[CoTSample]:
        """The rejected samples of a seed whose image cannot be decoded, one per plan item."""
        backend_name, model = str(self.backend.name), str(self.backend.model_name)
        out = []
        for stage in self.stages:
            for qtype in self.question_types:
                template = self._template_for(seed, stage, qtype)
                if template is None:
                    continue
                rid = sample_id(seed.id, stage.value, template.id, backend_name, model)
                request = GenerationRequest(
                    id=rid, system="", prompt="", stage=stage, question_type=qtype,
                    template_id=template.id,
                )  # fmt: skip
                job = _Job(request, seed, template, _in_plane_box(seed.box), None, None, {})
                verdict = Verdict("image", False, str(exc))
                out.append(self._sample(job, None, "", (verdict,), f"image: {exc}"))
        return out

    # ------------------------------------------------------------------ execution

    def _sample(
        self,
        job: _Job,
        parsed: ParsedReply | None,
        raw: str,
        verdicts: tuple[Verdict, ...],
        reason: str,
    ) -> CoTSample:
        r = job.request
        extra = dict(job.extra)
        if parsed is not None:
            extra["reply_format"] = parsed.format
        return CoTSample(
            id=r.id,
            seed_id=job.seed.id,
            stage=r.stage.value,
            question_type=r.question_type.value,
            question=parsed.question if parsed else "",
            rationale=(parsed.rationale if parsed and r.stage is not Stage.HARD else ""),
            answer=parsed.answer if parsed else "",
            image=job.seed.image,
            box=job.box,
            box_norm=job.box_norm,
            image_size=job.image_size,
            organ=job.seed.organ if self._located(r.stage) else None,
            lesion_type=job.seed.lesion_type or "lesion",
            template=job.template.id,
            backend=str(self.backend.name),
            model=str(self.backend.model_name),
            verdicts=verdicts,
            accepted=not reason,
            raw=raw,
            attempts=job.attempts,
            extra=extra,
            reason=reason,
            window=job.seed.window,
        )

    def _judge(
        self, job: _Job, completion: Completion, lexicon: OrganLexicon
    ) -> _Outcome | GenerationRequest:
        r = job.request
        job.attempts += completion.attempts
        if completion.text is None:
            return _Failure(
                r.id, f"{r.id} (seed {job.seed.id}, {r.stage.value}): {completion.error}"
            )
        raw = completion.text
        try:
            parsed = parse_reply(raw, require_rationale=r.stage is not Stage.HARD)
        except MedcurricError as exc:
            if job.reasks < self.max_reasks:
                job.reasks += 1
                follow = (
                    f"Your reply could not be parsed: {exc} Reply again in exactly this format, "
                    f"on one line: {reply_format(r.stage)}"
                )
                job.request = dataclasses.replace(r, history=(*r.history, (raw[:4000], follow)))
                return job.request
            verdict = Verdict("parse", False, str(exc))
            return self._sample(job, None, raw, (verdict,), f"parse: {exc}")
        draft = self._sample(job, parsed, raw, (), "")
        verdicts = (
            Verdict("parse", True, parsed.format),
            *validate_sample(draft, lexicon=lexicon, box_tolerance=self.box_tolerance),
        )
        failed = [v for v in verdicts if not v.passed]
        reason = "; ".join(f"{v.check}: {v.detail}" for v in failed)
        return self._sample(job, parsed, raw, verdicts, reason)

    def _execute(
        self, jobs: Iterator[_Job | _Outcome], lexicon: OrganLexicon, on_reask: Callable[[], None]
    ) -> Iterator[_Outcome]:
        reasks: deque[_Job] = deque()
        exhausted = False
        while True:
            chunk: dict[str, _Job] = {}
            while reasks and len(chunk) < self.chunk_size:
                job = reasks.popleft()
                chunk[job.request.id] = job
            while not exhausted and len(chunk) < self.chunk_size:
                try:
                    item = next(jobs)
                except StopIteration:
                    exhausted = True
                    break
                if isinstance(item, (_Failure, CoTSample)):  # settled without the backend
                    yield item
                elif item.request.id not in chunk:
                    chunk[item.request.id] = item
            if not chunk:
                return
            pending = dict(chunk)
            for completion in self.backend.complete([j.request for j in chunk.values()]):
                job_or_none = pending.pop(completion.request.id, None)
                if job_or_none is None:
                    continue
                outcome = self._judge(job_or_none, completion, lexicon)
                if isinstance(outcome, GenerationRequest):
                    on_reask()
                    reasks.append(job_or_none)
                else:
                    yield outcome
            for rid, job in pending.items():
                yield _Failure(
                    rid, f"{rid} (seed {job.seed.id}): the backend returned no completion"
                )

    def _jobs(
        self,
        seeds: Iterable[FactualSeed],
        lexicon: OrganLexicon,
        skip: Callable[[str], bool],
        counter: RunSummary,
        on_skip: Callable[[str], None] = lambda _rid: None,
    ) -> Iterator[_Job | _Outcome]:
        planned: set[str] = set()
        for seed in seeds:
            jobs: Sequence[_Job | CoTSample]
            try:
                jobs = self._plan(seed, lexicon)
            except _UnreadableImage as exc:  # for good: reject its samples, naming the file
                jobs = self._image_rejects(seed, exc)
            except MedcurricError as exc:
                if isinstance(exc, InvalidOptionError):
                    raise
                per_seed = len(self.stages) * len(self.question_types)
                counter.planned += per_seed
                yield _Failure(seed.id, f"seed {seed.id}: {exc}", per_seed)
                continue
            for job in jobs:
                counter.planned += 1
                rid = job.id if isinstance(job, CoTSample) else job.request.id
                if rid in planned:  # a repeated seed id is done once
                    counter.skipped += 1
                    on_skip("")
                    continue
                if skip(rid):  # done by an earlier run
                    counter.skipped += 1
                    on_skip(rid)
                    continue
                planned.add(rid)
                yield job

    def generate(self, seeds: Iterable[FactualSeed]) -> Iterator[CoTSample]:
        """Yield every judged sample (accepted and rejected) for ``seeds``, writing no files.

        Failed requests are logged as warnings and not yielded.
        """
        seeds = list(seeds)
        lexicon = self.lexicon(seeds)
        summary = RunSummary()
        for outcome in self._execute(
            self._jobs(seeds, lexicon, lambda _i: False, summary), lexicon, lambda: None
        ):
            if isinstance(outcome, _Failure):
                logger.warning("generation failed: %s", outcome.message)
                continue
            yield outcome

    def run(
        self,
        seeds: Iterable[FactualSeed],
        samples_path: str | os.PathLike[str],
        rejects_path: str | os.PathLike[str] | None = None,
        *,
        shard: tuple[int, int] | str = (0, 1),
        limit: int | None = None,
        progress: bool | None = None,
        fsync: bool = False,
    ) -> RunSummary:
        """Generate into append-only JSON-lines files, resuming where an earlier run stopped.

        Args:
            seeds: Factual seeds (all of them: this worker keeps its shard).
            samples_path: Accepted samples, one JSON line each.
            rejects_path: Rejected samples with their verdicts and reason; by default
                ``<samples stem>.rejects.jsonl`` next to ``samples_path``.
            shard: ``(i, n)`` or ``"i/n"``: keep seeds with ``shard_of(seed.id, n) == i``.
            limit: Process at most this many seeds of the shard.
            progress: Show a tqdm bar on stderr (``None``: only on a terminal).
            fsync: ``os.fsync`` after every line (survives power loss; slower).

        Returns:
            The :class:`RunSummary`.
        """
        mine = seeds_of_shard(seeds, shard, limit)
        samples_path = Path(samples_path)
        if rejects_path is None:
            rejects_path = default_rejects_path(samples_path)
        lexicon = self.lexicon(mine)
        summary = RunSummary()
        from tqdm.auto import tqdm

        total = len(mine) * len(self.stages) * len(self.question_types)
        disable = None if progress is None else not progress
        bar = tqdm(total=total, unit="sample", desc="generate", disable=disable, dynamic_ncols=True)
        with (
            JsonlWriter(samples_path, fsync=fsync) as good,
            JsonlWriter(rejects_path, fsync=fsync) as bad,
        ):

            def skip(rid: str) -> bool:
                return rid in good or rid in bad

            def skipped(rid: str) -> None:
                bar.update(1)
                if rid in good:
                    summary.accepted_before += 1
                elif rid in bad:
                    summary.rejected_before += 1

            def reasked() -> None:
                summary.reasked += 1

            jobs = self._jobs(mine, lexicon, skip, summary, skipped)
            for outcome in self._execute(jobs, lexicon, reasked):
                step = 1
                if isinstance(outcome, _Failure):
                    summary.failed += outcome.count
                    step = outcome.count
                    if len(summary.errors) < 20:
                        summary.errors.append(outcome.message)
                    logger.warning("generation failed: %s", outcome.message)
                elif outcome.accepted:
                    if good.write(outcome):
                        summary.accepted += 1
                elif bad.write(outcome):
                    summary.rejected += 1
                bar.update(step)
                bar.set_postfix(
                    accept=f"{summary.accept_rate:.0%}", failed=summary.failed, refresh=False
                )
        bar.close()
        return summary


def _in_plane_box(box: Sequence[float]) -> tuple[float, ...] | None:
    if len(box) == 4:
        return tuple(float(v) for v in box)
    if len(box) == 6:  # (x1, y1, z1, x2, y2, z2): the key-slice rectangle
        return (float(box[0]), float(box[1]), float(box[3]), float(box[4]))
    return None


def _without_article(phrase: str) -> str:
    """``"a liver lesion"`` -> ``"liver lesion"`` (a phrase without an article is kept)."""
    head, _, rest = phrase.partition(" ")
    return rest if head.lower() in ("a", "an") and rest else phrase


def _lesion_for(phrase: str, organ: str | None, lexicon: OrganLexicon) -> str:
    """The seed's lesion phrase next to ``organ`` (:func:`~medcurric.seeds.templates.lesion_at`)."""
    if organ is None:
        return phrase
    return lesion_at(phrase, (*lexicon.with_organ(organ).synonyms(organ), organ))
