"""CurriculumCollator with the processors of Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, LLaVA-OneVision.

All processors are the real transformers classes with tiny offline tokenizers
(``medcurric.testing.build_family_processor``). References: the decoded text of
the span masks, the token count the layout computes from the image size alone
(``ImageTokenLayout.from_processor``), and a per-token loop over the footprints.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from medcurric.cot.records import CoTSample
from medcurric.curriculum import CurriculumCollator, chat_prompt_template, render
from medcurric.errors import DataFormatError, InvalidOptionError
from medcurric.geometry import ImageTokenLayout
from medcurric.testing import build_family_processor

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "llava_onevision"]
PLACEHOLDER = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "gemma3": "<start_of_image>",
    "llava_onevision": "<image>",
}
SIZES = [(112, 168), (140, 84), (96, 96)]  # (height, width)


@pytest.fixture(scope="module")
def processors():
    return {family: build_family_processor(family) for family in FAMILIES}


def sample(i: int, hw: tuple[int, int], stage: str, box=(10.0, 20.0, 60.0, 70.0)) -> CoTSample:
    return CoTSample(
        id=f"s{i}",
        seed_id=f"k{i}",
        stage=stage,
        question_type="open",
        question=["Where is the {lesion}?", "Is there a nodule?", "What is it?"][i % 3],
        rationale=["The liver shows a mass (8 mm).", "Lung: a nodule, left upper lobe.", "A cyst"][i % 3],
        answer=["liver lesion", "yes", "no, it is a cyst"][i % 3],
        image=f"img{i}.png",
        box=box,
        image_size=(hw[1], hw[0]),
    )


def image(i: int, hw: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (*hw, 3), dtype=np.uint8)


def rendered(proc, stages=("medium", "easy", "hard"), sizes=SIZES, boxes=None):
    template = chat_prompt_template(proc)
    out = []
    for i, (st, hw) in enumerate(zip(stages, sizes, strict=True)):
        kw = {} if boxes is None else {"box": boxes[i]}
        out.append(render(sample(i, hw, st, **kw), st, image=image(i, hw), prompt_template=template))
    return out


def image_token_count(proc, ids: torch.Tensor) -> int:
    wanted = torch.tensor([i for i in proc.image_token_ids if i is not None])
    return int(torch.isin(ids, wanted).sum())


def reference_target(box, layout: ImageTokenLayout) -> np.ndarray:
    """Per-token loop: the share of each token's footprint the box covers, normalised."""
    h, w = layout.image_size
    x1, y1, x2, y2 = np.clip(box, 0, [w, h, w, h])
    cover = np.zeros(layout.num_tokens)
    for p, (a1, b1, a2, b2) in enumerate(layout.footprints):
        area = (a2 - a1) * (b2 - b1)
        if area > 0:
            cover[p] = max(min(x2, a2) - max(x1, a1), 0) * max(min(y2, b2) - max(y1, b1), 0) / area
    return cover / cover.sum()


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_labels_and_span_masks_decode_to_the_text(processors, family) -> None:
    proc = processors[family]
    tok = proc.tokenizer
    feats = rendered(proc)
    batch = CurriculumCollator(proc)(feats)
    assert batch["stage_index"].tolist() == [1, 0, 2]
    for i, f in enumerate(feats):
        assert PLACEHOLDER[family] in f.prompt and "{lesion}" in feats[0].question
        ids = batch["input_ids"][i]
        am = batch["attention_mask"][i].bool()
        labelled = batch["labels"][i] != -100
        assert torch.equal(batch["labels"][i][labelled], ids[labelled])
        assert not bool((labelled & ~am).any())
        assert tok.decode(ids[labelled]).strip() == f.target + tok.eos_token
        # Chat prompts end with a newline: the target follows without a space.
        tail = f.prompt.split(PLACEHOLDER[family])[-1]
        assert tok.decode(ids[am]).endswith(tail + f.target + tok.eos_token)
        assert tok.decode(ids[batch["answer_mask"][i]]).strip() == f.answer
        rat = batch["rationale_mask"][i]
        if f.rationale is None:
            assert not bool(rat.any())
        else:
            assert tok.decode(ids[rat]).strip() == f.rationale
        assert not bool((batch["answer_mask"][i] & rat).any())
        assert bool((labelled | ~(batch["answer_mask"][i] | rat)).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_image_tokens_match_the_layout_and_the_target_lights_the_box(processors, family) -> None:
    proc = processors[family]
    boxes = [(10.0, 20.0, 60.0, 70.0), (0.0, 0.0, 84.0, 40.0), (30.0, 30.0, 90.0, 50.0)]
    feats = rendered(proc, stages=("medium", "medium", "hard"), boxes=boxes)
    batch = CurriculumCollator(proc)(feats)
    assert batch["has_attention_target"].tolist() == [True, True, False]
    P = batch["attention_target"].shape[1]
    for i, hw in enumerate(SIZES):
        layout = ImageTokenLayout.from_processor(proc, hw)
        n = layout.num_tokens
        assert image_token_count(proc, batch["input_ids"][i]) == n
        assert batch["image_key_mask"][i].tolist() == [True] * n + [False] * (P - n)
        target = batch["attention_target"][i]
        if i == 2:
            assert target.abs().sum() == 0
            continue
        assert target[:n].sum().item() == pytest.approx(1.0, abs=1e-5)
        assert target[n:].abs().sum() == 0
        want = reference_target(boxes[i], layout)
        np.testing.assert_allclose(target[:n].numpy(), want, atol=1e-6)
        assert np.array_equal(target[:n].numpy() > 0, want > 0) and (want > 0).sum() >= 1
    sup = batch["supervised_mask"]
    assert torch.equal(sup[0], batch["answer_mask"][0] | batch["rationale_mask"][0])
    assert not bool(sup[2].any())


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_qwen_batch_of_two_image_sizes_pads_the_target(processors, family) -> None:
    proc = processors[family]
    side = 32 if family == "qwen3_vl" else 28
    sizes = [(6 * side, 8 * side), (3 * side, 4 * side)]  # multiples of a token: no resize
    boxes = [(0.0, 0.0, 8.0 * side, 6.0 * side), (2.0 * side, side, 4.0 * side, 3.0 * side)]
    feats = rendered(proc, stages=("medium", "medium"), sizes=sizes, boxes=boxes)
    batch = CurriculumCollator(proc)(feats)
    counts = [48, 12]
    thw = batch["image_grid_thw"]
    assert [int(t.prod()) // 4 for t in thw] == counts
    assert batch["pixel_values"].shape[0] == int(thw.prod(dim=1).sum())
    assert batch["attention_target"].shape == (2, max(counts))
    assert batch["image_key_mask"].sum(dim=1).tolist() == counts
    # The whole first image: uniform over its tokens.
    np.testing.assert_allclose(batch["attention_target"][0].numpy(), 1 / counts[0], rtol=1e-6)
    small = batch["attention_target"][1]
    assert small[counts[1] :].abs().sum() == 0 and small.sum().item() == pytest.approx(1.0, abs=1e-6)
    layout = ImageTokenLayout.from_processor(proc, sizes[1])
    np.testing.assert_allclose(small[: counts[1]].numpy(), reference_target(boxes[1], layout), atol=1e-6)
    # Aligned box: exactly the 2 x 2 tokens of rows 1-2, columns 2-3 of the 3 x 4 grid.
    assert torch.nonzero(small).ravel().tolist() == [6, 7, 10, 11]
    assert set(CurriculumCollator.model_inputs(batch)) == {
        "input_ids", "attention_mask", "pixel_values", "labels", "image_grid_thw", "mm_token_type_ids",
    }


@pytest.mark.parametrize("family", ["qwen2_5_vl", "gemma3"])
def test_easy_overlay_is_drawn_in_original_pixels(processors, family, tmp_path) -> None:
    from PIL import Image

    proc = processors[family]
    hw, box = (120, 200), (40.0, 30.0, 100.0, 90.0)
    Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(tmp_path / "img0.png")
    collate = CurriculumCollator(proc, image_root=tmp_path)
    raw = sample(0, hw, "easy", box=box)
    r = collate._render(raw)
    assert r.prompt.startswith(chat_prompt_template(proc).split("{question}")[0])
    drawn = np.asarray(r.image).any(axis=2)
    assert r.image.size == (hw[1], hw[0]) and drawn.any()
    ys, xs = np.nonzero(drawn)
    assert xs.min() >= box[0] - 6 and xs.max() <= box[2] + 6
    assert ys.min() >= box[1] - 6 and ys.max() <= box[3] + 6
    batch = collate([raw])  # raw samples are rendered with the chat template
    assert image_token_count(proc, batch["input_ids"][0]) == ImageTokenLayout.from_processor(proc, hw).num_tokens


def test_llava_prompts_are_refused_by_other_processors(processors) -> None:
    proc = processors["qwen2_5_vl"]
    feats = [render(sample(0, (96, 96), "hard"), "hard", image=image(0, (96, 96)))]
    with pytest.raises(DataFormatError, match="chat_prompt_template"):
        CurriculumCollator(proc)(feats)


def test_chat_prompt_template_of_each_family(processors) -> None:
    assert chat_prompt_template(processors["qwen2_5_vl"]) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert chat_prompt_template(processors["llava_onevision"]) == (
        "<|im_start|>user <image>\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    import transformers

    assert isinstance(processors["qwen2_5_vl"], transformers.Qwen2_5_VLProcessor)
    assert isinstance(processors["llava_onevision"], transformers.LlavaOnevisionProcessor)
    assert type(processors["gemma3"]) is transformers.Gemma3Processor
    llava = build_family_processor("llava")
    assert chat_prompt_template(llava) == "###Human: <image>\n{question}###Assistant:"
    with pytest.raises(InvalidOptionError, match="Did you mean 'gemma3'"):
        build_family_processor("gemma-3")


def test_a_tokenizer_that_adds_bos_gets_one_bos(processors) -> None:
    from tokenizers.processors import TemplateProcessing

    from medcurric.testing import build_family_tokenizer

    tok = build_family_tokenizer("gemma3")
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    proc = build_family_processor("gemma3", tokenizer=tok)
    assert chat_prompt_template(proc).startswith("<start_of_turn>user\n")
    feats = rendered(proc, stages=("medium",), sizes=[(64, 64)])
    batch = CurriculumCollator(proc)(feats)
    ids = batch["input_ids"][0]
    assert ids[0] == bos and int((ids == bos).sum()) == 1
    assert tok.decode(ids[batch["answer_mask"][0]]).strip() == feats[0].answer
    # Without the tokenizer's BOS, the template's own BOS stays.
    assert chat_prompt_template(processors["gemma3"]).startswith("<bos><start_of_turn>")


def test_gemma3_at_the_checkpoint_sizes_has_256_tokens_between_the_markers() -> None:
    import transformers

    from medcurric.testing import build_family_tokenizer

    tok = build_family_tokenizer("gemma3")
    proc = transformers.Gemma3Processor(
        image_processor=transformers.Gemma3ImageProcessorPil(size={"height": 896, "width": 896}),
        tokenizer=tok,
        chat_template=tok.chat_template,
        image_seq_length=256,
    )
    hw, box = (300, 500), (100.0, 50.0, 300.0, 250.0)
    feats = rendered(proc, stages=("medium",), sizes=[hw], boxes=[box])
    batch = CurriculumCollator(proc)(feats)
    ids = batch["input_ids"][0].tolist()
    boi, eoi = (tok.convert_tokens_to_ids(t) for t in ("<start_of_image>", "<end_of_image>"))
    start, end = ids.index(boi), ids.index(eoi)
    assert end - start - 1 == 256 == image_token_count(proc, batch["input_ids"][0])
    assert set(ids[start + 1 : end]) == {tok.image_token_id}
    layout = ImageTokenLayout.from_processor(proc, hw)
    target = batch["attention_target"][0].numpy()
    assert target.shape == (256,) and layout.grids[0].rows == 16
    np.testing.assert_allclose(target, reference_target(box, layout), atol=1e-6)
