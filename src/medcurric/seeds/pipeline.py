"""Seeds for one label map (:func:`build_seeds`) and for whole datasets (:func:`write_seeds`).

:func:`build_seeds` matches, locates and phrases every lesion of one label map with
one overlap call and one pass for the organs' extents. :func:`write_seeds` runs it
over the cases of a dataset (:func:`medcurric.io.find_cases`), in worker processes if
asked, appending seeds to a JSONL file that a rerun resumes (ids already written are
skipped, a killed run loses no written line) and records that fail to a rejects file
beside it, with their reason, while the run carries on.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medcurric._jsonl import JsonlWriter, read_jsonl
from medcurric.anatomy.location import ViewPlane, describe_location, organ_extents
from medcurric.anatomy.matcher import BoxOrganMatcher
from medcurric.errors import (
    DataFormatError,
    InvalidOptionError,
    MedcurricError,
    MedcurricWarning,
    MissingDependencyError,
)
from medcurric.io.datasets import Case, load_case
from medcurric.io.detections import RecordError
from medcurric.io.records import LabelMap, LesionRecord
from medcurric.seeds.builder import SeedBuilder
from medcurric.seeds.records import FactualSeed
from medcurric.vocabulary.classmap import ClassMap

__all__ = [
    "SeedReject",
    "SeedRunner",
    "SeedsRun",
    "build_seeds",
    "outcome_table",
    "read_seeds",
    "rejects_path",
    "seed_case",
    "summarise",
    "write_seeds",
]


def build_seeds(
    records: Sequence[LesionRecord],
    label_map: LabelMap,
    *,
    matcher: BoxOrganMatcher | None = None,
    builder: SeedBuilder | None = None,
    vertical: bool = True,
    clip: bool = False,
) -> list[FactualSeed]:
    """Match, locate and phrase every lesion of one label map.

    All boxes are matched with one :meth:`~medcurric.anatomy.BoxOrganMatcher.match_records`
    call (one overlap pass over the map) and the organs' extents are computed once
    (:func:`~medcurric.anatomy.location.organ_extents`), so the cost is about one read of
    the label map however many lesions it holds.

    Args:
        records: Lesions on this label map (2D boxes need ``slice_index`` on a volume).
        label_map: The organ label map, in the records' coordinates.
        matcher: The matcher (default ``BoxOrganMatcher()``: ``ioa``, 0.5, 5 mm).
        builder: The seed builder (default ``SeedBuilder()``).
        vertical: Passed to :func:`~medcurric.anatomy.describe_location` (``False`` for slabs).
        clip: Clip boxes that leave the image instead of raising.

    Returns:
        One seed per record, in order.

    Examples:
        >>> from medcurric.testing import make_phantom
        >>> ph = make_phantom()
        >>> seeds = build_seeds(ph.key_slice_lesions, ph.label_map())
        >>> seeds[0].organ, seeds[0].outcome.value
        ('liver', 'inside')
    """
    recs = list(records)
    if not recs:
        return []
    matcher = matcher if matcher is not None else BoxOrganMatcher()
    builder = builder if builder is not None else SeedBuilder()
    matches = matcher.match_records(recs, label_map, clip=clip)
    affine = label_map.affine
    # one pass for every organ's extent; the result keeps each organ's union for the next lesion
    extents = organ_extents(label_map.array, affine) if affine is not None else None
    out = []
    for record, match in zip(recs, matches, strict=True):
        slice_index = record.slice_index if len(record.box) == 4 and label_map.ndim == 3 else None
        location = describe_location(
            record.box,
            label_map,
            match,
            spacing=_spacing(label_map, record),
            slice_index=slice_index,
            extents=extents,
            view=ViewPlane.AXIAL,
            vertical=vertical,
        )
        out.append(builder.build(record, match, location))
    return out


def _spacing(label_map: LabelMap, record: LesionRecord) -> tuple[float, ...] | None:
    if label_map.spacing is not None:
        return label_map.spacing
    if record.spacing is None or len(record.spacing) < label_map.ndim:
        return None
    return tuple(record.spacing[-label_map.ndim :])


@dataclass(frozen=True)
class SeedReject:
    """A lesion record no seed could be made for, and why.

    Attributes:
        record: The record as read from the detection file.
        error: The exception's class name (``MissingFileError`` for a missing mask).
        reason: The exception's message.
    """

    record: LesionRecord
    error: str
    reason: str

    @property
    def id(self) -> str:
        """The record's id."""
        return self.record.id

    def to_dict(self) -> dict[str, Any]:
        """The rejects-file line: ``id``, ``image``, ``error``, ``reason`` and the ``record``."""
        r = self.record
        return {
            "id": r.id,
            "image": r.image,
            "error": self.error,
            "reason": self.reason,
            "record": r.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeedReject:
        """The reject a rejects-file line (:meth:`to_dict`) holds."""
        return cls(LesionRecord.from_dict(data["record"]), str(data["error"]), str(data["reason"]))


def seed_case(
    case: Case,
    *,
    matcher: BoxOrganMatcher | None = None,
    builder: SeedBuilder | None = None,
    class_map: ClassMap | None = None,
    slices_only: bool = False,
    clip: bool = False,
) -> list[FactualSeed | SeedReject]:
    """Seeds (or rejects) for every record of one case, in record order; never raises for data.

    A case whose mask is missing or unreadable rejects all its records; otherwise a
    record that fails on its own is rejected and the others still get their seeds.
    Every reason names the mask file (or the case). Seeds keep the key slice in the
    whole volume, also when ``slices_only`` read a slab.

    Args:
        case: A case from :func:`medcurric.io.find_cases` (or holding its label map).
        matcher: The matcher (default ``BoxOrganMatcher()``).
        builder: The seed builder (default ``SeedBuilder()``).
        class_map: Names of the labels (see :func:`medcurric.io.load_case`).
        slices_only: Read only the slab of slices holding the key slices.
        clip: Clip boxes that leave the image instead of rejecting them.

    Returns:
        One :class:`~medcurric.seeds.FactualSeed` or :class:`SeedReject` per record.

    Raises:
        MissingDependencyError: When reading the mask needs an extra that is not
            installed (every case would fail alike: no reason to carry on).
    """
    if case.error is not None:
        return [SeedReject(r, "MissingFileError", case.error) for r in case.records]
    try:
        loaded = load_case(case, class_map=class_map, slices_only=slices_only)
    except MissingDependencyError:
        raise
    except Exception as exc:  # the whole case is unreadable: reject its records, carry on
        return [SeedReject(r, type(exc).__name__, _naming(case, exc)) for r in case.records]
    matcher = matcher if matcher is not None else BoxOrganMatcher()
    builder = builder if builder is not None else SeedBuilder()

    def whole_volume(seed: FactualSeed) -> FactualSeed:
        if seed.id in loaded.key_slices:
            return replace(seed, slice_index=loaded.key_slices[seed.id])
        return seed

    def build(records: list[LesionRecord]) -> list[FactualSeed]:
        seeds = build_seeds(
            records,
            loaded.label_map,
            matcher=matcher,
            builder=builder,
            vertical=loaded.vertical,
            clip=clip,
        )
        return [whole_volume(s) for s in seeds]

    try:
        return list(build(loaded.records))
    except Exception:  # isolate the bad record(s) below
        pass
    out: list[FactualSeed | SeedReject] = []
    for record, original in zip(loaded.records, case.records, strict=True):
        try:
            out.extend(build([record]))
        except Exception as exc:
            out.append(SeedReject(original, type(exc).__name__, _naming(case, exc)))
    return out


def _naming(case: Case, exc: BaseException) -> str:
    """The error message, led by the case's mask file when it does not name it already."""
    text = str(exc)
    return text if case.key in text else f"{case.key}: {text}"


def rejects_path(out: str | os.PathLike[str]) -> Path:
    """The rejects file beside a seeds or samples file: ``seeds.jsonl`` -> ``seeds.rejects.jsonl``.

    Examples:
        >>> rejects_path("run/seeds.jsonl").as_posix()
        'run/seeds.rejects.jsonl'
    """
    p = Path(out)
    name = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(name + ".rejects.jsonl")


#: Organ -> outcome -> number of seeds; seeds without an organ count as ``(uncertain)``.
OutcomeCounts = dict[str, collections.Counter[str]]


def _count(counts: OutcomeCounts, seed: dict[str, Any]) -> None:
    counts[seed.get("organ") or "(uncertain)"][str(seed.get("outcome"))] += 1


def _counts_in(path: Path) -> OutcomeCounts:
    counts: OutcomeCounts = collections.defaultdict(collections.Counter)
    for obj in read_jsonl(path) if path.exists() else []:
        _count(counts, obj)
    return counts


def outcome_table(counts: OutcomeCounts) -> str:
    """A text table of match outcomes (inside / adjacent / unmatched / total) per organ."""
    cols = ("inside", "adjacent", "unmatched")
    width = max([len("organ"), *(len(k) for k in counts)]) + 2
    lines = ["organ".ljust(width) + "".join(c.rjust(11) for c in (*cols, "total"))]
    totals: collections.Counter[str] = collections.Counter()
    for organ in sorted(counts, key=lambda k: (k == "(uncertain)", k)):
        c = counts[organ]
        totals.update(c)
        lines.append(
            organ.ljust(width)
            + "".join(str(c[k]).rjust(11) for k in cols)
            + str(sum(c.values())).rjust(11)
        )
    lines.append(
        "all".ljust(width)
        + "".join(str(totals[k]).rjust(11) for k in cols)
        + str(sum(totals.values())).rjust(11)
    )
    return "\n".join(lines)


def summarise(path: str | os.PathLike[str]) -> str:
    """The :func:`outcome_table` of every seed in the seeds file ``path``."""
    return outcome_table(_counts_in(Path(path)))


@dataclass
class SeedsRun:
    """What :func:`write_seeds` did.

    Attributes:
        out: The seeds file.
        rejects: The rejects file beside it.
        written: Seeds appended by this run.
        skipped: Records skipped because their id was already in ``out``.
        rejected: Records that failed in this run, whether or not an earlier run had
            already written their line to ``rejects`` (a rerun retries rejects).
        rejected_new: Of those, lines this run appended to ``rejects``.
        unreadable: Of ``rejected``, records the detection reader could not read.
        counts: Outcomes per organ over the whole seeds file (see :func:`outcome_table`).
    """

    out: Path
    rejects: Path
    written: int = 0
    skipped: int = 0
    rejected: int = 0
    rejected_new: int = 0
    unreadable: int = 0
    counts: OutcomeCounts = field(default_factory=dict)

    def line(self) -> str:
        """One line saying what the run wrote, skipped and rejected."""
        return (
            f"wrote {self.written} new seed(s) to {self.out} ({self.skipped} already there); "
            f"{self.rejected} reject(s) ({self.rejected_new} new, {self.unreadable} unreadable "
            f"in the detection file) to {self.rejects}"
        )

    def table(self) -> str:
        """The outcome table over the whole seeds file."""
        return outcome_table(self.counts)


@dataclass(frozen=True)
class _Job:
    matcher: BoxOrganMatcher
    builder: SeedBuilder
    class_map: ClassMap | None
    slices_only: bool
    clip: bool

    def __call__(self, case: Case) -> list[FactualSeed | SeedReject]:
        return seed_case(case, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


#: The job of a worker process, set once by :func:`_start_worker` (the matcher keeps its
#: per-class-map tables across the worker's cases).
_WORKER_JOB: list[_Job] = []


def _start_worker(job: _Job) -> None:
    _WORKER_JOB[:] = [job]


def _run_in_worker(case: Case) -> list[FactualSeed | SeedReject]:
    return _WORKER_JOB[0](case)


#: Runs the seeds job over cases and yields each case's results, in the cases' order:
#: ``runner(job, cases)``; ``job`` is a picklable ``Case -> results`` callable (see
#: :func:`write_seeds`, and :class:`medcurric.distributed.RaySeedRunner` for a Ray cluster).
SeedRunner = Callable[
    [Callable[[Case], list[FactualSeed | SeedReject]], list[Case]],
    Iterable[list[FactualSeed | SeedReject]],
]


def _results(
    job: _Job, cases: list[Case], workers: int
) -> Iterator[list[FactualSeed | SeedReject]]:
    if workers <= 1:
        for case in cases:
            yield job(case)
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_start_worker, initargs=(job,)
    ) as pool:
        yield from pool.map(_run_in_worker, cases, chunksize=1)


def write_seeds(
    cases: Iterable[Case],
    out: str | os.PathLike[str],
    *,
    matcher: BoxOrganMatcher | None = None,
    builder: SeedBuilder | None = None,
    class_map: ClassMap | None = None,
    slices_only: bool = False,
    clip: bool = False,
    workers: int = 1,
    progress: bool | None = None,
    unreadable: Iterable[RecordError] = (),
    runner: SeedRunner | None = None,
) -> SeedsRun:
    """Append the seeds of every case to the JSONL file ``out``; rejects go beside it.

    A rerun resumes: records whose id is already in ``out`` are skipped (a torn last
    line is repaired first). Records that fail go to :func:`rejects_path` ``(out)``
    with their reason (:class:`SeedReject`) and the run carries on; so do records
    the detection reader could not read (``unreadable``) and records whose id repeats
    an earlier record's. Every record given is either written, already there, or
    rejected, and counted. Cases are read one label map at a time, in ``workers``
    processes when more than one.

    Args:
        cases: Cases from :func:`medcurric.io.find_cases` (or holding their label maps).
        out: The seeds JSONL file (appended).
        matcher: The matcher (default ``BoxOrganMatcher()``).
        builder: The seed builder (default ``SeedBuilder()``).
        class_map: Names of the labels (see :func:`medcurric.io.load_case`).
        slices_only: Read only the slab of slices holding the key slices.
        clip: Clip boxes that leave the image instead of rejecting them.
        workers: Worker processes (1 runs in this process).
        progress: Show a progress bar on stderr (``None``: only on a terminal).
        unreadable: Records the detection reader set aside (the ``rejects`` list of
            :func:`medcurric.io.read_detections`); they are written as rejects.
        runner: Where the cases run (see :data:`SeedRunner`): ``None`` runs them here or in
            ``workers`` processes; :class:`medcurric.distributed.RaySeedRunner` on a Ray
            cluster. This process writes the files either way.

    Returns:
        The counts of the run and the outcome counts over the whole file.

    Raises:
        InvalidOptionError: When ``workers`` is below 1.
        MissingDependencyError: When reading the masks needs an extra that is not installed.

    Examples:
        >>> import tempfile
        >>> from medcurric.testing import phantom_dataset
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = write_seeds(phantom_dataset(1), f"{tmp}/seeds.jsonl", progress=False)
        >>> run.written, run.rejected
        (10, 0)
    """
    from tqdm import tqdm

    if workers < 1:
        raise InvalidOptionError(f"Expected workers >= 1, but got {workers}.")
    job = _Job(
        matcher if matcher is not None else BoxOrganMatcher(),
        builder if builder is not None else SeedBuilder(),
        class_map,
        slices_only,
        clip,
    )
    out_path = Path(out)
    run = SeedsRun(out_path, rejects_path(out_path))
    with JsonlWriter(out_path) as writer, JsonlWriter(run.rejects) as rejects:
        # the counts cover the whole file: what was there (tail repaired) plus each new line
        run.counts = _counts_in(out_path)

        def reject(item: SeedReject | RecordError) -> None:
            run.rejected += 1
            run.rejected_new += rejects.write(item)

        for error in unreadable:
            run.unreadable += 1
            reject(error)
        todo = []
        given: set[str] = set()
        for case in cases:
            keep = []
            for r in case.records:
                if r.id in given:  # two records, one id: the later one would vanish
                    reason = f"{case.key}: record id {r.id!r} repeats an earlier record's id"
                    reject(
                        SeedReject(replace(r, id=f"{r.id}@{case.key}"), "DataFormatError", reason)
                    )
                elif r.id in writer:
                    run.skipped += 1
                else:
                    keep.append(r)
                given.add(r.id)
            if keep:
                todo.append(replace(case, records=keep))
        total = sum(len(c.records) for c in todo)
        disable = None if progress is None else not progress
        with tqdm(
            total=total, unit="lesion", desc="seeds", file=sys.stderr, disable=disable
        ) as bar:
            results_of = runner(job, todo) if runner is not None else _results(job, todo, workers)
            for results in results_of:
                for item in results:
                    if isinstance(item, SeedReject):
                        reject(item)
                    else:
                        data = item.to_dict()
                        if writer.write(data):
                            run.written += 1
                            _count(run.counts, data)
                bar.update(len(results))
    return run


def read_seeds(path: str | os.PathLike[str]) -> list[FactualSeed]:
    """Read a seeds JSONL file, naming the line of a malformed record.

    A last line without its newline (a write cut short) is left out with a
    :class:`~medcurric.errors.MedcurricWarning` naming the file and the line, since
    it may hold a seed cut in the middle.

    Raises:
        DataFormatError: When a line is not a valid seed.
    """
    seeds = []
    for number, obj in enumerate(read_jsonl(path), start=1):
        try:
            seeds.append(FactualSeed.from_dict(obj))
        except MedcurricError as exc:
            raise DataFormatError(f"{path}: record {number}: {exc}") from exc
    torn = _torn_tail(Path(path))
    if torn is not None:
        warnings.warn(
            f"{path}:{torn}: the last line has no newline (a write cut short?) and was left "
            f"out; {len(seeds)} seed(s) read. Rerun the command that wrote it to complete it.",
            MedcurricWarning,
            stacklevel=2,
        )
    return seeds


def _torn_tail(path: Path) -> int | None:
    """The number of the file's last line when it lacks its newline, else ``None``."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return None
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return None
        fh.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) + 1
