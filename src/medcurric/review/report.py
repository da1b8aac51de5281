"""A static, self-contained HTML report for reviewing generated samples by eye.

The report is two files that open from disk with no server and no network:
``index.html`` (a filterable table of every sample, a card per sample with the
image, the lesion box, the host-organ contour and what the model saw in that stage
(the Easy overlay, or the clean image for Medium and Hard), the seed,
question, rationale and answer with organ/lesion/box mentions highlighted, each
validation verdict, and accept/reject marks on a seeded random subset that the
reviewer exports as JSON lines) and ``summary.html`` (counts, accept rate per
check, match-score distributions per organ, unmatched and adjacent lesions).

The pages come from jinja2 templates in ``medcurric/review/templates`` with autoescape:
all text from datasets and models is escaped, and data for the page's script sits in
an ``application/json`` block written by jinja2's ``tojson`` filter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcurric._jsonl import read_jsonl
from medcurric._paths import safe_join
from medcurric.cot.records import CoTSample
from medcurric.errors import DataFormatError, MissingFileError, UnsafePathError
from medcurric.review._html import highlight_spans, png_data_url, render_page
from medcurric.seeds.records import FactualSeed

__all__ = ["ReviewReport", "load_samples", "load_seeds", "review_sample_ids", "write_review"]

MaskProvider = Callable[[FactualSeed], "np.ndarray | None"]
OverlayFn = Callable[[np.ndarray, Sequence[float]], Any]  # result unpacks as (image, phrase)

_SAMPLE_FIELDS = {f.name for f in dataclasses.fields(CoTSample)}


@dataclass(frozen=True)
class ReviewReport:
    """Where a review report was written.

    Attributes:
        index: Path of ``index.html``.
        summary: Path of ``summary.html``.
        review_ids: Ids of the samples drawn for manual marks.
        num_samples: Number of accepted samples in the report.
        num_rejects: Number of rejected samples in the report.
    """

    index: Path
    summary: Path
    review_ids: tuple[str, ...]
    num_samples: int
    num_rejects: int


def _sample_from_dict(data: Mapping[str, Any], *, accepted: bool | None) -> CoTSample:
    known = {k: v for k, v in data.items() if k in _SAMPLE_FIELDS}
    rest = {k: v for k, v in data.items() if k not in _SAMPLE_FIELDS}
    for key in ("id", "seed_id", "stage", "question", "answer"):
        if key not in known:
            raise DataFormatError(
                f"Expected a CoT sample with a {key!r} field, but the record has {sorted(data)}."
            )
    known.setdefault("question_type", "open")
    known.setdefault("rationale", "")
    known.setdefault("image", "")
    if rest:
        known["extra"] = {**dict(known.get("extra") or {}), **rest}
    sample = CoTSample.from_dict(known)
    if accepted is not None and sample.accepted != accepted:
        sample = dataclasses.replace(sample, accepted=accepted)
    return sample


def load_samples(
    source: str | os.PathLike[str] | Iterable[CoTSample | Mapping[str, Any]] | None,
    *,
    accepted: bool | None = None,
) -> list[CoTSample]:
    """Load CoT samples from a JSON-lines path or an iterable of records/dicts.

    Args:
        source: A path, an iterable, or ``None`` (no samples).
        accepted: Force the ``accepted`` flag (``False`` for a rejects file); ``None`` keeps it.

    Returns:
        The samples, in file order. Unknown fields (e.g. a reject ``reason``) go to ``extra``.
    """
    if source is None:
        return []
    items: Iterable[Any] = read_jsonl(source) if isinstance(source, (str, os.PathLike)) else source
    out = []
    for item in items:
        if isinstance(item, CoTSample):
            out.append(item if accepted is None else dataclasses.replace(item, accepted=accepted))
        else:
            out.append(_sample_from_dict(item, accepted=accepted))
    return out


def load_seeds(
    source: str | os.PathLike[str] | Iterable[FactualSeed | Mapping[str, Any]] | None,
) -> dict[str, FactualSeed]:
    """Load factual seeds (path or iterable) into a dict keyed by seed id."""
    if source is None:
        return {}
    items: Iterable[Any] = read_jsonl(source) if isinstance(source, (str, os.PathLike)) else source
    seeds: dict[str, FactualSeed] = {}
    for item in items:
        seed = item if isinstance(item, FactualSeed) else FactualSeed.from_dict(dict(item))
        seeds[seed.id] = seed
    return seeds


def review_sample_ids(ids: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """Draw ``n`` ids for manual review, deterministically for a given ``seed``.

    The draw depends only on the set of ids and the seed, not on their order.

    Examples:
        >>> review_sample_ids(["c", "a", "b", "d"], 2, seed=1) == review_sample_ids(["d", "c", "b", "a"], 2, seed=1)
        True
    """
    pool = sorted(set(ids))
    if n >= len(pool):
        return pool
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(picked.tolist())]


def _to_display(array: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """An array as the RGB a model sees (:func:`medcurric.io.load_rgb`)."""
    from medcurric.io import load_rgb

    return load_rgb(np.asarray(array), window=window)


def _load_image(path: Path, window: tuple[float, float]) -> np.ndarray:
    """Read an image for display: 8-bit images as they are; 16-bit PNGs as DeepLesion HU (value - 32768)."""
    if path.suffix.lower() == ".npy":
        return _to_display(np.load(path, allow_pickle=False), window)
    from medcurric.overlay import read_display_image

    return read_display_image(path, window)


def _contour_path(mask: np.ndarray) -> str:
    from skimage import measure

    parts = []
    for contour in measure.find_contours(np.pad(mask.astype(np.float32), 1), 0.5):
        pts = contour - 1.0 + 0.5  # back to pixel-centre coordinates
        coords = " L ".join(f"{c:.1f} {r:.1f}" for r, c in pts[:: max(1, len(pts) // 400)])
        parts.append(f"M {coords} Z")
    return " ".join(parts)


def _svg_panel(
    key: str | None, size: tuple[int, int], box: Sequence[float] | None, contour: str
) -> dict[str, Any]:
    """What the ``svg_panel`` macro draws: the image, the lesion box ``(x, y, w, h)`` and the contour."""
    w, h = size
    rect = None
    if box is not None and len(box) >= 4:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        rect = (x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0))
    return {
        "key": key, "width": w, "height": h, "stroke": max(1.0, max(w, h) / 200.0),
        "box": rect, "contour": contour,
    }


def _organ_terms(seed: FactualSeed | None, sample: CoTSample, class_map: Any) -> list[str]:
    organ = (seed.organ if seed else None) or sample.organ
    if not organ:
        return []
    terms = {organ, organ.replace("_", " ")}
    if class_map is not None:
        for attr in ("synonyms", "display_name"):
            fn = getattr(class_map, attr, None)
            if fn is None:
                continue
            try:
                got = fn(organ)
            except Exception:  # an unknown organ name keeps the plain terms
                continue
            terms.update([got] if isinstance(got, str) else list(got))
    return sorted(t for t in terms if t)


class _Images:
    """Loads each referenced image once and keeps its data URL under a short key."""

    def __init__(self, root: Path | None, window: tuple[float, float], max_side: int) -> None:
        self.root = root
        self.window = window
        self.max_side = max_side
        self.urls: dict[str, str] = {}
        self.arrays: dict[str, np.ndarray | None] = {}
        self.errors: dict[str, str] = {}

    def array(self, ref: str) -> np.ndarray | None:
        if ref in self.arrays:
            return self.arrays[ref]
        arr = None
        if self.root is not None and ref:
            try:
                path = safe_join(self.root, ref)
                arr = _load_image(path, self.window) if path.is_file() else None
                if arr is None:
                    self.errors[ref] = "image file not found"
            except UnsafePathError:  # the page names the root folder, never its absolute path
                self.errors[ref] = (
                    f"path {ref!r} leads out of the image folder '{self.root.name}' "
                    "(absolute, '..' or a link); expected a path inside it"
                )
            except (DataFormatError, OSError) as exc:  # truncated, a decompression bomb...
                reason = str(exc)
                for root in {str(self.root.resolve()), str(self.root)}:  # never the absolute root
                    reason = reason.replace(root, self.root.name)
                self.errors[ref] = f"image could not be read: {reason}"
        self.arrays[ref] = arr
        return arr

    def add(self, name: str, image: np.ndarray) -> str:
        key = "i" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
        if key not in self.urls:
            self.urls[key] = png_data_url(image, max_side=self.max_side)
        return key


def write_review(
    samples: str | os.PathLike[str] | Iterable[CoTSample | Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    rejects: str | os.PathLike[str] | Iterable[CoTSample | Mapping[str, Any]] | None = None,
    seeds: str | os.PathLike[str] | Iterable[FactualSeed | Mapping[str, Any]] | None = None,
    image_root: str | os.PathLike[str] | None = None,
    masks: MaskProvider | None = None,
    overlay: OverlayFn | bool = True,
    class_map: Any = None,
    sample_n: int = 50,
    seed: int = 0,
    window: tuple[float, float] = (-160.0, 240.0),
    max_cards: int = 2000,
    max_image_side: int = 512,
    title: str = "medcurric review",
) -> ReviewReport:
    """Write ``index.html`` and ``summary.html`` for reviewing samples by eye.

    Args:
        samples: Accepted samples (JSON-lines path or records).
        out_dir: Directory to write into (created; existing report files are replaced,
            nothing else is touched).
        rejects: Rejected samples, shown with their failing verdicts.
        seeds: The factual seeds, for organ/outcome/score columns and the summary.
        image_root: Directory the samples' image paths are relative to. Paths that
            leave it are refused and reported in the card instead of read.
        masks: ``seed -> [H, W] bool`` host-organ mask on the sample's image, for the contour.
        overlay: ``(image, box) -> (overlaid image, phrase)`` for the Easy panel;
            ``True`` uses :class:`~medcurric.overlay.StageOverlay` in its fixed evaluation
            style, ``False`` leaves the panel out.
        class_map: A :class:`~medcurric.anatomy.ClassMap` for organ synonyms in the highlighting.
        sample_n: How many samples to draw for manual accept/reject marks.
        seed: Seed of that draw.
        window: Display window (HU) for 16-bit CT images.
        max_cards: At most this many sample cards (the table always lists every sample).
        max_image_side: Embedded images are downscaled to this many pixels at most.
        title: Page title.

    Returns:
        The paths written and the ids drawn for review.
    """
    if overlay is True:
        from medcurric.overlay import StageOverlay

        overlay_fn: OverlayFn | None = StageOverlay("fixed")
    else:
        overlay_fn = overlay if callable(overlay) else None
    accepted = load_samples(samples, accepted=None)
    rejected = load_samples(rejects, accepted=False)
    seed_by_id = load_seeds(seeds)
    root = Path(image_root).resolve() if image_root is not None else None
    if root is not None and not root.is_dir():
        raise MissingFileError(f"Expected an image directory at '{root}', but it does not exist.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    everything = accepted + rejected
    ids = [s.id for s in everything]
    dupes = [i for i, c in Counter(ids).items() if c > 1]
    if dupes:
        raise DataFormatError(
            f"Expected unique sample ids, but {len(dupes)} repeat, e.g. {dupes[:3]}."
        )
    report_id = hashlib.sha1("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:16]
    review_ids = review_sample_ids(ids, sample_n, seed)
    review_set = set(review_ids)
    images = _Images(root, window, max_image_side)

    rows: list[dict[str, Any]] = []
    cards: list[dict[str, Any]] = []
    order = sorted(everything, key=lambda s: (s.id not in review_set, s.seed_id, s.stage, s.id))
    for sample in order:
        sd = seed_by_id.get(sample.seed_id)
        organ = (sd.organ if sd else None) or sample.organ or "unmatched"
        lesion = (sd.lesion_type if sd else None) or sample.lesion_type or "lesion"
        failed = [v.check for v in sample.verdicts if not v.passed]
        status = "accepted" if sample.accepted else "rejected"
        attrs = {
            "id": sample.id, "stage": sample.stage, "organ": organ, "lesion": lesion, "status": status,
            "failed": " ".join(failed), "review": "yes" if sample.id in review_set else "no",
            "text": (sample.question + " " + sample.rationale + " " + sample.answer).lower(),
        }
        rows.append({
            "attrs": attrs, "id": sample.id, "stage": sample.stage, "organ": organ, "lesion": lesion,
            "question_type": sample.question_type, "question": sample.question, "answer": sample.answer,
            "status": status, "failed": failed,
        })
        if len(cards) >= max_cards:
            continue
        cards.append(
            _card(sample, sd, attrs, organ, lesion, status, images, masks, overlay_fn, class_map,
                  sample.id in review_set)
        )

    filters = [
        {"name": name, "label": label, "values": sorted(set(values))}
        for name, label, values in (
            ("stage", "stage", [s.stage for s in everything]),
            ("organ", "organ", [r["organ"] for r in rows]),
            ("lesion", "lesion type", [r["lesion"] for r in rows]),
            ("status", "accepted / rejected", ["accepted", "rejected"]),
            ("failed", "failed check", [v.check for s in everything for v in s.verdicts if not v.passed]),
            ("review", "in review sample", ["yes", "no"]),
        )
    ]
    index_html = render_page(
        "index.html.j2", title=title, report_id=report_id, images=images.urls, filters=filters,
        review_count=len(review_ids), seed=seed, rows=rows, cards=cards,
        cards_capped=len(everything) > max_cards, max_cards=max_cards,
    )
    summary_images = _Images(root, window, max_image_side)
    summary_images.arrays = images.arrays
    summary_images.errors = images.errors
    summary_html = _summary_page(title, accepted, rejected, seed_by_id, summary_images, masks, report_id)
    index_path = out / "index.html"
    summary_path = out / "summary.html"
    index_path.write_text(index_html, encoding="utf-8")
    summary_path.write_text(summary_html, encoding="utf-8")
    return ReviewReport(index_path, summary_path, tuple(review_ids), len(accepted), len(rejected))


def _card(
    sample: CoTSample,
    sd: FactualSeed | None,
    attrs: Mapping[str, str],
    organ: str,
    lesion: str,
    status: str,
    images: _Images,
    masks: MaskProvider | None,
    overlay: OverlayFn | None,
    class_map: Any,
    in_review: bool,
) -> dict[str, Any]:
    """What the index template shows of one sample: panels, highlighted text, verdicts, marks."""
    arr = images.array(sample.image)
    panels: list[dict[str, Any]] = []
    if arr is not None:
        h, w = arr.shape[:2]
        key = images.add(sample.image, arr)
        contour = ""
        if masks is not None and sd is not None:
            mask = masks(sd)
            if mask is not None and mask.shape[:2] == (h, w) and mask.any():
                contour = _contour_path(mask)
        panels.append({"kind": "image", **_svg_panel(key, (w, h), sample.box, contour)})
        # What the model saw in this sample's stage: Easy draws the overlay, Medium and Hard do not.
        if sample.stage != "easy":
            panels.append({"kind": "clean", "key": key, "stage": sample.stage})
        elif overlay is not None and sample.box is not None:
            drawn, phrase = overlay(arr, sample.box)
            okey = images.add(f"{sample.image}|overlay|{list(sample.box)}", np.asarray(drawn))
            panels.append({"kind": "overlay", "key": okey, "phrase": phrase})
    else:
        why = images.errors.get(sample.image, "no image root given")
        panels.append({"kind": "missing", "image": sample.image, "why": why})
    terms = {"organ": _organ_terms(sd, sample, class_map), "lesion": [lesion] if lesion else []}
    seed_text = sd.text if sd else str(sample.extra.get("seed_text", ""))
    seed_info = None
    if sd is not None:
        score = f"{sd.score:.3f}" if sd.score is not None else "n/a"
        seed_info = {"outcome": sd.outcome, "criterion": sd.criterion, "score": score}
    return {
        "id": sample.id, "attrs": attrs, "stage": sample.stage, "organ": organ, "status": status,
        "panels": panels, "seed": highlight_spans(seed_text, terms), "seed_info": seed_info,
        "question_type": sample.question_type, "question": highlight_spans(sample.question, terms),
        "rationale": highlight_spans(sample.rationale, terms), "answer": highlight_spans(sample.answer, terms),
        "reason": getattr(sample, "reason", "") or sample.extra.get("reason"),
        "verdicts": sample.verdicts, "in_review": in_review,
    }


def _score_plot(seeds: Mapping[str, FactualSeed]) -> str | None:
    by_organ: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"iou": [], "ioa": []})
    for s in seeds.values():
        if not s.organ:
            continue
        iou = s.iou if s.iou is not None else (s.score if s.criterion == "iou" else None)
        ioa = s.ioa if s.ioa is not None else (s.score if s.criterion == "ioa" else None)
        if iou is not None:
            by_organ[s.organ]["iou"].append(float(iou))
        if ioa is not None:
            by_organ[s.organ]["ioa"].append(float(ioa))
    if not by_organ:
        return None
    try:
        from medcurric._optional import require

        require("matplotlib", feature="review summary plots")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    organs = sorted(by_organ)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(organs) + 1.6), sharey=True)
    for ax, key in zip(axes, ("iou", "ioa"), strict=True):
        data = [by_organ[o][key] or [np.nan] for o in organs]
        ax.boxplot(data, showfliers=False, **_horizontal(matplotlib.__version__))
        for i, vals in enumerate(data, start=1):
            jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(vals))
            ax.scatter(vals, np.full(len(vals), i) + jitter, s=10, alpha=0.6)
        # organ names come from the seeds: drawn literally, never as mathtext or TeX
        ax.set_yticks(range(1, len(organs) + 1), organs, parse_math=False, usetex=False)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel({"iou": "IoU (box vs organ)", "ioa": "IoA (share of box in organ)"}[key])
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Match scores of the host organ, per organ")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    from PIL import Image

    buf.seek(0)
    return png_data_url(np.asarray(Image.open(buf).convert("RGB")))


def _horizontal(version: str) -> dict[str, Any]:
    major, minor = (int(p) for p in version.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _summary_page(
    title: str,
    accepted: Sequence[CoTSample],
    rejected: Sequence[CoTSample],
    seeds: Mapping[str, FactualSeed],
    images: _Images,
    masks: MaskProvider | None,
    report_id: str,
) -> str:
    everything = [*accepted, *rejected]
    per: dict[str, dict[str, dict[str, int]]] = {"organ": {}, "lesion type": {}, "stage": {}}
    for s in everything:
        sd = seeds.get(s.seed_id)
        keys = {
            "organ": (sd.organ if sd else None) or s.organ or "unmatched",
            "lesion type": (sd.lesion_type if sd else None) or s.lesion_type,
            "stage": s.stage,
        }
        status = "accepted" if s.accepted else "rejected"
        for dim, key in keys.items():
            row = per[dim].setdefault(key, {})
            row[status] = row.get(status, 0) + 1
            row["total"] = row.get("total", 0) + 1
    count_tables = [
        {"title": f"Samples per {dim}", "columns": ["accepted", "rejected", "total"],
         "rows": sorted(counter.items())}
        for dim, counter in per.items()
    ]
    checks: dict[str, dict[str, int]] = {}
    for s in everything:
        for v in s.verdicts:
            row = checks.setdefault(v.check, {"passed": 0, "failed": 0})
            row["passed" if v.passed else "failed"] += 1
    check_rows = [
        {"check": c, "passed": r["passed"], "failed": r["failed"],
         "rate": f"{r['passed'] / max(1, r['passed'] + r['failed']):.1%}"}
        for c, r in sorted(checks.items())
    ]
    plot = _score_plot(seeds)
    plot_key = None
    if plot is not None:
        plot_key = "plot-scores"
        images.urls[plot_key] = plot
    thumbs = []
    for sd in sorted((s for s in seeds.values() if s.outcome != "inside"), key=lambda x: (x.outcome, x.id)):
        arr = images.array(sd.image)
        panel = None
        if arr is not None:
            h, w = arr.shape[:2]
            contour = ""
            if masks is not None:
                m = masks(sd)
                if m is not None and m.shape[:2] == (h, w) and m.any():
                    contour = _contour_path(m)
            box = sd.box if len(sd.box) == 4 else (sd.box[0], sd.box[1], sd.box[3], sd.box[4])
            panel = _svg_panel(images.add(sd.image, arr), (w, h), box, contour)
        thumbs.append({"id": sd.id, "outcome": sd.outcome, "organ": sd.organ, "text": sd.text, "panel": panel})
    return render_page(
        "summary.html.j2", title=title + " - summary", report_id=report_id, images=images.urls,
        num_accepted=len(accepted), num_rejected=len(rejected), num_seeds=len(seeds),
        count_tables=count_tables, checks=check_rows,
        outcomes=sorted(Counter(s.outcome for s in seeds.values()).items()),
        plot_key=plot_key, thumbs=thumbs,
    )
