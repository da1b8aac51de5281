"""``medcurric seeds``: detections + organ masks -> factual seeds JSONL.

Inputs: a detection file (``--detections`` with ``--format deeplesion|coco|csv``)
and a folder of organ masks (``--masks``), or ``--phantom`` for a self-contained
run on synthetic phantoms. Output: one :class:`~medcurric.seeds.FactualSeed` per
line, appended to ``--out`` (a rerun skips ids already written; a killed run
loses no written line). A record that fails goes to ``<out stem>.rejects.jsonl``
with its reason and the run continues. A summary table (matched / adjacent /
unmatched per organ, over the whole output file) is printed at the end.

Which mask belongs to which record (paths from the detection file are joined
under ``--masks`` and may not leave it):

* ``deeplesion``: for series ``S`` (``000001_01_01``) and key slice ``k``, the first
  of ``S_<a>-<b>.nii.gz`` with ``a <= k <= b`` (the sub-volumes DeepLesion's
  ``DL_save_nifti.py`` writes, three-digit numbers), ``S.nii.gz`` / ``S.nii``
  (the whole series, slice number 1 first), or a folder ``S/`` (TotalSegmentator's
  per-class output of that file). The key slice is counted along the file's
  stored slice axis (``k - a``, or ``k - 1`` for a whole series) and converted to
  the reoriented volume's ``z`` through the file's affine.
* ``coco`` / ``csv``: the record's ``image`` without its extension(s), e.g. image
  ``ct/case7.png`` or ``ct/case7.nii.gz`` -> ``<masks>/ct/case7`` + ``.nii.gz``,
  ``.nii``, ``.dcm`` (DICOM SEG) or a folder (per-class NIfTI or PNG masks).
  ``slice_index`` is the canonical ``z`` (towards superior) unless
  ``--slice-order stored`` says it counts along the file's stored slice axis.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medcurric._jsonl import JsonlWriter, read_jsonl
from medcurric._paths import safe_join
from medcurric.errors import DataFormatError, MissingFileError, UnsafePathError
from medcurric.io.records import LesionRecord

__all__ = ["add_arguments", "add_dataset_arguments", "demo_step", "rejects_path", "run"]

_NIFTI = (".nii.gz", ".nii")


def rejects_path(out: Path) -> Path:
    """``seeds.jsonl`` -> ``seeds.rejects.jsonl``."""
    name = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(name + ".rejects.jsonl")


def add_dataset_arguments(group: Any) -> None:
    """Declare the dataset inputs read by :func:`_read_records` and :func:`_cases`.

    ``--detections``, ``--format``, ``--masks``, ``--class-map`` and ``--slice-order``,
    shared by ``medcurric seeds`` and ``medcurric audit``.
    """
    group.add_argument(
        "--detections",
        type=Path,
        metavar="FILE",
        help="DL_info.csv, COCO JSON or CSV of lesion boxes",
    )
    group.add_argument(
        "--format",
        default="deeplesion",
        choices=("deeplesion", "coco", "csv"),
        help="detection format",
    )
    group.add_argument("--masks", type=Path, metavar="DIR", help="folder of per-case organ masks")
    group.add_argument(
        "--class-map",
        default="auto",
        metavar="auto|totalsegmentator|FILE.json",
        help="label names: from the files (auto), TotalSegmentator's total task, or a JSON class map",
    )
    group.add_argument(
        "--slice-order",
        default="canonical",
        choices=("canonical", "stored"),
        help="coco/csv slice_index: canonical z (default) or along the file's stored slice axis",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``seeds`` options to ``parser``."""
    src = parser.add_argument_group("inputs")
    add_dataset_arguments(src)
    src.add_argument(
        "--phantom", action="store_true", help="self-contained run on synthetic phantoms"
    )
    src.add_argument(
        "--phantom-cases", type=int, default=3, help="number of phantoms (seeds 0..N-1)"
    )
    rule = parser.add_argument_group("matching and text")
    rule.add_argument("--criterion", default="ioa", help="ioa (default) or iou")
    rule.add_argument("--min-score", type=float, default=None, help="score for 'inside'")
    rule.add_argument("--adjacent-mm", type=float, default=5.0, help="'adjacent' distance (mm)")
    rule.add_argument("--level", default="group", help="group (default: lobes -> lung) or organ")
    rule.add_argument("--templates", type=Path, metavar="FILE.json", help="seed sentence templates")
    rule.add_argument("--seed", type=int, default=0, help="template choice seed")
    rule.add_argument(
        "--slices-only",
        action="store_true",
        help="read only the slab of slices holding the key slices (no upper/lower wording)",
    )
    rule.add_argument("--clip", action="store_true", help="clip boxes that leave the image")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, required=True, metavar="FILE.jsonl", help="seeds JSONL (appended)"
    )
    out.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")


