"""The data stages on a Ray cluster (optional: ``pip install 'medcurric[ray]'``).

Three Ray Data stages, each usable on its own, and a driver for each that writes the
same files as the single-machine command:

* segmentation (:func:`segmentation_stage`, :func:`segment_volumes`): CT volumes ->
  organ masks, one segmenter per actor (``num_gpus`` each), each mask written where
  :func:`medcurric.io.find_cases` looks for it (``<masks>/<image stem>.nii.gz``);
* seeds (:func:`seeds_stage`, :class:`RaySeedRunner`): dataset cases ->
  :class:`~medcurric.seeds.FactualSeed` rows, each case through
  :func:`~medcurric.seeds.seed_case` in an actor;
* generation (:func:`generation_stage`, :func:`generate_samples`): seeds -> samples,
  one :class:`~medcurric.cot.CoTGenerator` per actor with its own backend (a template
  backend, a transformers model on the actor's GPU, or one of several OpenAI-compatible
  endpoints, :func:`openai_endpoints`, round robin), validated and rejected as the
  generator does on one machine.

Rows crossing Ray are plain dicts of strings and numbers: records travel as their JSON
text (``to_dict`` through :mod:`medcurric._serialization`), never as pickled objects.

Exactly once across machines: the driver (the process that calls
:func:`generate_samples` or :func:`~medcurric.seeds.write_seeds`) is the only writer of
the output files. Workers compute and stream their rows back; the driver appends each
record as one flushed JSON line through :class:`~medcurric._jsonl.JsonlWriter`, keyed
by the record's id (the seed id, or the stable :func:`~medcurric.cot.sample_id`), which
skips an id already in the file. So:

* an actor killed mid-batch (``ray.kill``) or a lost worker node returns nothing for
  that batch; Ray Data retries the batch on another actor, or the run stops with the
  error. Either way a record reaches the file only whole, from a finished batch, once;
  a batch that runs twice brings the same ids again, and the writer drops them;
* a driver killed mid-run leaves complete lines (a torn last line is moved aside on the
  next open); a rerun reads the ids already written, ships them to the actors, which
  skip those samples, and appends only what is missing;
* masks are the exception: segmentation actors write them on a file system the
  cluster shares, each to a temporary name renamed into place when complete, and a
  rerun skips masks that exist.

The driver's share of the work is one JSON line per record (microseconds), far below
what a segmentation or generation actor takes per item; several drivers can still split
one run with ``shard=(i, n)`` (``--shard i/n``), each writing its own files.

Order: seeds keep the order of the cases (Ray Data's ``preserve_order``), so their file
is byte-identical to ``medcurric seeds``'. Samples are written as batches finish: the
same lines as ``medcurric generate`` (which does not promise an order either: replies
and re-asks come back as they finish), possibly in another order.

Ray is imported only when a stage runs; ``import medcurric`` never imports it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medcurric._optional import require
from medcurric._paths import safe_join
from medcurric.cot.backends import Backend, OpenAIBackend, TemplateBackend
from medcurric.cot.generator import CoTGenerator, RunSummary, _Failure, seeds_of_shard
from medcurric.errors import (
    ClusterUnreachableError,
    DataFormatError,
    InvalidOptionError,
    WrongTypeError,
)
from medcurric.io.datasets import Case, DetectionFormat, _stem
from medcurric.io.records import LabelMap, LesionRecord
from medcurric.seeds.pipeline import SeedReject
from medcurric.seeds.pipeline import rejects_path as default_rejects_path
from medcurric.seeds.records import FactualSeed
from medcurric.vocabulary.classmap import ClassMap

__all__ = [
    "RaySeedRunner",
    "SegmentRun",
    "connect",
    "decode_case",
    "encode_case",
    "generate_samples",
    "generation_stage",
    "mask_path",
    "openai_endpoints",
    "seeds_stage",
    "segment_volumes",
    "segmentation_stage",
    "transformers_backend",
]

logger = logging.getLogger(__name__)

#: A backend, or a factory ``actor index -> backend`` run once in each actor.
BackendSpec = Backend | Callable[[int], Backend]


def _ray() -> Any:
    return require("ray", feature="medcurric.distributed")


def connect(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join a Ray cluster, or start one on this machine; nothing when Ray is already up.

    A malformed or unreachable ``host:port`` fails here at once, also when Ray is up.

    Args:
        address: ``None`` starts a local cluster; ``"auto"`` joins the cluster this
            machine belongs to (``ray start`` ran here); ``"host:port"`` joins that head
            node's GCS; ``"ray://host:10001"`` connects through Ray Client.
        num_cpus: CPUs of a local cluster (default: all of them); ignored when joining.

    Raises:
        MissingDependencyError: When ray is not installed (names the ``ray`` extra).
        ClusterUnreachableError: When no cluster answers at ``address``.
    """
    ray = _ray()
    if address is not None and address not in ("auto", "local") and "://" not in address:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ClusterUnreachableError(
                f"Expected a Ray address as 'host:port', 'auto' or 'ray://host:port', but got "
                f"{address!r}."
            )
        try:  # ray.init retries an unreachable address for a minute: ask once, quickly
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ClusterUnreachableError(
                f"No Ray cluster answers at {address!r} ({exc.strerror or exc}). Start one with "
                "`ray start --head` and pass the address it prints, pass 'auto' on a machine of "
                "the cluster, or leave the address out to start a local cluster."
            ) from exc
    if ray.is_initialized():
        return
    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address is None or address == "local":
        options.update(address="local", num_cpus=num_cpus)
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise ClusterUnreachableError(
            f"Could not join the Ray cluster at {address!r}: {exc}. Start one with "
            "`ray start --head`, or leave the address out to start a local cluster."
        ) from exc
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _map(
    ds: Any,
    worker: type,
    kwargs: Mapping[str, Any],
    *,
    actors: int,
    batch_size: int,
    num_cpus: float,
    num_gpus: float,
) -> Any:
    if actors < 1 or batch_size < 1 or num_cpus < 0 or num_gpus < 0:
        raise InvalidOptionError(
            "Expected actors >= 1, batch_size >= 1, num_cpus >= 0 and num_gpus >= 0, but got "
            f"{actors}, {batch_size}, {num_cpus} and {num_gpus}."
        )
    ray = _ray()
    options: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus:
        options["num_gpus"] = num_gpus
    return ds.map_batches(
        worker,
        fn_constructor_kwargs=dict(kwargs),
        batch_size=batch_size,
        batch_format="default",
        compute=ray.data.ActorPoolStrategy(size=actors),
        **options,
    )


