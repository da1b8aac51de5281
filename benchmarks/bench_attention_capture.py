"""Benchmark: a LoRA training step with the attention-to-box loss, three ways, per model family.

Families (``--family``, ``all`` runs each in turn): ``llava`` (VIP-LLaVA, the default),
``llava_onevision``, ``qwen2_5_vl``, ``qwen3_vl``, ``gemma3``. Sizes (``--size``):

- ``tiny`` (with ``--device cpu``; ``--tiny`` is short for both): the tiny VIP-LLaVA of
  :mod:`medcurric.testing.tiny` for ``llava``, the tiny random-initialised model of
  :func:`medcurric.testing.build_tiny_family` for the others, in fp32;
- ``small`` (with ``--device cpu``): each family's 7B config narrowed to 4 text layers of
  width 256 (vocabulary 8192) and a narrow vision tower that keeps the image processing,
  so the images give the family's real image-token counts (VIP-LLaVA 336 px: 576;
  LLaVA-OneVision 384 px, base view and one tile: 1485; Qwen2.5-VL 448 px and Qwen3-VL
  512 px: 256; Gemma 3: 256), in fp32 (see ``_models.small_config``): whether the fixed
  cost per step that dominates ``tiny`` fades as the model grows;
- ``7b`` (the default, with ``--device cuda``): each family's 7B-class checkpoint shape,
  random-initialised from config objects directly on the GPU in bf16 (see ``_models.py``:
  VIP-LLaVA-7B, LLaVA-OneVision-Qwen2-7B, Qwen2.5-VL-7B, Qwen3-VL-8B, and Gemma 3 4B,
  which MedGemma-4B shares); ``27b``: Gemma 3 27B / MedGemma-27B.

peft LoRA (rank 16 by default, 8 small, 4 tiny) sits on the language model's q/k/v/o projections.
Batch: ``--batch`` samples, each one image at the family's own resolution (VIP-LLaVA
336 px: 576 tokens; Qwen2.5-VL 672 px and Qwen3-VL 768 px: 576 merged tokens; Gemma 3
896 px: 256 tokens; LLaVA-OneVision 384 px: base view plus one tile) between the family's
image delimiters, then text up to ``--seq`` tokens (default: the image tokens + 168, or
+ 28 tiny); the last ``--queries`` tokens of each sequence are the supervised
answer/rationale tokens (LM labels and attention queries).

Modes, each a full step (forward, loss, backward, AdamW step on the same adapters):

- ``sdpa``: LM loss only, SDPA attention (the floor);
- ``capture``: LM loss + ``attention_kl_loss`` on ``--supervised-layers`` layers,
  attention rows recomputed by :class:`medcurric.attention.AttentionCapture`, SDPA kept;
- ``eager``: the same loss from ``output_attentions=True`` with eager attention (rows of
  the supervised tokens, image columns, renormalised);
- ``capture_no_kl`` (only when named in ``--modes``): the capture with ``0 *`` the sum of
  its rows instead of the KL, so the rows' backward still runs: the capture's own cost
  without the loss function's.

The modes alternate within each repeat (round robin, after warm-up), so they see the
same machine load. Per mode: median step time (and quartiles); peak memory
(``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; not available on
CPU); and, on every device, the bytes autograd saved for the backward pass in one step
(distinct storages other than the parameters), the part of the peak that the modes
change. A mode that runs out of memory is reported as such. ``--quick`` shortens the run.
Prints one JSON object: one family's report, or ``{"families": {name: report}}``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import statistics
import time
from functools import partial
from typing import Any

import torch
from _models import build_large, build_small, large_model_name
from _timing import round_robin

from medcurric.attention import AttentionCapture
from medcurric.losses import attention_kl_loss
from medcurric.training import apply_lora

FAMILIES = ("llava", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "gemma3")
SIZES = ("tiny", "small", "7b", "27b")
MODES = ("sdpa", "capture", "eager", "capture_no_kl")
DEFAULT_MODES = MODES[:3]
_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"
# Text tokens around the image in the default sequence (VIP-LLaVA's 744 = 576 + 168).
_TEXT_TOKENS = {"tiny": 28, "small": 168, "large": 168}
# Qwen families: merged image tokens per side of the square test image.
_QWEN_SIDE = {"tiny": 6, "small": 16, "large": 24}
# Defaults per size: batch, supervised queries, LoRA rank, supervised layers.
_DEFAULTS = {"tiny": (2, 8, 4, 2), "small": (2, 32, 8, 2), "large": (8, 64, 16, 8)}
_PREFIX = 5  # tokens before the image run


def build_model(family: str, size: str, device: torch.device) -> tuple[Any, str]:
    """The bare model (SDPA attention) and a line describing it."""
    if size == "small":
        model = build_small(family, device)
        model.set_attn_implementation("sdpa")
        return model, f"random-init {large_model_name(family, '7b')} shape narrowed to 4 layers of 256, fp32"
    if size != "tiny":
        model = build_large(family, size, device)
        model.set_attn_implementation("sdpa")
        return model, f"random-init {large_model_name(family, size)} shape, bf16"
    if family == "llava":
        from medcurric.testing.tiny import build_tiny_vlm

        vlm = build_tiny_vlm("vip_llava", num_layers=4, num_kv_heads=2, seed=0)
        return vlm.model.to(device), "tiny VIP-LLaVA (medcurric.testing.tiny)"
    from medcurric.testing import build_tiny_family

    model, _ = build_tiny_family(family, seed=0)
    return model.to(device), f"tiny {family} (medcurric.testing.build_tiny_family)"


def _config_id(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def image_inputs(
    family: str, model: Any, batch: int, scale: str, device: torch.device, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], int]:
    """Pixel inputs for one image per sample, as the family's processor would give them,
    and the number of image tokens each image becomes."""
    g = torch.Generator().manual_seed(0)
    config = model.config
    vision = config.vision_config
    if family in ("qwen2_5_vl", "qwen3_vl"):
        side = 2 * _QWEN_SIDE[scale]  # patches per side; merged 2 x 2 into one token
        patch, temporal = vision.patch_size, vision.temporal_patch_size
        pixels = torch.randn(batch * side * side, 3 * temporal * patch * patch, generator=g)
        grid = torch.tensor([[1, side, side]] * batch)
        return {"pixel_values": pixels.to(device, dtype), "image_grid_thw": grid.to(device)}, (side // 2) ** 2
    size = vision.image_size
    if family == "llava_onevision":
        # anyres: the base view plus the views of the best-fitting tile grid (one tile here)
        pixels = torch.randn(batch, 2, 3, size, size, generator=g)
        sizes = torch.tensor([[size, size]] * batch)
        inner = model.model if hasattr(model.model, "pack_image_features") else model
        features = torch.zeros(2, (size // vision.patch_size) ** 2, config.text_config.hidden_size, device=device)
        with torch.no_grad():
            _, lengths = inner.pack_image_features(
                [features.to(dtype)], sizes[:1].to(device), inner.image_newline,
                vision_aspect_ratio=config.vision_aspect_ratio,
            )  # fmt: skip
        return {"pixel_values": pixels.to(device, dtype), "image_sizes": sizes.to(device)}, int(lengths[0])
    pixels = torch.randn(batch, 3, size, size, generator=g).to(device, dtype)
    if family == "gemma3":
        return {"pixel_values": pixels}, int(config.mm_tokens_per_image)
    return {"pixel_values": pixels}, (size // vision.patch_size) ** 2


def make_batch(
    family: str, model: Any, batch: int, seq: int | None, queries: int, scale: str,
    device: torch.device, dtype: torch.dtype,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, int]:
    """``(model inputs with labels, query mask, target [B, P], image token id)``."""  # fmt: skip
    config = model.config
    image_id = _config_id(config, "image_token_id", "image_token_index")
    if image_id is None:
        raise SystemExit(f"{type(model).__name__}.config has no image_token_id / image_token_index")
    start = _config_id(config, "vision_start_token_id", "boi_token_index", "boi_token_id")
    end = _config_id(config, "vision_end_token_id", "eoi_token_index", "eoi_token_id")
    pixels, n_image = image_inputs(family, model, batch, scale, device, dtype)
    seq = seq if seq is not None else n_image + _TEXT_TOKENS[scale]
    if seq < _PREFIX + n_image + 1 + queries + 1:
        raise SystemExit(f"--seq {seq} is too short for {n_image} image tokens and {queries} queries ({family})")
    vocab = config.text_config.vocab_size
    g = torch.Generator().manual_seed(0)
    high = min(vocab, *(t for t in (image_id, start, end) if t is not None))
    ids = torch.randint(3, high, (batch, seq), generator=g)
    ids[:, 0] = 1
    ids[:, _PREFIX : _PREFIX + n_image] = image_id
    if start is not None:
        ids[:, _PREFIX - 1] = start
    if end is not None:
        ids[:, _PREFIX + n_image] = end
    labels = torch.full_like(ids, -100)
    labels[:, seq - queries :] = ids[:, seq - queries :]
    inputs = {"input_ids": ids, "labels": labels}
    accepted = inspect.signature(model.forward).parameters
    is_image = ids == image_id
    if "mm_token_type_ids" in accepted and family in ("qwen2_5_vl", "qwen3_vl"):
        inputs["mm_token_type_ids"] = is_image.int()  # what the processor gives: M-RoPE needs it
    if family == "gemma3":
        inputs["token_type_ids"] = is_image.long()  # bidirectional attention among image tokens
    inputs = {k: v.to(device) for k, v in inputs.items()} | pixels
    target = torch.zeros(batch, n_image)
    side = round(n_image**0.5)
    if side * side == n_image:  # a box on the token grid
        target.view(batch, side, side)[:, side // 4 : side // 2, side // 3 : 2 * side // 3] = 1.0
    else:  # a run of tokens
        target[:, n_image // 4 : n_image // 2] = 1.0
    target = target / target.sum(-1, keepdim=True)
    return inputs, (labels != -100).to(device), target.to(device), image_id


def eager_rows(attentions: tuple[torch.Tensor, ...], layers: list[int], query_mask: torch.Tensor,
               image_mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """Rows of the supervised tokens over the image tokens from full attention maps, renormalised."""
    b = query_mask.shape[0]
    qpos = query_mask.nonzero()[:, 1].view(b, -1)  # every sample has the same number here
    ipos = image_mask.nonzero()[:, 1].view(b, -1)
    out = {}
    for layer in layers:
        full = attentions[layer]
        h, q, p = full.shape[1], qpos.shape[1], ipos.shape[1]
        rows = full.gather(2, qpos[:, None, :, None].expand(b, h, q, full.shape[-1]))
        rows = rows.gather(3, ipos[:, None, None, :].expand(b, h, q, p)).float()
        out[layer] = rows / rows.sum(-1, keepdim=True)
    return out


class Steps:
    """One training step per mode on a shared model, optimizer and batch.

    :meth:`timed` switches the attention implementation (and enters the capture)
    untimed, then times forward, loss, backward and the optimizer step.
    """

    def __init__(self, model: Any, inputs: dict[str, torch.Tensor], query_mask: torch.Tensor,
                 target: torch.Tensor, image_token_id: int, layers: list[int], queries: int,
                 kl_weight: float, device: torch.device) -> None:  # fmt: skip
        self.model, self.inputs, self.query_mask, self.target = model, inputs, query_mask, target
        self.layers, self.kl_weight, self.device = layers, kl_weight, device
        self.token_mask = query_mask[:, -queries:]
        self.image_mask = inputs["input_ids"] == image_token_id
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        self.capture = AttentionCapture(model, layers=layers, image_token_id=image_token_id)
        self.oom: set[str] = set()
        self.peak: dict[str, int] = {}

    def _step(self, mode: str) -> None:
        out = self.model(**self.inputs, output_attentions=mode == "eager")
        loss = out.loss
        if mode == "capture":  # the mean over the layers of their KLs, in one call as the trainer does
            capture = self.capture
            kl = attention_kl_loss([capture.attentions[k] for k in self.layers], self.target,
                                   token_mask=capture.query_mask, key_mask=capture.key_mask)  # fmt: skip
            loss = loss + self.kl_weight * kl
        elif mode == "capture_no_kl":
            loss = loss + 0.0 * torch.stack([self.capture.attentions[k].sum() for k in self.layers]).sum()
        elif mode == "eager":
            rows = eager_rows(out.attentions, self.layers, self.query_mask, self.image_mask)
            kl = attention_kl_loss([rows[k] for k in self.layers], self.target, token_mask=self.token_mask)
            loss = loss + self.kl_weight * kl
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, mode: str) -> float:
        """Seconds of one step of ``mode`` (NaN once it ran out of memory)."""
        if mode in self.oom:
            return float("nan")
        cuda = self.device.type == "cuda"
        base = self.model.get_base_model()
        base.set_attn_implementation("eager" if mode == "eager" else "sdpa")
        if mode.startswith("capture"):
            self.capture.set_query_mask(self.query_mask)
            self.capture.__enter__()
        try:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            self._step(mode)
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            if cuda:
                self.peak[mode] = max(self.peak.get(mode, 0), torch.cuda.max_memory_allocated())
            return seconds
        except torch.cuda.OutOfMemoryError:
            self.oom.add(mode)
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        finally:
            self.capture.close()
            base.set_attn_implementation("sdpa")
            if cuda and mode in self.oom:
                gc.collect()
                torch.cuda.empty_cache()

    def saved_bytes(self, mode: str) -> int | None:
        """Bytes of the distinct non-parameter storages autograd saves in one step of ``mode``."""
        if mode in self.oom:
            return None
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self.timed(mode)
        return None if mode in self.oom else sum(storages.values())


def _stats(times: list[float], peak: int | None, saved: int | None) -> dict[str, Any]:
    v = sorted(times)
    return {
        "median_s": round(statistics.median(v), 5),
        "q1_s": round(v[(len(v) - 1) // 4], 5),
        "q3_s": round(v[(3 * (len(v) - 1)) // 4], 5),
        "min_s": round(v[0], 5),
        "peak_memory_gib": None if peak is None else round(peak / 2**30, 3),
        "saved_activations_mib": None if saved is None else round(saved / 2**20, 3),
        "oom": False,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def run_family(family: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build one family's model and batch, time the modes round robin, report as JSON-ready dict."""
    import peft
    import transformers

    cpu_size = args.size in ("tiny", "small")
    scale = args.size if cpu_size else "large"
    dtype = torch.float32 if cpu_size else torch.bfloat16
    default_batch, default_queries, default_r, k = _DEFAULTS[scale]
    batch_size = args.batch or default_batch
    queries = args.queries or default_queries
    lora_r = args.lora_r or default_r
    torch.manual_seed(0)
    model, description = build_model(family, args.size, device)
    n_layers = model.config.text_config.num_hidden_layers
    layers = args.supervised_layers
    if layers is None:
        layers = [round((i + 1) * n_layers / k) - 1 for i in range(k)]
    inputs, query_mask, target, image_id = make_batch(
        family, model, batch_size, args.seq, queries, scale, device, dtype
    )
    lora = peft.LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules=_LORA_TARGETS)
    model = apply_lora(model, lora)
    model.train()
    steps = Steps(model, inputs, query_mask, target, image_id, layers, queries, args.kl_weight, device)
    # each call times its own step (setup untimed), so round_robin's measure is the call itself
    times = round_robin({m: partial(steps.timed, m) for m in args.modes}, args.repeats, args.warmup,
                        measure=lambda fn: fn())  # fmt: skip
    saved = {m: steps.saved_bytes(m) for m in args.modes}
    results = {
        m: {"oom": True} if m in steps.oom else _stats(times[m], steps.peak.get(m), saved[m]) for m in args.modes
    }
    ratios: dict[str, float | None] = {}
    sdpa = results.get("sdpa", {})
    for mode in (m for m in MODES[1:] if m in results):
        r = results[mode]
        ratios[f"{mode}_over_sdpa_time"] = _ratio(r.get("median_s"), sdpa.get("median_s"))
        ratios[f"{mode}_over_sdpa_memory"] = _ratio(r.get("peak_memory_gib"), sdpa.get("peak_memory_gib"))
        ratios[f"{mode}_over_sdpa_saved_activations"] = _ratio(
            r.get("saved_activations_mib"), sdpa.get("saved_activations_mib")
        )
    t, m = ratios.get("capture_over_sdpa_time"), ratios.get("capture_over_sdpa_memory")
    if cpu_size:
        targets = {"capture_within_1.10x_sdpa_time": None if t is None else t <= 1.10}
    else:
        targets = {
            "capture_within_1.03x_sdpa_time": None if t is None else t <= 1.03,
            "capture_within_1.02x_sdpa_memory": None if m is None else m <= 1.02,
        }
    report = {
        "benchmark": "attention_capture",
        "family": family,
        "device": _device_name(device, args.size),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "model": description,
        "batch": batch_size,
        "seq": int(inputs["input_ids"].shape[1]),
        "image_tokens": int(steps.image_mask[0].sum()),
        "queries": queries,
        "supervised_layers": layers,
        "lora_r": lora_r,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "modes": results,
        "ratios": ratios,
        "targets_met": targets,
    }
    del steps, model, inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return report