@dataclass
class _Options:
    criterion: str = "ioa"
    min_score: float | None = None
    adjacent_mm: float | None = 5.0
    level: str = "group"
    templates: str | None = None
    seed: int = 0
    slices_only: bool = False
    clip: bool = False
    class_map: str = "auto"
    fmt: str = "csv"
    slice_order: str = "canonical"


@dataclass
class _Case:
    key: str
    mask: str | None  # path, or None for a phantom / an unresolved mask
    records: list[LesionRecord]
    phantom_seed: int | None = None
    error: str | None = None
    range_start: dict[str, int] = field(default_factory=dict)


def _stem(image: str) -> str:
    for suffix in (".nii.gz", ".nii", ".png", ".dcm", ".npy", ".jpg", ".jpeg"):
        if image.lower().endswith(suffix):
            return image[: -len(suffix)]
    return image


def _find_mask(root: Path, rel: str) -> Path | None:
    base = safe_join(root, rel)
    for suffix in (*_NIFTI, ".dcm"):
        cand = base.with_name(base.name + suffix)
        if cand.is_file():
            return cand
    if base.is_dir():
        return base
    return None


def _deeplesion_mask(root: Path, record: LesionRecord) -> tuple[Path | None, int]:
    series = str(record.extra.get("series", ""))
    if not series:
        raise DataFormatError(f"Record {record.id!r} has no DeepLesion series in extra['series'].")
    key = int(record.slice_index or 0)
    safe_join(root, series)  # refuse series names that leave the root
    for f in sorted(root.glob(f"{glob.escape(series)}_*")):
        tail = f.name[len(series) + 1 :]
        for suffix in _NIFTI:
            if tail.endswith(suffix):
                lo_hi = tail[: -len(suffix)].split("-")
                if len(lo_hi) == 2 and all(t.isdigit() for t in lo_hi):
                    lo, hi = int(lo_hi[0]), int(lo_hi[1])
                    if lo <= key <= hi:
                        return f, lo
    whole = _find_mask(root, series)
    return whole, 1


def _cases(records: Sequence[LesionRecord], masks: Path, opts: _Options) -> list[_Case]:
    cases: dict[str, _Case] = {}
    found: dict[tuple[str, int | None], tuple[Path | None, int, str | None]] = {}
    for r in records:
        cache_key = (r.image, r.slice_index if opts.fmt == "deeplesion" else None)
        if cache_key not in found:
            try:
                if opts.fmt == "deeplesion":
                    path, start = _deeplesion_mask(masks, r)
                else:
                    path, start = _find_mask(masks, _stem(r.image)), 0
                error = (
                    None if path is not None else f"no mask for image {r.image!r} under '{masks}'"
                )
            except (UnsafePathError, DataFormatError) as exc:
                path, start, error = None, 0, str(exc)
            found[cache_key] = (path, start, error)
        path, start, error = found[cache_key]
        key = str(path) if path is not None else f"missing:{r.image}"
        case = cases.setdefault(
            key, _Case(key=key, mask=None if path is None else str(path), records=[])
        )
        case.records.append(r)
        case.range_start[r.id] = start
        if error is not None:
            case.error = error
    return list(cases.values())


def _class_map(spec: str) -> Any:
    from medcurric.vocabulary.classmap import ClassMap

    if spec == "auto":
        return None
    if spec == "totalsegmentator":
        return ClassMap.totalsegmentator()
    return ClassMap.from_json(spec)


def _reorientation_of(path: Path) -> Any:
    from medcurric.io.nifti import _load

    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.name.endswith(_NIFTI))
        if not files:
            return None
        path = files[0]
    if not path.name.endswith(_NIFTI):
        return None
    return _load(path)[1]


_TOOLS: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _tools(opts: _Options) -> tuple[Any, Any]:
    """The matcher and seed builder for ``opts``, made once per process.

    Reusing them across cases keeps the matcher's per-class-map tables (built
    once per distinct class map, and cases of one dataset share one) and the
    parsed templates.
    """
    key = (opts.criterion, opts.min_score, opts.adjacent_mm, opts.level, opts.templates, opts.seed)
    hit = _TOOLS.get(key)
    if hit is None:
        from medcurric.anatomy.matcher import BoxOrganMatcher
        from medcurric.seeds.builder import SeedBuilder

        matcher = BoxOrganMatcher(
            criterion=opts.criterion,
            min_score=opts.min_score,
            adjacent_mm=opts.adjacent_mm,
            level=opts.level,
        )
        hit = (matcher, SeedBuilder(templates=opts.templates, seed=opts.seed))
        if len(_TOOLS) >= 8:
            _TOOLS.clear()
        _TOOLS[key] = hit
    return hit