def _texts(column: Any) -> list[str]:
    return [str(v) for v in column]


# ---------------------------------------------------------------------- cases as rows


def encode_case(case: Case) -> str:
    """A case as JSON text, the form it crosses Ray in (:func:`decode_case` reads it back).

    An in-memory label map travels with it (its array as nested lists); a case on disk
    carries its mask path, which every worker must be able to read.

    Examples:
        >>> from medcurric.testing import phantom_dataset
        >>> case = phantom_dataset(1)[0]
        >>> back = decode_case(encode_case(case))
        >>> back.key, back.records == case.records
        ('phantom0', True)
        >>> bool((back.label_map.array == case.label_map.array).all())
        True
    """
    from medcurric._serialization import to_jsonable

    lm = case.label_map
    data = {
        "key": case.key,
        "records": [r.to_dict() for r in case.records],
        "mask": str(case.mask) if case.mask is not None else None,
        "error": case.error,
        "first_slice": dict(case.first_slice),
        "stored_slices": case.stored_slices,
        "fmt": case.fmt.value if case.fmt is not None else None,
        "label_map": None
        if lm is None
        else {
            "array": to_jsonable(lm.array),
            "dtype": str(lm.array.dtype),
            "class_map": lm.class_map.to_dict(),
            "spacing": to_jsonable(lm.spacing),
            "affine": to_jsonable(lm.affine),
            "source": lm.source,
        },
    }
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def decode_case(text: str) -> Case:
    """The case :func:`encode_case` wrote.

    Raises:
        DataFormatError: When ``text`` is not an encoded case.
    """
    try:
        data = json.loads(text)
        lm_data = data["label_map"]
        label_map = None
        if lm_data is not None:
            label_map = LabelMap(
                np.asarray(lm_data["array"], dtype=lm_data["dtype"]),
                ClassMap.from_dict(lm_data["class_map"]),
                spacing=tuple(lm_data["spacing"]) if lm_data["spacing"] is not None else None,
                affine=np.asarray(lm_data["affine"]) if lm_data["affine"] is not None else None,
                source=lm_data["source"],
            )
        return Case(
            key=data["key"],
            records=[LesionRecord.from_dict(r) for r in data["records"]],
            mask=Path(data["mask"]) if data["mask"] is not None else None,
            label_map=label_map,
            error=data["error"],
            first_slice={str(k): int(v) for k, v in data["first_slice"].items()},
            stored_slices=bool(data["stored_slices"]),
            fmt=DetectionFormat(data["fmt"]) if data["fmt"] is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"Expected a case encoded by encode_case, but got: {exc}") from exc


