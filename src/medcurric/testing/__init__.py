"""Test and demo helpers, kept out of the core data flow.

* :func:`make_phantom`: a deterministic synthetic CT phantom with TotalSegmentator
  labels and lesions of known host organ (a few milliseconds).
* :func:`bundled_sample`: the phantom run through matching, seeds and template
  chain-of-thought generation, with its key-slice images (the demo's input).
* :func:`build_tiny_family`: a tiny model of each supported vision-language family
  (LLaVA, LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL, Gemma 3) with a batch of inputs.
* :func:`build_family_processor`: tiny processors of the other model families
  (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, LLaVA-OneVision), built offline.
* :func:`build_family_vlm`: a tiny model of each family made for that processor
  (what the trainer and the reference example run on offline).
* :func:`build_tiny_vlm` and friends: tiny random-initialised vision-language models
  and tokenizers built offline, for tests, demos and smoke runs.

Names are imported lazily, so ``import medcurric.testing`` stays cheap and the
tiny models only need transformers when they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medcurric._optional import lazy_exports

_EXPORTS: dict[str, str] = {
    "BundledSample": "medcurric.testing.sample",
    "ExpectedHost": "medcurric.testing.phantom",
    "FAMILIES": "medcurric.testing.families",
    "PROCESSOR_FAMILIES": "medcurric.testing.processors",
    "Phantom": "medcurric.testing.phantom",
    "TINY_CORPUS": "medcurric.testing.tiny",
    "TinyVLM": "medcurric.testing.tiny",
    "VLM_FAMILIES": "medcurric.testing.families",
    "build_tiny_processor": "medcurric.testing.tiny",
    "build_tiny_tokenizer": "medcurric.testing.tiny",
    "build_tiny_vlm": "medcurric.testing.tiny",
    "build_tiny_family": "medcurric.testing.families",
    "build_family_processor": "medcurric.testing.processors",
    "build_family_vlm": "medcurric.testing.families",
    "build_family_tokenizer": "medcurric.testing.processors",
    "bundled_sample": "medcurric.testing.sample",
    "make_phantom": "medcurric.testing.phantom",
    "phantom_dataset": "medcurric.testing.phantom",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("medcurric.testing", _EXPORTS, globals())


if TYPE_CHECKING:  # pragma: no cover
    from medcurric.testing.families import (
        FAMILIES,
        VLM_FAMILIES,
        build_family_vlm,
        build_tiny_family,
    )
    from medcurric.testing.phantom import ExpectedHost, Phantom, make_phantom, phantom_dataset
    from medcurric.testing.processors import (
        PROCESSOR_FAMILIES,
        build_family_processor,
        build_family_tokenizer,
    )
    from medcurric.testing.sample import BundledSample, bundled_sample
    from medcurric.testing.tiny import (
        TINY_CORPUS,
        TinyVLM,
        build_tiny_processor,
        build_tiny_tokenizer,
        build_tiny_vlm,
    )
