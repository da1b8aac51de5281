"""The Ray stages give the single-process records, survive a killed actor, and run from the CLI.

One local cluster (2 CPUs) serves the whole module; every test compares against the
single-process run on the same inputs.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray stages need ray: pip install 'medcurric[ray]'")

from medcurric.cli import main  # noqa: E402
from medcurric.cot import CoTGenerator, TemplateBackend  # noqa: E402
from medcurric.cot.backends import Completion  # noqa: E402
from medcurric.distributed import (  # noqa: E402
    RaySeedRunner,
    connect,
    generate_samples,
    mask_path,
    segment_volumes,
)
from medcurric.errors import ClusterUnreachableError  # noqa: E402
from medcurric.io import find_cases, read_detections, write_nifti  # noqa: E402
from medcurric.seeds import read_seeds, rejects_path, write_seeds  # noqa: E402
from medcurric.testing import make_phantom, phantom_dataset  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    # workers import this module's helpers by value: the test folder is not on their path
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in _lines(path)]


@pytest.fixture(scope="module")
def seeds_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    write_seeds(phantom_dataset(3), out, progress=False)
    return out


def test_seeds_on_ray_are_the_local_file_byte_for_byte(cluster, tmp_path):
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    a = write_seeds(phantom_dataset(3), local, progress=False)
    b = write_seeds(phantom_dataset(3), on_ray, progress=False, runner=RaySeedRunner(actors=2))
    assert local.read_bytes() == on_ray.read_bytes() and len(_lines(local)) == 30
    assert (a.written, a.rejected, a.table()) == (b.written, b.rejected, b.table())
    # a rerun on Ray skips every id already there
    c = write_seeds(phantom_dataset(4), on_ray, progress=False, runner=RaySeedRunner(actors=2))
    write_seeds(phantom_dataset(4), local, progress=False)
    assert (c.skipped, c.written) == (30, 10) and local.read_bytes() == on_ray.read_bytes()


class CopySegmenter:
    """Stands in for TotalSegmentatorSegmenter: the 'CT' files here already hold the labels."""

    def __init__(self) -> None:
        self.calls = 0

    def segment(self, image, output=None):
        self.calls += 1
        shutil.copyfile(image, output)  # a missing volume raises, as TotalSegmentator would


def test_segmentation_writes_masks_where_seeds_finds_them(cluster, tmp_path):
    root, masks = tmp_path / "ct-root", tmp_path / "masks"
    (root / "ct").mkdir(parents=True)
    phantoms = [make_phantom(seed=s) for s in (0, 1)]
    rows = ["id,image,x1,y1,x2,y2,slice_index,label\n"]
    for k, ph in enumerate(phantoms):
        names = dict(ph.class_map.items())
        write_nifti(ph.labels, root / "ct" / f"case{k}.nii.gz", affine=ph.affine, label_names=names)
        for r in ph.key_slice_lesions[:4]:
            x1, y1, x2, y2 = r.box
            rows.append(f"c{k}-{r.id},ct/case{k}.nii.gz,{x1},{y1},{x2},{y2},{r.slice_index},cyst\n")
    rows.append("lost,ct/broken.nii.gz,1,1,5,5,3,cyst\n")  # its volume is missing
    csv = tmp_path / "boxes.csv"
    csv.write_text("".join(rows))
    images = ["ct/case0.nii.gz", "ct/case1.nii.gz", "ct/broken.nii.gz"]

    run = segment_volumes(images, root, masks, segmenter=CopySegmenter, actors=2, num_gpus=0)
    assert (run.written, run.skipped, run.failed) == (2, 0, 1)
    assert "ct/broken.nii.gz" in run.errors[0]
    for k in (0, 1):
        assert mask_path(f"ct/case{k}.nii.gz", masks).read_bytes() == (
            root / "ct" / f"case{k}.nii.gz"
        ).read_bytes()
    assert not list(masks.rglob("*.partial*"))  # nothing half-written is left behind
    again = segment_volumes(images, root, masks, segmenter=CopySegmenter, actors=2, num_gpus=0)
    assert (again.written, again.skipped, again.failed) == (0, 2, 1)

    # the masks are where find_cases looks; seeds on Ray over them are the local seeds
    cases = find_cases(read_detections(csv, "csv"), masks)
    assert [c.mask is not None for c in cases] == [True, True, False]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    write_seeds(cases, local, progress=False)
    write_seeds(cases, on_ray, progress=False, runner=RaySeedRunner(actors=2))
    assert len(_lines(local)) == 8 and local.read_bytes() == on_ray.read_bytes()
    assert _ids(rejects_path(local)) == ["lost"]
    assert rejects_path(local).read_bytes() == rejects_path(on_ray).read_bytes()


def test_generation_on_ray_gives_the_local_records(cluster, tmp_path, seeds_file):
    seeds = read_seeds(seeds_file)
    local = CoTGenerator(TemplateBackend()).run(seeds, tmp_path / "local.jsonl", progress=False)
    on_ray = generate_samples(seeds, tmp_path / "ray.jsonl", actors=2, batch_size=4, progress=False)
    assert on_ray.to_dict() == local.to_dict() and local.accepted == 180
    assert sorted(_lines(tmp_path / "local.jsonl")) == sorted(_lines(tmp_path / "ray.jsonl"))
    # a rerun skips all, as the local rerun does
    again = generate_samples(seeds, tmp_path / "ray.jsonl", actors=2, batch_size=4, progress=False)
    assert again.to_dict() == CoTGenerator(TemplateBackend()).run(
        seeds, tmp_path / "local.jsonl", progress=False
    ).to_dict()
    assert len(_lines(tmp_path / "ray.jsonl")) == 180


class FlakyBackend(TemplateBackend):
    """The template backend with bad days: some replies unparseable, some requests failing."""

    def complete(self, requests):
        for r, good in zip(requests, super().complete(requests), strict=True):
            kind = int(r.id, 16) % 7
            if kind == 0:  # never parseable: re-asked once, then rejected
                yield Completion(r, "no idea")
            elif kind == 1 and not r.history:  # parseable when re-asked
                yield Completion(r, "let me think")
            elif kind == 2:  # the server is down for this one: failed, retried by a rerun
                yield Completion(r, None, error="503 from the server")
            else:
                yield good


def test_generation_reasks_rejects_and_failures_count_as_the_generator_does(
    cluster, tmp_path, seeds_file
):
    seeds = read_seeds(seeds_file)
    local = CoTGenerator(FlakyBackend()).run(seeds, tmp_path / "l.jsonl", progress=False)
    on_ray = generate_samples(
        seeds, tmp_path / "r.jsonl", backend=FlakyBackend(), batch_size=5, progress=False
    )
    assert min(local.rejected, local.reasked, local.failed) > 0
    assert on_ray.to_dict() | {"errors": []} == local.to_dict() | {"errors": []}
    assert sorted(on_ray.errors) == sorted(local.errors)
    for name in ("l.jsonl", "l.rejects.jsonl"):
        other = name.replace("l.", "r.")
        assert sorted(_lines(tmp_path / name)) == sorted(_lines(tmp_path / other))


class KillingBackend(TemplateBackend):
    """The template backend, except that its actor kills itself on the first request."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def complete(self, requests):
        Path(self.marker).write_text("killed")
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        time.sleep(60)  # killed here, mid-batch
        yield from ()