# ---------------------------------------------------------------------- segmentation


def mask_path(image: str, masks: str | os.PathLike[str]) -> Path:
    """Where :func:`medcurric.io.find_cases` looks for the mask of ``image`` (csv / coco rule).

    Examples:
        >>> mask_path("ct/case7.nii.gz", "/data/masks").as_posix()
        '/data/masks/ct/case7.nii.gz'
    """
    return safe_join(Path(masks), _stem(str(image)) + ".nii.gz")


@dataclass
class SegmentRun:
    """What :func:`segment_volumes` did.

    Attributes:
        written: Masks written by this run.
        skipped: Volumes whose mask was already there.
        failed: Volumes that could not be segmented (a rerun tries them again).
        errors: The first few failure messages.
    """

    written: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class _Segment:
    """One segmenter per actor; writes each mask under a temporary name, then renames it."""

    def __init__(self, segmenter: Callable[[], Any], image_root: str, masks: str) -> None:
        self.segmenter = segmenter()
        if not callable(getattr(self.segmenter, "segment", None)):
            raise WrongTypeError(
                f"Expected a segmenter with segment(image, output), but got "
                f"{type(self.segmenter).__name__}."
            )
        self.image_root = Path(image_root)
        self.masks = Path(masks)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"image": [], "mask": [], "status": [], "error": []}
        for image in _texts(batch["image"]):
            status, error = "written", ""
            try:
                target = mask_path(image, self.masks)
                if target.exists():
                    status = "exists"
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial.nii.gz")
                    try:
                        self.segmenter.segment(safe_join(self.image_root, image), tmp)
                        os.replace(tmp, target)
                    finally:
                        tmp.unlink(missing_ok=True)
            except Exception as exc:  # one bad volume: report it, carry on with the others
                status, error = "failed", f"{image}: {type(exc).__name__}: {exc}"
            out["image"].append(image)
            out["mask"].append(str(mask_path(image, self.masks)) if status != "failed" else "")
            out["status"].append(status)
            out["error"].append(error)
        return out


def segmentation_stage(
    ds: Any,
    image_root: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    segmenter: Callable[[], Any] | None = None,
    actors: int = 1,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
) -> Any:
    """Map rows ``{"image": path under image_root}`` to ``{"image", "mask", "status", "error"}``.

    Args:
        ds: A Ray dataset with an ``image`` column (CT NIfTI paths relative to ``image_root``).
        image_root: Folder the images are under (shared by the cluster).
        masks: Folder the masks go to (shared by the cluster), named by :func:`mask_path`.
        segmenter: A factory run once per actor, returning an object with
            ``segment(image_path, output_path)`` (default:
            :class:`~medcurric.segment.TotalSegmentatorSegmenter`).
        actors: Segmenter actors (each holds its model).
        num_gpus: GPUs per actor (0 on CPU).
        num_cpus: CPUs per actor.

    Returns:
        The mapped dataset; ``status`` is ``written``, ``exists`` or ``failed``.
    """
    if segmenter is None:
        from medcurric.segment import TotalSegmentatorSegmenter

        segmenter = TotalSegmentatorSegmenter
    kwargs = {"segmenter": segmenter, "image_root": str(image_root), "masks": str(masks)}
    return _map(
        ds, _Segment, kwargs, actors=actors, batch_size=1, num_cpus=num_cpus, num_gpus=num_gpus
    )