def _run_case(task: tuple[_Case, _Options]) -> list[tuple[str, dict[str, Any]]]:
    """Worker: seeds (or rejects) for every record of one case, in record order."""
    case, opts = task
    if case.error is not None:
        return [("reject", _reject(r, case.error, "MissingFileError")) for r in case.records]
    from medcurric.seeds.pipeline import build_seeds

    matcher, builder = _tools(opts)
    try:
        label_map, records, vertical, original = _load_case(case, opts)
    except Exception as exc:  # the whole case is unreadable: reject its records, carry on
        return [("reject", _reject(r, str(exc), type(exc).__name__)) for r in case.records]
    # Seeds keep the key slice in the whole volume, also when a slab shifted it.

    def _dict(seed: Any) -> dict[str, Any]:
        d: dict[str, Any] = seed.to_dict()
        if seed.id in original:
            d["slice_index"] = original[seed.id]
        return d

    kwargs: dict[str, Any] = {
        "matcher": matcher,
        "builder": builder,
        "vertical": vertical,
        "clip": opts.clip,
    }
    try:
        return [("seed", _dict(s)) for s in build_seeds(records, label_map, **kwargs)]
    except Exception:
        pass
    out: list[tuple[str, dict[str, Any]]] = []  # isolate the bad record(s)
    for r in records:
        try:
            (s,) = build_seeds([r], label_map, **kwargs)
            out.append(("seed", _dict(s)))
        except Exception as exc:
            out.append(("reject", _reject(r, str(exc), type(exc).__name__)))
    return out


def _reject(r: LesionRecord, reason: str, error: str) -> dict[str, Any]:
    return {"id": r.id, "image": r.image, "error": error, "reason": reason, "record": r.to_dict()}


def _load_case(
    case: _Case, opts: _Options
) -> tuple[Any, list[LesionRecord], bool, dict[str, int | None]]:
    if case.phantom_seed is not None:
        from medcurric.testing import make_phantom

        return make_phantom(seed=case.phantom_seed).label_map(), case.records, True, {}
    from medcurric.io.nifti import read_nifti_labels
    from medcurric.io.totalseg import read_label_map

    assert case.mask is not None
    path = Path(case.mask)
    cmap = _class_map(opts.class_map)
    records = list(case.records)
    stored = opts.fmt == "deeplesion" or opts.slice_order == "stored"
    if stored and any(len(r.box) == 4 and r.slice_index is not None for r in records):
        r_or = _reorientation_of(path)
        fixed = []
        for r in records:
            if len(r.box) == 4 and r.slice_index is not None:
                k = int(r.slice_index) - case.range_start.get(r.id, 0)
                z = r_or.canonical_z(k) if r_or is not None else k
                extra = dict(r.extra)
                if opts.fmt == "deeplesion":
                    extra.setdefault("key_slice", r.slice_index)
                fixed.append(replace(r, slice_index=z, extra=extra))
            else:
                fixed.append(r)
        records = fixed
    two_d = all(len(r.box) == 4 and r.slice_index is not None for r in records)
    if opts.slices_only and two_d and path.is_file() and path.name.endswith(_NIFTI):
        zs = [int(r.slice_index) for r in records if r.slice_index is not None]
        z0, z1 = min(zs), max(zs) + 1
        from medcurric.vocabulary.classmap import ClassMap

        lm = read_nifti_labels(
            path, class_map=cmap, z_range=(z0, z1), fallback=ClassMap.totalsegmentator()
        )
        shifted = [replace(r, slice_index=int(r.slice_index) - z0) for r in records]  # type: ignore[arg-type]
        return lm, shifted, False, {r.id: r.slice_index for r in records}
    return read_label_map(path, class_map=cmap), records, True, {}


def _phantom_cases(n: int) -> list[_Case]:
    from medcurric.testing import make_phantom

    cases = []
    for s in range(n):
        ph = make_phantom(seed=s)
        recs = [
            replace(r, id=f"phantom{s}/{r.id}", image=f"phantom{s}", source="medcurric-phantom")
            for r in ph.key_slice_lesions
        ]
        cases.append(_Case(key=f"phantom{s}", mask=None, records=recs, phantom_seed=s))
    return cases


def _read_records(args: argparse.Namespace) -> list[LesionRecord]:
    from medcurric.io.detections import read_coco_detections, read_deeplesion, read_detection_csv

    if args.format == "deeplesion":
        return read_deeplesion(args.detections)
    if args.format == "coco":
        return read_coco_detections(args.detections)
    return read_detection_csv(args.detections)


