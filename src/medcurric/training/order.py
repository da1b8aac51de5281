"""The reference trainer's data order: a pool per stage, a seeded permutation per epoch.

Epoch ``e`` of a stage's pool is a permutation drawn from ``(seed, stage, e)``; each
global batch takes the next ``batch_size * world_size`` items and rank ``r`` the
``r``-th slice, so the position in a stage is two integers ``[epoch, cursor]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medcurric.stage import Stage

__all__ = ["epoch_order", "next_batch", "stage_pools"]

_STAGE_INDEX = {Stage.EASY: 0, Stage.MEDIUM: 1, Stage.HARD: 2}


def stage_pools(sample_stages: Sequence[str], stages: Sequence[Stage], *, own: bool = True) -> dict[Stage, list[int]]:
    """Sample indices per stage: the samples generated for it, or all when ``own`` is false or it has none."""
    everything = list(range(len(sample_stages)))
    pools: dict[Stage, list[int]] = {}
    for stage in stages:
        mine = [i for i, s in enumerate(sample_stages) if s == stage.value]
        pools[stage] = mine if (own and mine) else everything
    return pools


def epoch_order(pool: Sequence[int], seed: int, stage: Stage, epoch: int) -> np.ndarray:
    """The pool's order in ``epoch``: a permutation drawn from ``(seed, stage, epoch)``."""
    rng = np.random.default_rng([seed, _STAGE_INDEX[stage], epoch])
    return np.asarray(pool)[rng.permutation(len(pool))]


def next_batch(
    pool: Sequence[int], seed: int, stage: Stage, position: Sequence[int], *, batch_size: int, rank: int, world: int
) -> tuple[list[tuple[int, int]], list[int]]:
    """This rank's ``(sample index, epoch)`` pairs of the next global batch, and the new position.

    Examples:
        >>> from medcurric.stage import Stage
        >>> picked, pos = next_batch([0, 1, 2], 0, Stage.EASY, [0, 2], batch_size=2, rank=0, world=1)
        >>> [e for _, e in picked], pos
        ([0, 1], [1, 1])
    """
    epoch, cursor = int(position[0]), int(position[1])
    picked: list[tuple[int, int]] = []
    order = epoch_order(pool, seed, stage, epoch)
    for k in range(batch_size * world):
        if cursor >= len(order):
            epoch, cursor = epoch + 1, 0
            order = epoch_order(pool, seed, stage, epoch)
        if rank * batch_size <= k < (rank + 1) * batch_size:
            picked.append((int(order[cursor]), epoch))
        cursor += 1
    return picked, [epoch, cursor]