def segment_volumes(
    images: Iterable[str],
    image_root: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    segmenter: Callable[[], Any] | None = None,
    actors: int = 1,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    address: str | None = None,
) -> SegmentRun:
    """Segment CT volumes on a Ray cluster, writing each mask where ``seeds`` reads it.

    Volumes whose mask exists are skipped (here, and again in the actor), so a rerun
    after a killed actor or driver segments only what is missing.

    Args:
        images: CT paths relative to ``image_root`` (as the detection file names them).
        image_root: Folder of the volumes, readable by every worker.
        masks: Folder of the masks, writable by every worker.
        segmenter: Factory of the segmenter (see :func:`segmentation_stage`).
        actors: Segmenter actors.
        num_gpus: GPUs per actor.
        num_cpus: CPUs per actor.
        address: Ray cluster (see :func:`connect`).

    Returns:
        The counts of the run.
    """
    run = SegmentRun()
    todo = []
    for image in dict.fromkeys(str(i) for i in images):
        if mask_path(image, masks).exists():
            run.skipped += 1
        else:
            todo.append({"image": image})
    if not todo:
        return run
    connect(address)
    ray = _ray()
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    stage = segmentation_stage(
        ds, image_root, masks, segmenter=segmenter, actors=actors, num_gpus=num_gpus,
        num_cpus=num_cpus,
    )  # fmt: skip
    for row in stage.iter_rows():
        if row["status"] == "written":
            run.written += 1
        elif row["status"] == "exists":
            run.skipped += 1
        else:
            run.failed += 1
            if len(run.errors) < 20:
                run.errors.append(str(row["error"]))
    return run


# ---------------------------------------------------------------------- seeds


class _Seeds:
    """The seeds job in an actor (its matcher keeps its tables across the actor's cases)."""

    def __init__(self, job: Callable[[Case], list[FactualSeed | SeedReject]]) -> None:
        self.job = job

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"case": [], "kind": [], "data": []}
        for index, text in zip(batch["case"], _texts(batch["json"]), strict=True):
            for item in self.job(decode_case(text)):
                kind = "reject" if isinstance(item, SeedReject) else "seed"
                out["case"].append(int(index))
                out["kind"].append(kind)
                out["data"].append(json.dumps(item.to_dict(), separators=(",", ":")))
        return out


def seeds_stage(
    ds: Any,
    job: Callable[[Case], list[FactualSeed | SeedReject]] | None = None,
    *,
    actors: int = 2,
    batch_size: int = 1,
    num_cpus: float = 1.0,
) -> Any:
    """Map rows ``{"case": index, "json": encode_case(case)}`` to seed and reject rows.

    Each output row is ``{"case": index, "kind": "seed" | "reject", "data": JSON}``: the
    seed's ``to_dict`` or the rejects-file line (:meth:`~medcurric.seeds.SeedReject.to_dict`).

    Args:
        ds: A Ray dataset of encoded cases (:func:`encode_case`).
        job: ``Case -> seeds and rejects``, picklable (default:
            :func:`~medcurric.seeds.seed_case` with its defaults; bind options with
            ``functools.partial(seed_case, matcher=..., builder=...)``).
        actors: Actors (one CPU-bound case at a time each).
        batch_size: Cases per call of an actor (more amortises Ray's cost per call when
            cases are cheap; one is right for label maps that take seconds).
        num_cpus: CPUs per actor.

    Returns:
        The mapped dataset.
    """
    if job is None:
        from medcurric.seeds.pipeline import seed_case

        job = seed_case
    return _map(
        ds, _Seeds, {"job": job}, actors=actors, batch_size=batch_size, num_cpus=num_cpus,
        num_gpus=0.0,
    )  # fmt: skip


def _item(kind: str, data: dict[str, Any]) -> FactualSeed | SeedReject:
    if kind == "reject":
        return SeedReject.from_dict(data)
    return FactualSeed.from_dict(data)


@dataclass(frozen=True)
class RaySeedRunner:
    """Run :func:`~medcurric.seeds.write_seeds`' cases on a Ray cluster (its ``runner``).

    Cases go to ``actors`` actors through :func:`seeds_stage` and come back in their
    order, so ``write_seeds(cases, out, runner=RaySeedRunner())`` writes the same file,
    byte for byte, as ``write_seeds(cases, out)``.

    Args:
        actors: Seed actors (``medcurric seeds --engine ray --workers N``).
        num_cpus: CPUs per actor.
        address: Ray cluster (see :func:`connect`).
        cases_per_batch: Cases per call of an actor; by default the cases are cut into
            about four batches per actor (load balance, and little cost per call).
    """

    actors: int = 2
    num_cpus: float = 1.0
    address: str | None = None
    cases_per_batch: int | None = None

    def __call__(
        self, job: Callable[[Case], list[FactualSeed | SeedReject]], cases: list[Case]
    ) -> Iterator[list[FactualSeed | SeedReject]]:
        """Yield each case's seeds and rejects, in the cases' order."""
        if not cases:
            return
        connect(self.address)
        ray = _ray()
        rows = [{"case": i, "json": encode_case(c)} for i, c in enumerate(cases)]
        batch = self.cases_per_batch or max(1, -(-len(rows) // (4 * self.actors)))
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch)))
        ds.context.execution_options.preserve_order = True
        stage = seeds_stage(
            ds, job, actors=self.actors, batch_size=batch, num_cpus=self.num_cpus
        )
        current = -1
        results: list[FactualSeed | SeedReject] = []
        for row in stage.iter_rows():
            index = int(row["case"])
            if index != current and results:
                yield results
                results = []
            current = index
            results.append(_item(str(row["kind"]), json.loads(row["data"])))
        if results:
            yield results