def killing_first_actor(marker: str, index: int) -> TemplateBackend:
    return KillingBackend(marker) if index == 0 else TemplateBackend()


def test_a_killed_actor_then_a_rerun_loses_and_duplicates_nothing(cluster, tmp_path, seeds_file):
    seeds = read_seeds(seeds_file)
    CoTGenerator(TemplateBackend()).run(seeds, tmp_path / "local.jsonl", progress=False)
    out, marker = tmp_path / "ray.jsonl", tmp_path / "killed"
    backend = functools.partial(killing_first_actor, str(marker))
    try:
        generate_samples(seeds, out, backend=backend, actors=2, batch_size=4, progress=False)
    except ray.exceptions.RayError:
        pass  # Ray gave up on the dead actor's batch; the lines written so far stay
    assert marker.exists(), "the actor was not killed"
    partial = _lines(out)
    assert len(partial) < 180 and set(partial) <= set(_lines(tmp_path / "local.jsonl"))
    summary = generate_samples(seeds, out, actors=2, batch_size=4, progress=False)
    assert summary.accepted_before == len(partial) and summary.accepted == 180 - len(partial)
    assert sorted(_lines(out)) == sorted(_lines(tmp_path / "local.jsonl"))
    assert len(set(_ids(out))) == 180


def test_cli_engine_ray_end_to_end(cluster, tmp_path, capsys):
    seeds_local, seeds_ray = tmp_path / "s-local.jsonl", tmp_path / "s-ray.jsonl"
    base = ["seeds", "--phantom", "--phantom-cases", "2"]
    assert main([*base, "--out", str(seeds_local)]) == 0
    assert main([*base, "--out", str(seeds_ray), "--engine", "ray", "--workers", "2"]) == 0
    assert seeds_local.read_bytes() == seeds_ray.read_bytes()
    capsys.readouterr()
    gen_local, gen_ray = tmp_path / "g-local.jsonl", tmp_path / "g-ray.jsonl"
    assert main(["generate", str(seeds_local), "--out", str(gen_local), "--no-progress"]) == 0
    local_summary = capsys.readouterr().out
    ray_args = ["--engine", "ray", "--workers", "2", "--seeds-per-batch", "3", "--no-progress"]
    assert main(["generate", str(seeds_ray), "--out", str(gen_ray), *ray_args]) == 0
    assert capsys.readouterr().out == local_summary
    assert sorted(_lines(gen_local)) == sorted(_lines(gen_ray)) and len(_lines(gen_ray)) == 120


