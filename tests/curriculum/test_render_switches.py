"""The render switches that reproduce the authors' stages (``easy_prompt_box``, ``hard_image``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcurric.cot.records import CoTSample
from medcurric.curriculum import EasyPromptBox, format_box, pair_hard_images, render
from medcurric.errors import InvalidOptionError, MedcurricWarning


def sample(**kw) -> CoTSample:
    base = dict(id="s1", seed_id="k1", stage="easy", question_type="open", question="What is seen?",
                rationale="The box lies over the liver; a cyst.", answer="A cyst.", image="a.png",
                box=(20.0, 10.0, 36.0, 30.0), image_size=(80, 40), lesion_type="cyst")
    base.update(kw)
    return CoTSample(**base)


def image(value: int, w: int = 80, h: int = 40) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_easy_prompt_box_modes() -> None:
    s = sample()
    box = format_box((0.25, 0.25, 0.45, 0.75))
    default = render(s, "easy", image=image(50))
    assert default.question == f"What is seen?\nThe region of interest is {default.phrase}, at box {box}."
    phrase = render(s, "easy", image=image(50), easy_prompt_box="phrase")
    assert phrase.question == f"What is seen?\nThe region of interest is {phrase.phrase}."
    none = render(s, "easy", image=image(50), easy_prompt_box=EasyPromptBox.NONE)
    assert none.question == "What is seen?"
    assert none.prompt == "###Human: <image>\nWhat is seen?###Assistant:"
    # the box is drawn whatever the prompt says
    assert np.array_equal(np.asarray(none.image), np.asarray(default.image))
    assert not np.array_equal(np.asarray(none.image), image(50))
    # Medium and Hard prompts do not change
    for st in ("medium", "hard"):
        assert render(s, st, image=image(50), easy_prompt_box="none").prompt == render(s, st, image=image(50)).prompt


def test_easy_prompt_box_errors_and_warnings() -> None:
    with pytest.raises(InvalidOptionError, match="append"):
        render(sample(), "easy", image=image(50), easy_prompt_box="apend")
    with pytest.warns(MedcurricWarning, match="easy_prompt"):
        render(sample(), "easy", image=image(50), easy_prompt_box="none", easy_prompt="{question} {box}")


def test_hard_image_replaces_the_image_for_hard_only(tmp_path: Path) -> None:
    Image.fromarray(image(10)).save(tmp_path / "a.png")
    Image.fromarray(image(200)).save(tmp_path / "b.png")
    s, partner = sample(), sample(id="s2", image="b.png", answer="Another cyst.")
    own = render(s, "hard", image_root=tmp_path)
    paired = render(s, "hard", image_root=tmp_path, hard_image=partner)
    assert np.asarray(own.image).max() == 10 and np.asarray(paired.image).min() == 200
    assert (paired.id, paired.target, paired.prompt) == (s.id, "Answer: A cyst.", own.prompt)
    arr = render(s, "hard", image_root=tmp_path, hard_image=image(99))
    assert np.asarray(arr.image).min() == 99
    with pytest.warns(MedcurricWarning, match="hard_image"):
        easy = render(s, "easy", image_root=tmp_path, hard_image=partner)
    assert np.asarray(easy.image).min() <= 10


def test_hard_image_of_a_partner_uses_the_partners_window(tmp_path: Path) -> None:
    ct = np.full((40, 80), 32768 + 40, dtype=np.uint16)  # 40 HU everywhere
    Image.fromarray(ct).save(tmp_path / "b.png")
    Image.fromarray(image(0)).save(tmp_path / "a.png")
    narrow, wide = sample(image="b.png", window=(0.0, 80.0)), sample(image="b.png", window=(-1000.0, 1000.0))
    v_narrow = np.asarray(render(sample(), "hard", image_root=tmp_path, hard_image=narrow).image).mean()
    v_wide = np.asarray(render(sample(), "hard", image_root=tmp_path, hard_image=wide).image).mean()
    assert abs(v_narrow - 127.5) < 2 and abs(v_wide - 132.6) < 2


def test_pair_hard_images_pairs_within_the_domain_with_another_image() -> None:
    samples = [sample(id=f"{t}{i}-{k}", image=f"{t}{i}.png", lesion_type=t)
               for t, n in (("cyst", 5), ("nodule", 3), ("mass", 1)) for i in range(n) for k in range(2)]
    pairs = pair_hard_images(samples, seed=3)
    by_id = {s.id: s for s in samples}
    assert set(pairs) == {s.id for s in samples if s.lesion_type != "mass"}  # one image: no partner
    for sid, partner in pairs.items():
        assert partner.lesion_type == by_id[sid].lesion_type and partner.image != by_id[sid].image
    # every image of a domain is used as a partner (a cycle through the domain's images)
    used = Counter(p.image for p in pairs.values())
    assert set(used) == {s.image for s in samples if s.lesion_type != "mass"}
    assert pair_hard_images(samples, seed=3) == pairs
    assert any(pair_hard_images(samples, seed=k) != pairs for k in range(4, 10))
    # a custom domain key: nothing shares (lesion type, image), so nothing is paired
    assert pair_hard_images(samples, domain=lambda s: (s.lesion_type, s.image)) == {}
