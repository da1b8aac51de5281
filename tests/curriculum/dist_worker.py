"""Run by test_distributed.py: ``python dist_worker.py WORLD_SIZE PORT OUT_DIR``.

Each rank feeds a different local loss curve to a CurriculumScheduler under a gloo
process group and writes its decisions to OUT_DIR/rank<r>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def local_losses(rank: int, n: int = 24) -> list[float]:
    """Per-rank curves: a shared trend that plateaus at 0.5 plus noise that cancels over an even world."""
    return [max(1.0 - 0.1 * i, 0.5) + 0.2 * (-1) ** (rank + i) * (1 + rank // 2) for i in range(n)]


def local_domain_losses(rank: int, i: int) -> tuple[float, float]:
    return (1.0 + 0.1 * rank + 0.01 * i, 0.2 + 0.2 * rank)


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from medcurric.curriculum import CurriculumScheduler, GapRule

        sched = CurriculumScheduler(
            stages=("easy", "medium", "hard"), patience=2, min_delta=0.01, gap_rule=GapRule(min_gap=-0.5)
        )
        decisions = []
        for i, v in enumerate(local_losses(rank)):
            metrics = {"loss": v, "rationale_loss_easy": 1.0 + 0.1 * rank, "rationale_loss_medium": 1.2 + 0.01 * i * rank}
            decisions.append(sched.step(metrics).to_dict())
        per = CurriculumScheduler(policy="per_domain", stages=("easy", "medium", "hard"), mixing_start_epoch=1)
        probs = []
        for i in range(6):
            easy, medium = local_domain_losses(rank, i)
            per.observe(f"d{rank % 2}", "easy", easy)
            per.observe(f"d{rank % 2}", "medium", medium)
            per.step({"loss": local_losses(rank)[i]}, epoch=i)
            probs.append({d: {s.value: p for s, p in per.stage_probabilities(d).items()} for d in ("d0", "d1")})
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps({"decisions": decisions, "per_domain": probs, "domains": per.domains})
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    mp.spawn(worker, args=(world, port, out), nprocs=world, join=True)