# ---------------------------------------------------------------------- generation


def _openai_at(
    model: str, base_urls: tuple[str, ...], options: Mapping[str, Any], index: int
) -> OpenAIBackend:
    return OpenAIBackend(model, base_url=base_urls[index % len(base_urls)], **options)


def openai_endpoints(model: str, base_urls: Sequence[str], **options: Any) -> Callable[[int], Backend]:
    """A backend factory spreading actors over OpenAI-compatible endpoints, round robin.

    Actor ``i`` talks to ``base_urls[i % len(base_urls)]`` (one vLLM / SGLang server per
    GPU node, say); every endpoint must serve the same ``model``, so every sample id is the
    same whichever endpoint wrote it.

    Args:
        model: The served model name.
        base_urls: Endpoints, each up to ``/v1``.
        **options: Further :class:`~medcurric.cot.OpenAIBackend` options (``concurrency``...).

    Returns:
        A picklable ``actor index -> OpenAIBackend``.

    Examples:
        >>> make = openai_endpoints("m", ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"])
        >>> [make(i).base_url for i in range(3)]  # doctest: +SKIP
        ['http://127.0.0.1:8000/v1', 'http://127.0.0.1:8001/v1', 'http://127.0.0.1:8000/v1']
    """
    urls = tuple(str(u) for u in base_urls)
    if not urls:
        raise InvalidOptionError("Expected at least one endpoint URL, but got none.")
    return functools.partial(_openai_at, str(model), urls, dict(options))


def _transformers_at(model: str, options: Mapping[str, Any], index: int) -> Backend:
    from medcurric.cot.backends import TransformersBackend

    return TransformersBackend.from_pretrained(model, **options)


def transformers_backend(model: str, **options: Any) -> Callable[[int], Backend]:
    """A backend factory loading a transformers model once in each actor (on its GPU).

    Args:
        model: HF id or local folder (present on every worker: nothing is downloaded here).
        **options: :meth:`~medcurric.cot.TransformersBackend.from_pretrained` options
            (``device``, ``dtype``, ``batch_size``, ``max_new_tokens``).

    Returns:
        A picklable ``actor index -> TransformersBackend``.
    """
    return functools.partial(_transformers_at, str(model), dict(options))


class _Counter:
    """Hands out actor indices 0, 1, 2... (a Ray actor: one count for the whole cluster)."""

    def __init__(self) -> None:
        self.value = -1

    def next(self) -> int:
        self.value += 1
        return self.value


def _is_backend(backend: Any) -> bool:
    return all(hasattr(backend, a) for a in ("name", "model_name", "needs_images", "complete"))


