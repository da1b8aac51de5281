"""Shared hypothesis strategies (append new ones; keep existing names stable).

pytest runs in importlib import mode, so ``tests/`` is not on ``sys.path`` by
default. A test module imports this file with::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    from strategies import boxes_in_image
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "boxes_in_image",
    "cot_samples",
    "decisions",
    "factual_seeds",
    "float_boxes",
    "json_values",
    "label_maps",
    "lesion_records",
    "locations",
    "organ_matches",
]

# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


@st.composite
def boxes_in_image(
    draw: st.DrawFn,
    image_shape: tuple[int, ...],
    *,
    min_boxes: int = 0,
    max_boxes: int = 6,
    integer: bool = False,
) -> np.ndarray:
    """xyxy boxes inside ``image_shape`` ((H, W) -> [N, 4], (D, H, W) -> [N, 6]), float64.

    Corners are fractional (quarter pixels, so centre-rule ties occur) unless
    ``integer``; zero-size boxes happen.
    """
    sizes = list(reversed(image_shape))  # x, y(, z)
    n = draw(st.integers(min_boxes, max_boxes))
    step = 1.0 if integer else 0.25
    rows = []
    for _ in range(n):
        lo, hi = [], []
        for s in sizes:
            ticks = int(s / step)
            a = draw(st.integers(0, ticks)) * step
            b = draw(st.integers(0, ticks)) * step
            lo.append(min(a, b))
            hi.append(max(a, b))
        rows.append(lo + hi)
    return np.asarray(rows, dtype=np.float64).reshape(n, 2 * len(sizes))


@st.composite
def float_boxes(
    draw: st.DrawFn, *, dims: int = 2, min_boxes: int = 0, max_boxes: int = 8, span: float = 50.0
) -> np.ndarray:
    """Arbitrary valid (finite, non-inverted) xyxy boxes, possibly negative or zero-size."""
    n = draw(st.integers(min_boxes, max_boxes))
    coord = st.floats(-span, span, allow_nan=False, allow_infinity=False, width=32)
    size = st.one_of(st.just(0.0), st.floats(0, span, allow_nan=False, width=32))
    rows = []
    for _ in range(n):
        lo = [draw(coord) for _ in range(dims)]
        ext = [draw(size) for _ in range(dims)]
        rows.append(lo + [a + e for a, e in zip(lo, ext, strict=True)])
    return np.asarray(rows, dtype=np.float64).reshape(n, 2 * dims)


@st.composite
def label_maps(
    draw: st.DrawFn,
    *,
    ndim: int = 2,
    max_side: int = 12,
    max_label: int = 5,
    dtype: type | np.dtype = np.uint8,
) -> np.ndarray:
    """Small label maps made of a few axis-aligned blocks (runs) plus some noise pixels."""
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype=np.int64)
    for _ in range(draw(st.integers(0, 4))):
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a, s + 1)) for a, s in zip(lo, shape, strict=True)]
        lab[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = rng.integers(
            0, max_label + 1
        )
    if draw(st.booleans()):
        noise = rng.random(shape) < 0.2
        lab[noise] = rng.integers(0, max_label + 1, size=int(noise.sum()))
    return lab.astype(dtype)


# ---------------------------------------------------------------------------
# Records (every field drawn, so a round trip that drops or retypes one fails)
# ---------------------------------------------------------------------------

_text = st.text(max_size=6)
_num = st.floats(allow_nan=False, allow_infinity=False)
_opt = st.none().__or__


def json_values(max_leaves: int = 8) -> st.SearchStrategy:
    """What ``extra`` fields hold: JSON scalars (finite floats), lists and string-keyed objects."""
    leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _num | _text
    return st.recursive(
        leaf,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_text, kids, max_size=3),
        max_leaves=max_leaves,
    )


def _extra() -> st.SearchStrategy:
    # "image_size" is a field of FactualSeed now: an extra key of that name would move there
    return st.dictionaries(_text.filter(lambda k: k != "image_size"), json_values(), max_size=3)


def _floats(n: int) -> st.SearchStrategy:
    return st.tuples(*[_num] * n)


def locations() -> st.SearchStrategy:
    """:class:`~medcurric.anatomy.Location` records."""
    from medcurric.anatomy import Location

    words = _opt(st.sampled_from(["right", "left", "midline", "upper", "middle", "lower"]))
    return st.builds(
        Location,
        organ=_opt(_text),
        laterality=words,
        region=_opt(_text),
        region_phrase=_opt(_text),
        vertical=words,
        anterior_posterior=words,
        transverse=words,
        relative_position=_opt(_floats(3)),
        size_mm=_opt(_floats(2)),
        centre_mm=_opt(_floats(2) | _floats(3)),
        phrase=_text,
    )


def lesion_records() -> st.SearchStrategy:
    """:class:`~medcurric.io.LesionRecord` records (2D and 3D boxes)."""
    from medcurric.io import LesionRecord

    return st.builds(
        LesionRecord,
        id=_text,
        image=_text,
        box=_floats(4) | _floats(6),
        lesion_type=_text,
        slice_index=_opt(st.integers(0, 500)),
        spacing=_opt(_floats(2) | _floats(3)),
        modality=st.sampled_from(["CT", "MR", "CXR"]),
        window=_opt(_floats(2)),
        split=_opt(st.sampled_from(["train", "val", "test"])),
        source=_text,
        extra=_extra(),
    )


def organ_matches() -> st.SearchStrategy:
    """:class:`~medcurric.anatomy.OrganMatch` records with their candidates."""
    from medcurric.anatomy import Candidate, Criterion, MatchLevel, MatchOutcome, OrganMatch

    candidate = st.builds(
        Candidate,
        organ=_text,
        label=_opt(st.integers(0, 200)),
        iou=_num,
        ioa=_num,
        intersection=st.integers(0, 10**9),
    )
    return st.builds(
        OrganMatch,
        organ=_opt(_text),
        label=_opt(st.integers(0, 200)),
        score=_num,
        criterion=st.sampled_from(Criterion),
        outcome=st.sampled_from(MatchOutcome),
        distance_mm=_opt(_num),
        candidates=st.lists(candidate, max_size=3).map(tuple),
        min_score=_num,
        level=st.sampled_from(MatchLevel),
        id=_opt(_text),
    )


def factual_seeds() -> st.SearchStrategy:
    """:class:`~medcurric.seeds.FactualSeed` records, typed fields included."""
    from medcurric.anatomy import Criterion, MatchOutcome
    from medcurric.seeds import FactualSeed

    return st.builds(
        FactualSeed,
        id=_text,
        text=_text,
        lesion_type=_text,
        organ=_opt(_text),
        organ_label=_opt(st.integers(0, 200)),
        outcome=st.sampled_from(MatchOutcome),
        score=_num,
        criterion=st.sampled_from(Criterion),
        image=_text,
        box=_floats(4) | _floats(6),
        location=_opt(locations()),
        location_phrase=_text,
        size_mm=_opt(_floats(2)),
        modality=st.sampled_from(["CT", "MR"]),
        slice_index=_opt(st.integers(0, 500)),
        spacing=_opt(_floats(2) | _floats(3)),
        template=_text,
        source=_text,
        iou=_opt(_num),
        ioa=_opt(_num),
        extra=_extra(),
        image_size=_opt(st.tuples(st.integers(1, 4096), st.integers(1, 4096))),
    )


def cot_samples() -> st.SearchStrategy:
    """:class:`~medcurric.cot.CoTSample` records with verdicts."""
    from medcurric.cot import CoTSample, Verdict

    verdict = st.builds(Verdict, check=_text, passed=st.booleans(), detail=_text)
    return st.builds(
        CoTSample,
        id=_text,
        seed_id=_text,
        stage=st.sampled_from(["easy", "medium", "hard"]),
        question_type=st.sampled_from(["open", "closed"]),
        question=_text,
        rationale=_text,
        answer=_text,
        image=_text,
        box=_opt(_floats(4)),
        box_norm=_opt(_floats(4)),
        image_size=_opt(st.tuples(st.integers(1, 4096), st.integers(1, 4096))),
        organ=_opt(_text),
        lesion_type=_text,
        template=_text,
        backend=_text,
        model=_text,
        verdicts=st.lists(verdict, max_size=3).map(tuple),
        accepted=st.booleans(),
        raw=_text,
        attempts=st.integers(0, 9),
        extra=_extra(),
        reason=_text,
    )


def decisions(*, allow_nan: bool = False) -> st.SearchStrategy:
    """:class:`~medcurric.curriculum.Decision` records, infinities included (NaN on request)."""
    from medcurric.curriculum import Decision, Reason
    from medcurric.stage import Stage

    value = st.floats(allow_nan=allow_nan)
    return st.builds(
        Decision,
        step=st.integers(0, 10**6),
        epoch=_opt(st.integers(0, 100)),
        stage=st.sampled_from(Stage),
        previous_stage=st.sampled_from(Stage),
        switched=st.booleans(),
        reason=st.sampled_from(Reason),
        value=_opt(value),
        best=_opt(value),
        num_bad_checks=st.integers(0, 9),
        patience=st.integers(0, 9),
        gap=_opt(value),
        hard_budget=_opt(value),
        metrics=st.dictionaries(_text, value, max_size=3),
    )