def _device_name(device: torch.device, size: str) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({size} model)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llava", choices=(*FAMILIES, "all"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--size", default="7b", choices=SIZES, help="27b: Gemma 3 only")
    parser.add_argument("--tiny", action="store_true", help="same as --device cpu --size tiny (smoke test)")
    parser.add_argument("--batch", type=int, default=None, help="default 8, or 2 tiny and small")
    parser.add_argument("--seq", type=int, default=None, help="default: image tokens + 168, or + 28 tiny")
    parser.add_argument("--queries", type=int, default=None,
                        help="supervised tokens per sample (64, 32 small, 8 tiny)")
    parser.add_argument("--supervised-layers", type=int, nargs="+", default=None,
                        help="decoder layers to supervise (default: 8 evenly spaced, or 2 tiny and small)")
    parser.add_argument("--lora-r", type=int, default=None, help="default 16, 8 small, or 4 tiny")
    parser.add_argument("--kl-weight", type=float, default=0.1)
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.size = "cpu", "tiny"
    if args.quick:
        args.repeats, args.warmup = 2, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA device; use --tiny (--device cpu --size tiny) on CPU.")
    if args.device == "cpu" and args.size not in ("tiny", "small"):
        raise SystemExit(f"--size {args.size} is for a GPU (--device cuda); use --size tiny or small on CPU.")
    if args.device == "cpu":
        torch.set_num_threads(1)
    device = torch.device(args.device)
    families = FAMILIES if args.family == "all" else (args.family,)
    if args.size == "27b":
        families = tuple(f for f in families if f == "gemma3") or families
    reports = {family: run_family(family, args, device) for family in families}
    if len(reports) == 1:
        report = next(iter(reports.values()))
    else:
        first = next(iter(reports.values()))
        report = {
            "benchmark": "attention_capture",
            **{k: first[k] for k in ("device", "torch", "transformers", "peft")},
            "families": reports,
            "targets_met": {family: r["targets_met"] for family, r in reports.items()},
        }
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
