"""medcurric.training: configuration, image reading, data order across ranks, checkpoints on disk."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from medcurric.cot.records import CoTSample
from medcurric.curriculum import Stage
from medcurric.errors import InvalidOptionError, MissingFileError, UnsafePathError
from medcurric.overlay import window_to_rgb
from medcurric.training import (
    STATE_FILE,
    CurriculumTrainer,
    TrainConfig,
    _read_image,
    latest_checkpoint,
)


def _sample(image: str) -> CoTSample:
    return CoTSample(id="s", seed_id="k", stage="easy", question_type="open", question="q?",
                     rationale="r.", answer="a", image=image, box=(1.0, 1.0, 4.0, 4.0), image_size=(8, 8))


def test_config_round_trip_and_validation() -> None:
    cfg = TrainConfig(stages=["easy", "medium", "hard"], attention_layers=[-1, -2])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["attention_layers"] == [-1, -2]
    with pytest.raises(InvalidOptionError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(InvalidOptionError, match="Unknown TrainConfig keys"):
        TrainConfig.from_dict({"max_step": 3})


def test_read_image_16_bit_is_deeplesion_hu(tmp_path) -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1500, (12, 10)).astype(np.int32)
    (tmp_path / "ct").mkdir()
    Image.fromarray((hu + 32768).astype(np.uint16)).save(tmp_path / "ct" / "a.png")
    got = _read_image(tmp_path, _sample("ct/a.png"), (-160.0, 240.0))
    np.testing.assert_array_equal(got, window_to_rgb(hu.astype(np.float32), (-160.0, 240.0)))
    rgb = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ct" / "b.png")
    np.testing.assert_array_equal(np.asarray(_read_image(tmp_path, _sample("ct/b.png"), (0, 1))), rgb)
    with pytest.raises(MissingFileError, match="not found"):
        _read_image(tmp_path, _sample("ct/c.png"), (0, 1))
    with pytest.raises(UnsafePathError):
        _read_image(tmp_path, _sample("../outside.png"), (0, 1))


@pytest.mark.parametrize("world,bs,n", [(1, 3, 10), (2, 3, 10), (4, 2, 7)])
def test_ranks_split_each_epoch_exactly(world: int, bs: int, n: int) -> None:
    """Every rank's micro-batches together cover each epoch's permutation once, without overlap."""
    ranks = []
    for rank in range(world):
        ns = SimpleNamespace(
            accelerator=SimpleNamespace(num_processes=world, process_index=rank),
            config=SimpleNamespace(batch_size=bs, seed=5),
            pools={Stage.EASY: list(range(n))},
            position={"easy": [0, 0]},
        )
        ns._order = lambda st, e, ns=ns: CurriculumTrainer._order(ns, st, e)
        ranks.append(ns)
    steps = 7
    picks = [[CurriculumTrainer._next_batch(ns, Stage.EASY) for _ in range(steps)] for ns in ranks]
    # Reference: the flat stream of epoch permutations, cut into global batches.
    stream = []
    e = 0
    while len(stream) < steps * bs * world:
        stream += [(int(i), e) for i in CurriculumTrainer._order(ranks[0], Stage.EASY, e)]
        e += 1
    for step in range(steps):
        merged = [p for r in range(world) for p in picks[r][step]]
        assert merged == stream[step * bs * world : (step + 1) * bs * world]
    assert sorted(i for i, _ in stream[:n]) == list(range(n))
    assert all(ns.position == ranks[0].position for ns in ranks)


def test_latest_checkpoint(tmp_path) -> None:
    assert latest_checkpoint(tmp_path / "none") is None
    for step in (5, 20, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (5, 20):
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text("{}")
    # checkpoint-100 is incomplete (no trainer state): skipped.
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-20"