def _results(
    cases: list[_Case], opts: _Options, workers: int
) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    tasks = [(c, opts) for c in cases]
    if workers <= 1:
        for t in tasks:
            yield _run_case(t)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run_case, tasks, chunksize=1)


def _count(counts: dict[str, collections.Counter[str]], obj: dict[str, Any]) -> None:
    counts[obj.get("organ") or "(uncertain)"][str(obj.get("outcome"))] += 1


def _counts_in(path: Path) -> dict[str, collections.Counter[str]]:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for obj in read_jsonl(path) if path.exists() else []:
        _count(counts, obj)
    return counts


def summarise(path: Path) -> str:
    """A table of outcomes per organ over every seed in ``path``."""
    return _table(_counts_in(path))


def _table(counts: dict[str, collections.Counter[str]]) -> str:
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


def run(args: argparse.Namespace) -> int:
    """Run ``medcurric seeds``; return the exit status."""
    from tqdm import tqdm

    opts = _Options(
        criterion=args.criterion,
        min_score=args.min_score,
        adjacent_mm=None
        if args.adjacent_mm is not None and args.adjacent_mm < 0
        else args.adjacent_mm,
        level=args.level,
        templates=None if args.templates is None else str(args.templates),
        seed=args.seed,
        slices_only=args.slices_only,
        clip=args.clip,
        class_map=str(args.class_map),
        fmt=args.format,
        slice_order=args.slice_order,
    )
    # Check options in the parent so a typo fails before any work.
    from medcurric.anatomy.matcher import BoxOrganMatcher
    from medcurric.seeds.builder import SeedBuilder

    BoxOrganMatcher(
        criterion=opts.criterion,
        min_score=opts.min_score,
        adjacent_mm=opts.adjacent_mm,
        level=opts.level,
    )
    SeedBuilder(templates=opts.templates, seed=opts.seed)
    if opts.class_map not in ("auto", "totalsegmentator"):
        _class_map(opts.class_map)
    if args.workers < 1:
        raise DataFormatError(f"Expected --workers >= 1, but got {args.workers}.")

    if args.phantom:
        cases = _phantom_cases(args.phantom_cases)
    else:
        if args.detections is None or args.masks is None:
            raise DataFormatError(
                "Pass --detections FILE and --masks DIR, or --phantom for a self-contained run."
            )
        if not Path(args.masks).is_dir():
            raise MissingFileError(
                f"Expected a folder of masks at '{args.masks}', but it does not exist."
            )
        cases = _cases(_read_records(args), Path(args.masks), opts)

    out_path = Path(args.out)
    rej_path = rejects_path(out_path)
    written = skipped = rejected = 0
    with JsonlWriter(out_path) as writer, JsonlWriter(rej_path) as rejects:
        # the summary covers the whole file: what was there (tail repaired) plus each new line
        counts = _counts_in(out_path)
        todo = []
        for c in cases:
            keep = [r for r in c.records if r.id not in writer]
            skipped += len(c.records) - len(keep)
            if keep:
                todo.append(replace(c, records=keep))
        total = sum(len(c.records) for c in todo)
        with tqdm(total=total, unit="lesion", desc="seeds", file=sys.stderr, disable=None) as bar:
            for results in _results(todo, opts, args.workers):
                for kind, obj in results:
                    if kind == "seed":
                        if writer.write(obj):
                            written += 1
                            _count(counts, obj)
                    else:
                        rejected += rejects.write(obj)
                bar.update(len(results))
    print(_table(counts))
    print(
        f"wrote {written} new seed(s) to {out_path} ({skipped} already there); "
        f"{rejected} reject(s) to {rej_path}",
        file=sys.stderr,
    )
    return 0


def demo_step(ctx: Any) -> None:
    """``medcurric demo`` step: seeds for the phantom's key-slice lesions -> ``seeds.jsonl``.

    Expects ``ctx.state["phantom"]`` (the demo's phantom step) and writes
    ``<ctx.out>/seeds.jsonl``, rewritten on each run.
    """
    from medcurric.seeds.pipeline import build_seeds

    ph = ctx.state["phantom"]
    seeds = build_seeds(ph.key_slice_lesions, ph.label_map())
    ctx.state["seeds"] = seeds
    path = Path(ctx.out) / "seeds.jsonl"
    if path.exists():
        path.unlink()
    with JsonlWriter(path) as writer:
        writer.write_many(seeds)
    ctx.outputs["factual seeds"] = path
    for s in seeds[:3]:
        print(f"[seeds] {s.id}: {s.text}")
    print(f"[seeds] {len(seeds)} seeds written")


def main(argv: Sequence[str] | None = None) -> int:
    """Run as ``python -m medcurric.seeds._cli`` (same as ``medcurric seeds``)."""
    parser = argparse.ArgumentParser(prog="medcurric seeds", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
