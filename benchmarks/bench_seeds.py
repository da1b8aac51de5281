"""Lesions per second, end to end, from ``.nii.gz`` label maps on disk to seeds JSONL.

Three pipelines run over the same files in the same process:

* ``ours``: ``medcurric seeds`` (detections CSV + a folder of TotalSegmentator-style
  multilabel ``.nii.gz`` files with label names in the header -> seeds JSONL): each
  case is read once, all its lesions are matched with one overlap call, the
  organs' extents come from one pass, locations and sentences follow.
* ``naive``: what a straightforward script does: ``nib.load(f).get_fdata()`` (float64),
  reorient with nibabel, then per lesion and per label ``(crop == l).sum()`` for
  the box overlap and ``(volume == l).sum()`` for the organ size, pick the best
  IoA and write "There is a {lesion} in the {organ}.".
* ``decompress``: only ``np.asanyarray(nib.load(f).dataobj)`` per file, what reading
  these files through nibabel costs (the target's reference).
* ``inflate``: only medcurric's gzip NIfTI reader (header, size check, data inflated
  into the array, CRC) with the inflater it picks (``inflater`` in the output: isal
  where installed), the floor of ``ours``.
* ``inflate_stdlib``: the same reader over the same files with stdlib :mod:`zlib` as
  the inflater, so ``inflate_speedup_vs_stdlib`` is the inflate step's gain alone.
* ``zlib_decompress``: ``zlib.decompress`` of each whole file (gzip mode, CRC checked),
  one call into a growing ``bytes``, for reference.

``ours``, ``decompress`` and the three inflates are timed round-robin (one repeat of
each in turn), so the machine's load affects them alike; the ratios are given of the medians
and per round (median and min of the per-round ratios). Before every timed call a
``gc.collect()`` runs, untimed: with torch imported the process holds a few hundred
thousand objects, and a full collection (0.1-0.25 s) that earlier allocations made
due would otherwise land in whichever pipeline happens to allocate next (usually
``ours``, the one that builds Python records), not in the one that caused it.

Prints one JSON object. ``--quick`` runs a small smoke configuration.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import tempfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from _timing import round_robin

from medcurric.cli.seeds import main as seeds_main
from medcurric.io import write_nifti
from medcurric.io.nifti import _inflate_gzip_nifti, _inflater
from medcurric.testing import make_phantom


def _write_cases(
    root: Path, n_cases: int, n_distinct: int, shape: tuple[int, int, int]
) -> tuple[Path, Path, int]:
    masks = root / "masks"
    masks.mkdir(parents=True)
    rows = ["id,image,x1,y1,x2,y2,slice_index,label\n"]
    lesions = 0
    phantoms = [make_phantom(seed=s, shape=shape) for s in range(n_distinct)]
    names = dict(phantoms[0].class_map.items())
    for c in range(n_cases):
        ph = phantoms[c % n_distinct]
        write_nifti(ph.labels, masks / f"case{c:03d}.nii.gz", affine=ph.affine, label_names=names)
        for r in ph.key_slice_lesions:
            x1, y1, x2, y2 = r.box
            rows.append(
                f"case{c:03d}/{r.id},case{c:03d}.nii.gz,{x1},{y1},{x2},{y2},{r.slice_index},{r.lesion_type}\n"
            )
            lesions += 1
    det = root / "boxes.csv"
    det.write_text("".join(rows))
    return det, masks, lesions


def _decompress(files: list[Path]) -> None:
    for f in files:
        np.asanyarray(nib.load(str(f)).dataobj)


def _zlib_decompress(files: list[Path]) -> None:
    for f in files:
        zlib.decompress(f.read_bytes(), 31)


def _inflate(files: list[Path], lib: object = None) -> None:
    for f in files:
        _inflate_gzip_nifti(f, lib)


def _naive(det: Path, masks: Path, out: Path) -> None:
    import csv

    from medcurric.anatomy import ClassMap

    cm = ClassMap.totalsegmentator()
    by_case: dict[str, list[dict[str, str]]] = {}
    with det.open() as fh:
        for row in csv.DictReader(fh):
            by_case.setdefault(row["image"], []).append(row)
    with out.open("w") as fh:
        for image, rows in by_case.items():
            img = nib.load(str(masks / image))
            target = nib.orientations.axcodes2ornt(("L", "P", "S"))
            ornt = nib.orientations.ornt_transform(
                nib.orientations.io_orientation(img.affine), target
            )
            vol = nib.orientations.apply_orientation(img.get_fdata(), ornt).transpose(2, 1, 0)
            for row in rows:
                x1, y1, x2, y2 = (round(float(row[k])) for k in ("x1", "y1", "x2", "y2"))
                z = int(row["slice_index"])
                crop = vol[z, y1:y2, x1:x2]
                best, best_score = None, 0.0
                for label, name in cm.items():
                    inter = int((crop == label).sum())
                    if inter == 0:
                        continue
                    _organ = int((vol == label).sum())  # organ size, as an IoU needs
                    score = inter / crop.size
                    if score > best_score:
                        best, best_score = name, score
                text = (
                    f"There is a {row['label']} in the {best}."
                    if best
                    else f"There is a {row['label']}."
                )
                fh.write(
                    json.dumps({"id": row["id"], "text": text, "organ": best, "score": best_score})
                    + "\n"
                )


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        n_cases, shape, repeats, naive_repeats, distinct = 2, (32, 64, 64), 1, 1, 1
    else:
        n_cases, shape, repeats, naive_repeats, distinct = (
            args.cases,
            (96, 256, 256),
            args.repeats,
            args.naive_repeats,
            4,
        )
    root = Path(tempfile.mkdtemp(prefix="bench-seeds-"))
    try:
        det, masks, lesions = _write_cases(root, n_cases, distinct, shape)
        files = sorted(masks.glob("*.nii.gz"))
        counter = iter(range(10**6))

        def ours() -> None:
            out = root / f"ours{next(counter)}.jsonl"
            code = seeds_main(
                [
                    "--detections",
                    str(det),
                    "--format",
                    "csv",
                    "--masks",
                    str(masks),
                    "--out",
                    str(out),
                ]
            )
            if code != 0:
                raise RuntimeError("medcurric seeds failed")

        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            # warm-up: imports, numba cache, page cache; gc.collect() untimed before every
            # call of every pipeline alike (see the module docs)
            times = round_robin(
                {
                    "ours": ours,
                    "decompress": lambda: _decompress(files),
                    "inflate": lambda: _inflate(files),
                    "inflate_stdlib": lambda: _inflate(files, zlib),
                    "zlib_decompress": lambda: _zlib_decompress(files),
                },
                repeats,
                before=gc.collect,
            )
        t_ours, t_dec, t_inf = times["ours"], times["decompress"], times["inflate"]
        t_std, t_zd = times["inflate_stdlib"], times["zlib_decompress"]
        t_naive = round_robin(
            {"naive": lambda: _naive(det, masks, root / "naive.jsonl")},
            naive_repeats,
            before=gc.collect,
        )["naive"]
        # the two pipelines agree on the host organ of every lesion ours calls "inside"
        from medcurric.anatomy import ClassMap

        cm = ClassMap.totalsegmentator()
        ours_rows = [json.loads(x) for x in (root / "ours0.jsonl").read_text().splitlines()]
        naive_rows = {
            r["id"]: r for r in map(json.loads, (root / "naive.jsonl").read_text().splitlines())
        }
        inside = [r for r in ours_rows if r["outcome"] == "inside"]
        agree = sum(
            1
            for r in inside
            if (n := naive_rows[r["id"]]["organ"]) is not None and r["organ"] in (n, cm.group_of(n))
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    m_ours, m_dec, m_naive, m_inf = (statistics.median(t) for t in (t_ours, t_dec, t_naive, t_inf))
    per_round = [o / d for o, d in zip(t_ours, t_dec, strict=True)]
    per_round_inf = [o / d for o, d in zip(t_ours, t_inf, strict=True)]
    per_round_std = [s / i for s, i in zip(t_std, t_inf, strict=True)]
    m_std = statistics.median(t_std)
    result: dict[str, object] = {
        "benchmark": "bench_seeds",
        "quick": bool(args.quick),
        "cases": n_cases,
        "lesions": lesions,
        "shape": list(shape),
        "repeats": repeats,
        "ours": _summary(t_ours),
        "naive": _summary(t_naive),
        "decompress": _summary(t_dec),
        "inflate": _summary(t_inf),
        "inflate_stdlib": _summary(t_std),
        "zlib_decompress": _summary(t_zd),
        "inflater": _inflater().__name__,
        "inflate_speedup_vs_stdlib": m_std / m_inf,
        "inflate_speedup_vs_stdlib_per_round": _summary(per_round_std),
        "ours_lesions_per_s": lesions / m_ours,
        "naive_lesions_per_s": lesions / m_naive,
        "decompress_lesions_per_s": lesions / m_dec,
        "ratio_to_decompress": m_ours / m_dec,
        "ratio_to_decompress_per_round": _summary(per_round),
        "ratio_to_inflate": m_ours / m_inf,
        "ratio_to_inflate_per_round": _summary(per_round_inf),
        "speedup_vs_naive": m_naive / m_ours,
        "host_agreement_inside": agree,
        "inside_lesions": len(inside),
        "cpu": platform.processor() or platform.machine(),
        "threads": os.environ.get("OMP_NUM_THREADS", ""),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