@pytest.mark.parametrize(
    ("address", "says"),
    [("127.0.0.1:1", "No Ray cluster answers at '127.0.0.1:1'"), ("nonsense", "Expected a Ray address")],
)
def test_a_bad_ray_address_is_a_clear_error(tmp_path, capsys, address, says):
    with pytest.raises(ClusterUnreachableError, match=r"ray start --head|host:port"):
        connect(address)
    args = ["seeds", "--phantom", "--out", str(tmp_path / "s.jsonl")]
    assert main([*args, "--engine", "ray", "--ray-address", address]) == 1
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "s.jsonl").exists()


def test_ray_address_without_the_ray_engine_warns(tmp_path):
    with pytest.warns(UserWarning, match="--ray-address auto is ignored"):
        main(["seeds", "--phantom", "--phantom-cases", "1", "--out", str(tmp_path / "s.jsonl"),
              "--ray-address", "auto"])  # fmt: skip


def test_import_medcurric_never_imports_ray(run_python):
    done = run_python(
        "import sys, medcurric, medcurric.distributed, medcurric.cli.generate\n"
        "print('ray' in sys.modules)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_openai_actors_spread_over_the_endpoints_round_robin(cluster, tmp_path):
    from medcurric.cot import OpenAIBackend
    from medcurric.distributed import openai_endpoints
    from medcurric.testing.chat_server import FakeChatServer

    seeds = tmp_path / "seeds.jsonl"
    write_seeds(phantom_dataset(1), seeds, progress=False)
    options = {"send_images": False, "max_retries": 0, "concurrency": 4}
    with FakeChatServer() as one, FakeChatServer() as two:
        make = openai_endpoints("m", [one.url, two.url], **options)
        assert [make(i).base_url.rstrip("/") for i in range(3)] == [
            one.url, two.url, one.url
        ]  # fmt: skip
        local = CoTGenerator(OpenAIBackend("m", base_url=one.url, **options)).run(
            read_seeds(seeds), tmp_path / "local.jsonl", progress=False
        )
        before = len(one.hits)
        on_ray = generate_samples(
            read_seeds(seeds), tmp_path / "ray.jsonl", backend=make, actors=2, batch_size=2,
            progress=False,
        )  # fmt: skip
        assert len(one.hits) > before and len(two.hits) > 0  # both endpoints served the run
    assert on_ray.to_dict() == local.to_dict() and local.planned == 60
    for name in ("local.jsonl", "local.rejects.jsonl"):
        assert sorted(_lines(tmp_path / name)) == sorted(
            _lines(tmp_path / name.replace("local", "ray"))
        )
