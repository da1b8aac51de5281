from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from medcurric.cot.records import CoTSample
from medcurric.curriculum import CurriculumCollator, CurriculumScheduler, render
from medcurric.errors import DataFormatError
from medcurric.losses.lm import span_weighted_lm_loss
from medcurric.testing.tiny import build_tiny_vlm


@pytest.fixture(scope="module")
def vlm():
    return build_tiny_vlm(seed=0)


def sample(i: int, **kw) -> CoTSample:
    rationales = [
        "The box at [0.1250, 0.2500] lies in the liver; a hypodense lesion is seen.",
        "Lung: a nodule in the left upper lobe (8 mm).",
        "Kidney {cortex} shows a cyst",
    ]
    answers = ["liver lesion", "yes", "no, it is a cyst"]
    base = dict(
        id=f"s{i}",
        seed_id=f"k{i}",
        stage=["easy", "medium", "hard"][i % 3],
        question_type="open",
        question=["Where is the lesion?", "Is there a nodule?", "What is it?"][i % 3],
        rationale=rationales[i % 3],
        answer=answers[i % 3],
        image=f"img{i}.png",
        box=(8.0 + i, 6.0, 30.0, 28.0 + i),
        image_size=(56, 48),
        lesion_type=["liver", "lung"][i % 2],
    )
    base.update(kw)
    return CoTSample(**base)


def img(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (48, 56, 3), dtype=np.uint8)


def rendered_batch(stages=("easy", "medium", "hard")):
    return [render(sample(i), st, image=img(i), grid=(6, 6)) for i, st in enumerate(stages)]


def test_batch_layout_labels_and_span_masks(vlm) -> None:
    feats = rendered_batch()
    collate = CurriculumCollator(vlm.processor)
    batch = collate(feats)
    tok = vlm.tokenizer
    B = batch["input_ids"].shape[0]
    assert B == 3 and batch["pixel_values"].shape == (3, 3, 48, 48)
    for i, f in enumerate(feats):
        ids = batch["input_ids"][i]
        am = batch["attention_mask"][i].bool()
        assert int((ids == vlm.image_token_id).sum()) == vlm.num_image_tokens
        labelled = batch["labels"][i] != -100
        # Labels are exactly the input ids of the target (+ EOS), -100 elsewhere (prompt, padding).
        assert torch.equal(batch["labels"][i][labelled], ids[labelled])
        assert not bool((labelled & ~am).any())
        assert tok.decode(ids[labelled]).strip() == f.target + tok.eos_token
        prompt_ids = ids[am & ~labelled]
        assert tok.decode(prompt_ids).replace(tok.decode([vlm.image_token_id]), "").strip() == (
            f.prompt.replace("<image>", "").strip()
        )
        # Span masks decode back to the answer and rationale texts.
        ans = batch["answer_mask"][i]
        rat = batch["rationale_mask"][i]
        assert tok.decode(ids[ans]).strip() == f.answer
        if f.rationale is None:
            assert not bool(rat.any())
        else:
            assert tok.decode(ids[rat]).strip() == f.rationale
        assert not bool((ans & rat).any())
        assert bool((labelled | ~(ans | rat)).all())  # spans lie inside the labels
    assert batch["stage_index"].tolist() == [0, 1, 2]


def test_attention_targets_and_supervised_mask(vlm) -> None:
    feats = rendered_batch(("medium", "easy", "medium"))
    batch = CurriculumCollator(vlm.processor)(feats)
    assert batch["attention_target"].shape == (3, 36)
    assert batch["has_attention_target"].tolist() == [True, False, True]
    for i in (0, 2):
        assert torch.allclose(batch["attention_target"][i], torch.from_numpy(feats[i].attention_target))
        assert batch["attention_target"][i].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert batch["attention_target"][1].abs().sum() == 0
    sup = batch["supervised_mask"]
    assert torch.equal(sup[0], batch["answer_mask"][0] | batch["rationale_mask"][0])
    assert not bool(sup[1].any())
    only_answer = CurriculumCollator(vlm.processor, supervise="answer")(feats)["supervised_mask"]
    assert torch.equal(only_answer[2], batch["answer_mask"][2])
    only_rat = CurriculumCollator(vlm.processor, supervise="rationale")(feats)["supervised_mask"]
    assert torch.equal(only_rat[2], batch["rationale_mask"][2])


def test_model_runs_on_the_batch_and_the_span_loss_matches_its_loss(vlm) -> None:
    batch = CurriculumCollator(vlm.processor)(rendered_batch())
    inputs = CurriculumCollator.model_inputs(batch)
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    out = vlm.model(**inputs)
    labelled = batch["labels"] != -100
    all_tokens = span_weighted_lm_loss(out.logits, batch["labels"], {"all": labelled}, {"all": 1.0})
    assert all_tokens.item() == pytest.approx(out.loss.item(), rel=1e-5)
    weighted = span_weighted_lm_loss(
        out.logits, batch["labels"], {"answer": batch["answer_mask"], "rationale": batch["rationale_mask"]}
    )
    weighted.backward()
    assert torch.isfinite(weighted)


def test_dicts_of_rendered_fields_collate_like_rendered_samples(vlm) -> None:
    feats = rendered_batch()
    collate = CurriculumCollator(vlm.processor)
    a, b = collate(feats), collate([f.to_dict() for f in feats])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DataFormatError, match="RenderedSample"):
        collate([{"prompt": "p", "target": "t", "image": feats[0].image}])


def test_raw_samples_are_rendered_from_the_image_root(vlm, tmp_path) -> None:
    from PIL import Image

    for i in range(3):
        Image.fromarray(img(i)).save(tmp_path / f"img{i}.png")
    sched = CurriculumScheduler(patience=0, min_delta=0.0)
    collate = CurriculumCollator(vlm.processor, scheduler=sched, image_root=tmp_path)
    batch = collate([sample(0), sample(1).to_dict()])
    assert batch["stage_index"].tolist() == [0, 0]
    sched.step({"loss": 1.0})
    sched.step({"loss": 1.0})
    batch = collate([sample(0), sample(1)])
    assert batch["stage_index"].tolist() == [1, 1] and batch["has_attention_target"].all()
    # No scheduler: each sample's own stage field.
    own = CurriculumCollator(vlm.processor, image_root=tmp_path)([sample(0), sample(1), sample(2)])
    assert own["stage_index"].tolist() == [0, 1, 2]
    # Per-domain policy: drawn per sample from its domain's probabilities.
    per = CurriculumScheduler(policy="per_domain", mixing_start_epoch=0, mixing_ramp_epochs=1)
    per.observe("liver", "easy", 1.0)
    per.observe("liver", "medium", 0.01)  # gap ~1: Medium almost surely for liver
    per.step({"loss": 1.0})
    drawn = CurriculumCollator(vlm.processor, scheduler=per, image_root=tmp_path, rng=np.random.default_rng(0))(
        [sample(0), sample(2), sample(1)]
    )
    assert drawn["stage_index"].tolist()[:2] == [1, 1]  # liver samples


def test_no_eos_option_and_empty_batch(vlm) -> None:
    feats = rendered_batch(("hard",))
    batch = CurriculumCollator(vlm.processor, add_eos=False)(feats)
    labelled = batch["labels"][0] != -100
    assert vlm.tokenizer.decode(batch["input_ids"][0][labelled]).strip() == "Answer: liver lesion"
    with pytest.raises(DataFormatError):
        CurriculumCollator(vlm.processor)([])
