"""medcurric.training.families: each family's LoRA targets and FSDP wrap classes, checked on tiny models."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from medcurric.errors import UnsupportedModelError
from medcurric.testing.families import VLM_FAMILIES, build_family_vlm
from medcurric.training import (
    DEFAULT_LORA_TARGETS,
    FAMILY_DEFAULTS,
    family_defaults,
    lora_targets_for,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "api" / "training.rst"


@pytest.fixture(scope="module", params=VLM_FAMILIES)
def family_model(request):
    torch.manual_seed(0)
    model, processor = build_family_vlm(request.param, seed=0)
    return request.param, model, processor


def _language_projections(model) -> set[str]:
    """Names of the decoder layers' attention and MLP linears, found by walking the modules (no regex)."""
    layers = model.model.language_model.layers
    by_id = {id(m): n for n, m in model.named_modules()}
    out = set()
    for layer in layers:
        for block in (layer.self_attn, layer.mlp):
            for child in block.children():
                if isinstance(child, torch.nn.Linear):
                    out.add(by_id[id(child)])
    return out


def test_table_covers_every_tiny_family() -> None:
    assert set(FAMILY_DEFAULTS) == set(VLM_FAMILIES)
    assert all(name == d.family for name, d in FAMILY_DEFAULTS.items())


def test_default_lora_targets_are_the_language_model_projections_only(family_model) -> None:
    family, model, _ = family_model
    assert family_defaults(model).family == family
    targets = lora_targets_for(model)
    names = [n for n, _ in model.named_modules()]
    matched = {n for n in names if re.fullmatch(targets, n)}
    expected = _language_projections(model)
    assert matched == expected
    assert len(expected) == 7 * len(model.model.language_model.layers)
    # Vision towers reuse some of those leaf names (Qwen2-VL's and Qwen3-VL's do not); the regex leaves them alone.
    leaves = set(FAMILY_DEFAULTS[family].attention_modules + FAMILY_DEFAULTS[family].mlp_modules)
    vision_twins = [n for n in names if n.rsplit(".", 1)[-1] in leaves and n not in expected]
    assert bool(vision_twins) == (family not in ("qwen2_vl", "qwen3_vl"))
    assert all("vision_tower" in n or "visual" in n for n in vision_twins)
    # The old default regex picks the same modules (so the LLaVA runs are unchanged).
    assert matched == {n for n in names if re.fullmatch(DEFAULT_LORA_TARGETS, n)}


def test_fsdp_wrap_classes_are_the_models_layer_classes(family_model) -> None:
    family, model, _ = family_model
    decoder, vision = FAMILY_DEFAULTS[family].fsdp_wrap_classes
    layers = model.model.language_model.layers
    assert {type(m).__name__ for m in layers} == {decoder}
    present = {type(m).__name__: type(m) for m in model.modules()}
    assert vision in present
    vision_layers = [m for m in model.model.vision_tower.modules() if type(m).__name__ == vision] if hasattr(
        model.model, "vision_tower") else [m for m in model.model.visual.blocks]
    assert vision_layers and {type(m).__name__ for m in vision_layers} == {vision}
    for name in (decoder, vision):  # importable from transformers under that name
        cls = present[name]
        assert getattr(importlib.import_module(cls.__module__), name) is cls
        assert cls.__module__.startswith("transformers.models.")
    # accelerate's FSDP default wraps model._no_split_modules: the table's classes are among them.
    assert {decoder, vision} <= set(model._no_split_modules)


def test_peft_adapters_land_on_the_family_targets(family_model) -> None:
    pytest.importorskip("peft")
    import copy

    import peft

    from medcurric.training import apply_lora

    family, model, _ = family_model
    wrapped = apply_lora(copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=lora_targets_for(model)))
    adapted = {n.removeprefix("base_model.model.") for n, m in wrapped.named_modules() if hasattr(m, "lora_A")}
    assert adapted == _language_projections(model)
    assert family_defaults(wrapped).family == family  # a peft model is looked through


def test_unsupported_models_are_named() -> None:
    with pytest.raises(UnsupportedModelError, match=r"Qwen2_5_VLForConditionalGeneration.*, but got Linear"):
        family_defaults(torch.nn.Linear(2, 2))
    with pytest.raises(UnsupportedModelError, match="'blip'"):
        family_defaults("blip")
    assert family_defaults("gemma3").checkpoint == "google/medgemma-4b-it"


def _doc_table() -> dict[str, tuple[str, str, str]]:
    """Rows of the per-family table in docs/api/training.rst: family -> (LoRA modules, decoder, vision)."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(".. families-table-start", 1)[1].split(".. families-table-end", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.split("|")]
        if len(cells) == 7 and cells[1] and cells[1] in FAMILY_DEFAULTS:
            rows[cells[1]] = (cells[3].replace("`", "").replace(" ", ""), cells[4], cells[5])
    return rows


def test_the_docs_table_matches_the_code() -> None:
    rows = _doc_table()
    assert set(rows) == set(FAMILY_DEFAULTS)
    for name, d in FAMILY_DEFAULTS.items():
        assert rows[name] == (",".join(d.attention_modules + d.mlp_modules), d.decoder_layer, d.vision_layer)
