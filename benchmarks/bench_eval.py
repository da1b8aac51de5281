"""Throughput of medcurric.eval on test-set-sized inputs, with baselines in the same run.

- ``vqa_default`` / ``vqa_llava_med``: :func:`medcurric.eval.score_vqa` on a synthetic
  PathVQA-test-sized set (6,719 questions, half open, half closed), per question in
  microseconds. Baseline ``vqa_normalize_only``: just normalising both answers of every
  question (the floor any scorer pays).
- ``grounding``: :func:`medcurric.eval.attention_in_box` + :func:`pointing_game` on N
  24 x 24 attention maps, per map in microseconds. Baseline ``grounding_loop``: the
  straightforward per-patch Python loop (cell/box overlap for each of the 576 patches).

Fixed seed, one warm-up, median and quartiles over repeats. Prints one JSON object.

Usage: python benchmarks/bench_eval.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from medcurric.eval import VQAItem, attention_in_box, normalize_answer, pointing_game, score_vqa

PATHVQA_TEST = 6719
_WORDS = [
    "the",
    "left",
    "lung",
    "liver",
    "nodule",
    "yes",
    "no",
    "two",
    "1.5",
    "cm",
    "mass",
    "lesion",
    "in",
    "of",
    "is",
    "there",
    "a",
    "granuloma",
    "tissue",
    "normal",
]


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _time(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _stats(times: list[float], per: int) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    scale = 1e6 / per
    return {
        "median_us": statistics.median(times) * scale,
        "q1_us": q[0] * scale,
        "q3_us": q[2] * scale,
    }


def _loop_grounding(maps: np.ndarray, boxes: np.ndarray, g: int) -> None:
    for att, b in zip(maps, boxes, strict=True):
        total = att.sum()
        inside = 0.0
        for k in range(g * g):
            r, c = divmod(k, g)
            ox = max(0.0, min((c + 1) / g, b[2]) - max(c / g, b[0])) * g
            oy = max(0.0, min((r + 1) / g, b[3]) - max(r / g, b[1])) * g
            inside += att[k] * min(ox, 1.0) * min(oy, 1.0)
        _ = inside / total
        k = int(np.argmax(att))
        r, c = divmod(k, g)
        _ = (min((c + 1) / g, b[2]) > max(c / g, b[0])) and (
            min((r + 1) / g, b[3]) > max(r / g, b[1])
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--questions", type=int, default=PATHVQA_TEST)
    parser.add_argument("--maps", type=int, default=2000)
    args = parser.parse_args(argv)
    n_q = 200 if args.quick else args.questions
    n_maps = 50 if args.quick else args.maps
    repeats = 2 if args.quick else 7

    rng = random.Random(0)
    refs, preds = [], {}
    for i in range(n_q):
        closed = i % 2 == 1
        answer = (
            rng.choice(["yes", "no"])
            if closed
            else " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))
        )
        refs.append(VQAItem(str(i), "q", answer, "closed" if closed else "open"))
        preds[str(i)] = " ".join(rng.choices(_WORDS, k=rng.randint(1, 12))) + rng.choice(
            [".", ",", "!", ""]
        )

    def norm_only() -> None:
        for r in refs:
            normalize_answer(r.answer)
            normalize_answer(preds[r.id])

    results: dict[str, Any] = {
        "vqa_default": _stats(_time(lambda: score_vqa(refs, preds), repeats), n_q),
        "vqa_llava_med": _stats(
            _time(lambda: score_vqa(refs, preds, compat="llava-med"), repeats), n_q
        ),
        "vqa_normalize_only": _stats(_time(norm_only, repeats), n_q),
    }
    gen = np.random.default_rng(0)
    g = 24
    maps = gen.random((n_maps, g * g))
    lo = gen.random((n_maps, 2)) * 0.7
    boxes = np.concatenate([lo, lo + 0.05 + gen.random((n_maps, 2)) * 0.25], axis=1)

    def ours() -> None:
        attention_in_box(maps, boxes, g)
        pointing_game(maps, boxes, g)

    results["grounding"] = _stats(_time(ours, repeats), n_maps)
    results["grounding_loop"] = _stats(
        _time(lambda: _loop_grounding(maps, boxes, g), repeats), n_maps
    )
    out = {
        "benchmark": "eval",
        "questions": n_q,
        "maps": n_maps,
        "grid": [g, g],
        "repeats": repeats,
        "cpu": _cpu(),
        "results": results,
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
