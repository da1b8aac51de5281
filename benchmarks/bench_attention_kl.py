"""Benchmark: forward + backward of attention_kl_loss (KL per head and token) against baselines.

Modes, all on attention ``[B, H, Q, P]`` (default ``[8, 32, 64, 576]``) and a target
``[B, P]`` like the Medium stage's: a box of a quarter of the side of the 24 x 24 patch
grid, Gaussian-blurred with kernel 9 and sigma 3 (the authors' recipe), so non-zero on
196 of the 576 image tokens:

- ``read``: ``attention.sum()``, one read of the tensor;
- ``log``: one elementwise ``torch.log(attention)`` pass (the irreducible work);
- ``naive``: renormalise, log, ``F.kl_div`` with the target expanded, reduction
  ``"none"``, sum over P, mean; forward + backward (bf16 input is upcast to fp32 first);
- ``fused``: ``attention_kl_loss(aggregate="kl_per_row")``, forward + backward;
- ``fused_dense_target``: the same with a target that has no zero entry (the kernels
  then cannot restrict the logarithm to the target's support: the worst case);
- ``mean_then_kl``: ``attention_kl_loss`` with its default aggregate, forward + backward.

Timing: fixed seed, warm-up, the modes interleaved round-robin over the repeats (so
load changes hit every mode alike), median and quartiles in milliseconds (CUDA events
on a GPU). Extra peak memory per mode: on a GPU ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats`` minus the memory allocated before the step; on CPU,
where torch's allocator keeps no statistics, each mode runs once in a fresh
subprocess: the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), the step
runs, and the peak resident set size (``VmHWM``) minus the resident size before the
step is reported (Linux only). Both are given as multiples of the attention tensor's size.

Prints one JSON object. ``--quick`` runs a small shape with few repeats and skips
the memory subprocesses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _timing import round_robin

from medcurric.losses import attention_kl_loss

MODES = ("read", "log", "naive", "fused", "fused_dense_target", "mean_then_kl")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_inputs(shape: list[int], dtype: torch.dtype, device: torch.device, seed: int = 0):
    """Attention rows (built in place, no temporaries of its size) and a box-like target."""
    g = torch.Generator(device=device).manual_seed(seed)
    attention = torch.empty(shape, dtype=dtype, device=device)
    attention.uniform_(0.01, 1.0, generator=g)
    attention.div_(attention.sum(-1, keepdim=True))
    return attention, box_target(shape[0], shape[-1], device)


def box_target(b: int, p: int, device: torch.device) -> torch.Tensor:
    """A box of a quarter of the side on the square patch grid, Gaussian-blurred (kernel 9,
    sigma 3, as the authors' code), normalised: zero outside the box grown by 4 patches."""
    side = math.isqrt(p)
    if side * side != p:
        target = torch.ones(b, p, device=device)
        target[:, : p // 2] = 0.0
        return target / target.sum(-1, keepdim=True)
    grid = torch.zeros(b, 1, side, side, device=device)
    lo, hi = side // 3, side // 3 + max(1, side // 4)
    grid[:, :, lo:hi, lo:hi] = 1.0
    x = torch.arange(9, device=device, dtype=torch.float32) - 4
    k = torch.exp(-(x**2) / (2 * 3.0**2))
    k = k / k.sum()
    grid = F.conv2d(grid, k.view(1, 1, 9, 1), padding=(4, 0))
    grid = F.conv2d(grid, k.view(1, 1, 1, 9), padding=(0, 4))
    target = grid.reshape(b, p)
    return target / target.sum(-1, keepdim=True)


def naive_loss(attention: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    a = attention.float()
    a = a / a.sum(-1, keepdim=True)
    t = target[:, None, None, :].expand_as(a)
    return F.kl_div(a.log(), t, reduction="none").sum(-1).mean()


def make_step(mode: str, attention: torch.Tensor, target: torch.Tensor) -> Callable[[], Any]:
    if mode == "read":
        return lambda: attention.sum()
    if mode == "log":
        return lambda: torch.log(attention)
    leaf = attention.detach().clone().requires_grad_(True)

    def fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], Any]:
        def step() -> Any:
            leaf.grad = None
            loss = fn()
            loss.backward()
            return loss

        return step

    if mode == "naive":
        return fwd_bwd(lambda: naive_loss(leaf, target))
    if mode == "fused":
        return fwd_bwd(lambda: attention_kl_loss(leaf, target, aggregate="kl_per_row"))
    if mode == "fused_dense_target":  # worst case: a target without zeros (no sparse shortcut)
        dense = (target + 1e-3) / (target + 1e-3).sum(-1, keepdim=True)
        return fwd_bwd(lambda: attention_kl_loss(leaf, dense, aggregate="kl_per_row"))
    if mode == "mean_then_kl":
        return fwd_bwd(lambda: attention_kl_loss(leaf, target))
    raise ValueError(f"unknown mode {mode!r}")


def _timed(step: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    step()
    return (time.perf_counter() - t0) * 1e3


def _stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    n = len(v)

    def q(f: float) -> float:
        i = f * (n - 1)
        lo, hi = int(i), min(int(i) + 1, n - 1)
        return v[lo] + (v[hi] - v[lo]) * (i - lo)

    return {"median": round(q(0.5), 4), "q1": round(q(0.25), 4), "q3": round(q(0.75), 4), "min": round(v[0], 4)}


def time_modes(shape, dtype, device, repeats, warmup) -> dict[str, dict[str, float]]:
    attention, target = make_inputs(shape, dtype, device)
    steps = {m: make_step(m, attention, target) for m in MODES}
    times = round_robin(steps, repeats, warmup, measure=lambda step: _timed(step, device))
    return {m: _stats(v) for m, v in times.items()}


def max_abs_diff(shape, dtype, device) -> float:
    attention, target = make_inputs(shape, dtype, device)
    a1 = attention.detach().clone().requires_grad_(True)
    a2 = attention.detach().clone().requires_grad_(True)
    l1 = attention_kl_loss(a1, target, aggregate="kl_per_row")
    l2 = naive_loss(a2, target)
    l1.backward()
    l2.backward()
    return max(float((l1 - l2).detach().abs()), float((a1.grad.float() - a2.grad.float()).abs().max()))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the peak resident set size to the current one; return the current one in bytes."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kib("VmRSS") * 1024


def _peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def probe_memory(mode: str, shape: list[int], dtype: torch.dtype, device: torch.device) -> dict[str, float]:
    """Extra peak memory of one step of ``mode``, measured in this (fresh) process."""
    small_a, small_t = make_inputs([2, 2, 4, shape[-1]], dtype, device)
    make_step(mode, small_a, small_t)()  # initialise lazy state (autograd engine, kernels)
    attention, target = make_inputs(shape, dtype, device)
    nbytes = attention.numel() * attention.element_size()
    step = make_step(mode, attention, target)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = step()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
    else:
        # ``make_step`` cloned the attention for the fwd+bwd modes: that clone is the input.
        # The peak-RSS mark (VmHWM) is reset to the current RSS first, so earlier peaks
        # (imports, building the inputs) cannot hide the step's own peak.
        before = _reset_peak_rss()
        out = step()
        extra = _peak_rss() - before
    del out
    return {"extra_bytes": float(extra), "attention_bytes": float(nbytes), "extra_x_attention": round(extra / nbytes, 3)}


def memory_modes(shape, dtype_name, device, threads) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for mode in MODES:
        cmd = [
            sys.executable, os.path.abspath(__file__), "--probe", mode, "--dtypes", dtype_name,
            "--device", device.type, "--threads", str(threads), "--shape", *map(str, shape),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            out[mode] = json.loads(res.stdout.strip().splitlines()[-1])["extra_x_attention"]
        except (IndexError, KeyError, json.JSONDecodeError):
            out[mode] = None
            print(f"memory probe {mode}/{dtype_name} failed: {res.stderr[-2000:]}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[8, 32, 64, 576], metavar=("B", "H", "Q", "P"))
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--quick", action="store_true", help="small shape, few repeats, no memory probes")
    parser.add_argument("--probe", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.probe:
        result = probe_memory(args.probe, args.shape, DTYPES[args.dtypes[0]], device)
        print(json.dumps(result))
        return result
    if args.quick:
        args.shape, args.repeats, args.warmup, args.no_memory = [2, 4, 8, 64], 3, 1, True
    report: dict[str, Any] = {
        "benchmark": "attention_kl",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {_cpu_name()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "shape": args.shape,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "memory_method": (
            "skipped"
            if args.no_memory
            else "cuda max_memory_allocated - allocated before the step"
            if device.type == "cuda"
            else "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before one step, fresh subprocess per mode"
        ),
        "results": {},
    }
    for name in args.dtypes:
        dtype = DTYPES[name]
        times = time_modes(args.shape, dtype, device, args.repeats, args.warmup)
        med = {m: times[m]["median"] for m in MODES}
        memory = None if args.no_memory else memory_modes(args.shape, name, device, args.threads)
        fused_mem = None if memory is None else memory.get("fused")
        report["results"][name] = {
            "time_ms": times,
            "ratio": {
                "fused_over_log": round(med["fused"] / med["log"], 3),
                "naive_over_fused": round(med["naive"] / med["fused"], 3),
                "fused_over_read": round(med["fused"] / med["read"], 3),
                "fused_dense_target_over_log": round(med["fused_dense_target"] / med["log"], 3),
                "mean_then_kl_over_log": round(med["mean_then_kl"] / med["log"], 3),
            },
            "extra_peak_memory_x_attention": memory,
            "targets_met": {
                "fused_within_1.5x_log": med["fused"] <= 1.5 * med["log"],
                "fused_at_least_5x_faster_than_naive": med["naive"] >= 5 * med["fused"],
                "fused_extra_memory_at_most_1.5x": None if fused_mem is None else fused_mem <= 1.5,
            },
            "max_abs_diff_fused_vs_naive": max_abs_diff(args.shape, dtype, device),
        }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