class _Generate:
    """One :class:`~medcurric.cot.CoTGenerator` per actor: plans, asks, parses and validates."""

    def __init__(
        self,
        backend: BackendSpec,
        options: Mapping[str, Any],
        lexicon: Any,
        accepted: frozenset[str],
        rejected: frozenset[str],
        counter: Any,
    ) -> None:
        if _is_backend(backend):
            made = backend
        else:
            index = int(_ray().get(counter.next.remote())) if counter is not None else 0
            made = backend(index)  # type: ignore[operator]
        self.generator = CoTGenerator(made, vocabulary=lexicon, **options)  # type: ignore[arg-type]
        self.accepted = accepted
        self.rejected = rejected

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[str]]:
        gen = self.generator
        seeds = [FactualSeed.from_dict(json.loads(t)) for t in _texts(batch["seed"])]
        lexicon = gen.lexicon(seeds)
        counts = RunSummary()

        def skip(rid: str) -> bool:
            return rid in self.accepted or rid in self.rejected

        def skipped(rid: str) -> None:
            if rid in self.accepted:
                counts.accepted_before += 1
            elif rid in self.rejected:
                counts.rejected_before += 1

        def reasked() -> None:
            counts.reasked += 1

        out: dict[str, list[str]] = {"kind": [], "data": []}
        # the generator's own planning, skipping, asking and judging: what run() composes
        jobs = gen._jobs(seeds, lexicon, skip, counts, skipped)
        for outcome in gen._execute(jobs, lexicon, reasked):
            if isinstance(outcome, _Failure):
                out["kind"].append("failure")
                data: dict[str, Any] = {"message": outcome.message, "count": outcome.count}
            else:
                out["kind"].append("sample")
                data = outcome.to_dict()
            out["data"].append(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
        out["kind"].append("counts")
        out["data"].append(
            json.dumps(
                {k: getattr(counts, k) for k in _COUNTS}, separators=(",", ":")
            )
        )
        return out


#: The RunSummary counters an actor keeps per batch (the driver adds them up).
_COUNTS = ("planned", "skipped", "accepted_before", "rejected_before", "reasked")


def generation_stage(
    ds: Any,
    backend: BackendSpec | None = None,
    *,
    lexicon: Any = None,
    done: tuple[Iterable[str], Iterable[str]] = ((), ()),
    actors: int = 2,
    batch_size: int = 16,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    **options: Any,
) -> Any:
    """Map rows ``{"seed": JSON}`` to sample, failure and count rows.

    Output rows are ``{"kind", "data"}``: ``sample`` (a :class:`~medcurric.cot.CoTSample`'s
    ``to_dict``, accepted or rejected with its verdicts), ``failure`` (``message`` and
    ``count``: a request that failed for good, retried by the next run) and one ``counts``
    row per batch (``planned``, ``skipped``, ``accepted_before``, ``rejected_before``,
    ``reasked``).

    Args:
        ds: A Ray dataset of seeds (``json.dumps(seed.to_dict())`` in a ``seed`` column).
        backend: A backend (pickled to every actor: the template backend) or a factory
            ``actor index -> backend`` run in each actor (:func:`openai_endpoints`,
            :func:`transformers_backend`); default :class:`~medcurric.cot.TemplateBackend`.
        lexicon: The organ lexicon for validation; pass the one the driver built from all
            seeds (:meth:`~medcurric.cot.CoTGenerator.lexicon`) so every actor judges alike.
        done: Sample ids already accepted and already rejected (skipped, as a rerun does).
        actors: Generator actors.
        batch_size: Seeds per call of an actor.
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor (a transformers model).
        **options: :class:`~medcurric.cot.CoTGenerator` options (``stages``,
            ``question_types``, ``templates``, ``image_root``, ``max_reasks``...).

    Returns:
        The mapped dataset.
    """
    backend = backend if backend is not None else TemplateBackend()
    if not _is_backend(backend) and not callable(backend):
        raise WrongTypeError(
            "Expected a backend or a factory 'actor index -> backend', but got "
            f"{type(backend).__name__}."
        )
    counter = None if _is_backend(backend) else _ray().remote(_Counter).options(num_cpus=0).remote()
    kwargs = {
        "backend": backend,
        "options": options,
        "lexicon": lexicon,
        "accepted": frozenset(done[0]),
        "rejected": frozenset(done[1]),
        "counter": counter,
    }
    return _map(
        ds, _Generate, kwargs, actors=actors, batch_size=batch_size, num_cpus=num_cpus,
        num_gpus=num_gpus,
    )  # fmt: skip


def generate_samples(
    seeds: Iterable[FactualSeed],
    samples_path: str | os.PathLike[str],
    rejects_path: str | os.PathLike[str] | None = None,
    *,
    backend: BackendSpec | None = None,
    shard: tuple[int, int] | str = (0, 1),
    limit: int | None = None,
    actors: int = 2,
    batch_size: int = 16,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    address: str | None = None,
    progress: bool | None = None,
    fsync: bool = False,
    **options: Any,
) -> RunSummary:
    """:meth:`CoTGenerator.run <medcurric.cot.CoTGenerator.run>` on a Ray cluster.

    The same files, ids and summary as ``CoTGenerator(backend, **options).run(seeds, ...)``:
    the seeds of the shard (and the limit) are split into batches over ``actors``
    generator actors; this process writes every line (see the module's notes on
    exactly once) and skips ids already in either file.

    Args:
        seeds: Factual seeds (all of them: this driver keeps its shard).
        samples_path: Accepted samples, appended.
        rejects_path: Rejected samples (default ``<samples stem>.rejects.jsonl``).
        backend: A backend or a factory ``actor index -> backend`` (see
            :func:`generation_stage`); default the template backend.
        shard: ``(i, n)`` or ``"i/n"``: keep seeds with ``shard_of(seed.id, n) == i``.
        limit: At most this many seeds of the shard.
        actors: Generator actors.
        batch_size: Seeds per call of an actor.
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor.
        address: Ray cluster (see :func:`connect`).
        progress: Show a progress bar on stderr (``None``: only on a terminal).
        fsync: ``os.fsync`` after every line.
        **options: :class:`~medcurric.cot.CoTGenerator` options.

    Returns:
        The :class:`~medcurric.cot.RunSummary`, counted as the single-process run counts.

    Examples:
        >>> import tempfile
        >>> from medcurric.cot import CoTGenerator, TemplateBackend
        >>> from medcurric.seeds import write_seeds, read_seeds
        >>> from medcurric.testing import phantom_dataset
        >>> tmp = tempfile.mkdtemp()
        >>> _ = write_seeds(phantom_dataset(1), f"{tmp}/seeds.jsonl", progress=False)
        >>> summary = generate_samples(read_seeds(f"{tmp}/seeds.jsonl"), f"{tmp}/ray.jsonl",
        ...                            progress=False)  # doctest: +SKIP
        >>> local = CoTGenerator(TemplateBackend()).run(read_seeds(f"{tmp}/seeds.jsonl"),
        ...                                             f"{tmp}/local.jsonl", progress=False)
        >>> summary.to_dict() == local.to_dict()  # doctest: +SKIP
        True
    """
    from tqdm.auto import tqdm

    from medcurric._jsonl import JsonlWriter

    mine = seeds_of_shard(seeds, shard, limit)
    samples = Path(samples_path)
    rejects = Path(rejects_path) if rejects_path is not None else default_rejects_path(samples)
    # the options fail here, before the cluster; the lexicon is built once from every seed
    vocabulary = options.pop("vocabulary", None)
    planner = CoTGenerator(TemplateBackend(), vocabulary=vocabulary, **options)
    lexicon = planner.lexicon(mine)
    summary = RunSummary()
    total = len(mine) * len(planner.stages) * len(planner.question_types)
    disable = None if progress is None else not progress
    bar = tqdm(total=total, unit="sample", desc="generate", disable=disable, file=sys.stderr)
    with (
        JsonlWriter(samples, fsync=fsync) as good,
        JsonlWriter(rejects, fsync=fsync) as bad,
    ):
        if mine:
            connect(address)
            ray = _ray()
            rows = [{"seed": json.dumps(s.to_dict(), ensure_ascii=False)} for s in mine]
            blocks = max(1, -(-len(rows) // batch_size))
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            stage = generation_stage(
                ds, backend, lexicon=lexicon, done=(good.seen, bad.seen), actors=actors,
                batch_size=batch_size, num_cpus=num_cpus, num_gpus=num_gpus, **options,
            )  # fmt: skip
            for row in stage.iter_rows():
                _settle(str(row["kind"]), json.loads(row["data"]), good, bad, summary, bar)
    bar.close()
    return summary


def _settle(kind: str, data: dict[str, Any], good: Any, bad: Any, summary: RunSummary, bar: Any) -> None:
    """Write one row of the generation stage and count it, as :meth:`CoTGenerator.run` does."""
    if kind == "counts":
        for key in _COUNTS:
            setattr(summary, key, getattr(summary, key) + int(data[key]))
        bar.update(int(data["skipped"]))
        return
    if kind == "failure":
        summary.failed += int(data["count"])
        if len(summary.errors) < 20:
            summary.errors.append(str(data["message"]))
        logger.warning("generation failed: %s", data["message"])
        bar.update(int(data["count"]))
        return
    if data.get("accepted"):
        if good.write(data):
            summary.accepted += 1
    elif bad.write(data):
        summary.rejected += 1
    bar.update(1)
