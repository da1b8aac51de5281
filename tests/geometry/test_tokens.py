"""ImageTokenLayout / box_to_token_distribution against real transformers processors (offline).

The oracle for every family: draw a bright square, run the real (PIL-backend)
processor, pool its pixel output per token as the model does, and compare the lit
tokens with the tokens the layout says the square covers.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medcurric.errors import (
    InvalidBoxError,
    ShapeError,
    UnsupportedModelError,
    WrongTypeError,
)
from medcurric.geometry import (
    ImageTokenLayout,
    Preprocess,
    TokenGrid,
    box_to_patch_distribution,
    box_to_token_distribution,
    gaussian,
    map_boxes,
)

transformers = pytest.importorskip("transformers")

RAW = {"do_rescale": False, "do_normalize": False}


def _image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


def _layout_lit(layout: ImageTokenLayout, box: tuple[int, int, int, int]) -> np.ndarray:
    """Tokens more than half covered by the box (coverage = distribution / its maximum)."""
    p = box_to_token_distribution([box], layout)[0]
    return p / p.max() > 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _patch_means(view: np.ndarray, patch: int) -> np.ndarray:
    """[3, H, W] -> [H // patch, W // patch] mean brightness (the unseen border dropped)."""
    gray = view.mean(axis=0)
    rows, cols = gray.shape[0] // patch, gray.shape[1] // patch
    gray = gray[: rows * patch, : cols * patch]
    return gray.reshape(rows, patch, cols, patch).mean(axis=(1, 3))


# ---------------------------------------------------------------- LLaVA / VIP-LLaVA
def _clip():
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, **RAW)


def _llava():
    cls = getattr(transformers, "LlavaImageProcessorPil", None) or transformers.LlavaImageProcessor
    return cls(do_pad=True, size={"height": 336, "width": 336}, do_center_crop=False, **RAW)


BOXES = np.array(
    [
        [10, 20, 90, 200],
        [150, 5, 299, 140],
        [0, 0, 300, 300],
        [260, 250, 400, 420],
        [-50, -9, 3, 2],
    ],
    dtype=np.float64,
)


@pytest.mark.parametrize("make", [_clip, _llava], ids=["vip-llava-clip", "llava-pad"])
@pytest.mark.parametrize("hw", [(200, 300), (300, 200), (336, 336), (517, 333), (120, 999)])
@pytest.mark.parametrize("smoothing", [None, gaussian(9, 3), gaussian(5, 1.5, padding="zeros")])
def test_fixed_grid_equals_box_to_patch_distribution(make, hw, smoothing) -> None:
    proc = make()
    layout = ImageTokenLayout.from_processor(proc, hw)
    assert layout.num_tokens == 576 and layout.grids == (TokenGrid(0, 24, 24),)
    mapped = map_boxes(BOXES, Preprocess.from_processor(proc), hw)
    want = box_to_patch_distribution(mapped.boxes, 24, input_size=336, smoothing=smoothing)
    got = box_to_token_distribution(BOXES, layout, smoothing=smoothing)
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("make", [_clip, _llava], ids=["vip-llava-clip", "llava-pad"])
def test_fixed_grid_lit_tokens_match_processor(make) -> None:
    proc = make()
    for hw, box in [((336, 336), (28, 42, 140, 98)), ((672, 672), (56, 84, 280, 196))]:
        layout = ImageTokenLayout.from_processor(proc, hw)
        pixels = proc(_image(*hw, box), return_tensors="np")["pixel_values"][0]
        lit = _patch_means(pixels, 14).ravel() > 127.5
        np.testing.assert_array_equal(_layout_lit(layout, box), lit)


def test_fixed_grid_reads_the_full_processor_and_refuses_a_kept_cls_token() -> None:
    full = SimpleNamespace(
        image_processor=_clip(),
        patch_size=14,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
    )
    assert ImageTokenLayout.from_processor(full, (200, 300)).num_tokens == 576
    full.patch_size = 28
    assert ImageTokenLayout.from_processor(full, (200, 300)).num_tokens == 144
    full.vision_feature_select_strategy = "full"
    with pytest.raises(UnsupportedModelError, match="CLS"):
        ImageTokenLayout.from_processor(full, (200, 300))
    resize_only = SimpleNamespace(do_resize=True, size={"shortest_edge": 336}, resample=3)
    with pytest.raises(UnsupportedModelError, match="fixed output size"):
        ImageTokenLayout.from_processor(resize_only, (200, 300))
    fake_qwen = type("Qwen2VLImageProcessorPil", (), {})()
    with pytest.raises(UnsupportedModelError, match="smart_resize"):
        ImageTokenLayout.from_processor(fake_qwen, (200, 300))


# ---------------------------------------------------------------- Qwen2-VL / 2.5 / 3
def _qwen2():
    return transformers.Qwen2VLImageProcessorPil(**RAW)


def _qwen3():
    # Qwen3-VL ships Qwen2VLImageProcessor with 16 px patches (its preprocessor_config).
    return transformers.Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, size={"shortest_edge": 65536, "longest_edge": 16777216}, **RAW
    )


def _qwen_lit(proc, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lit merged tokens from the processor's flat patches (merge x merge consecutive rows)."""
    out = proc(image, return_tensors="np")
    merge = proc.merge_size
    flat = out["pixel_values"].reshape(-1, merge * merge, out["pixel_values"].shape[-1])
    return flat.mean(axis=(1, 2)) > 127.5, out["image_grid_thw"]


@pytest.mark.parametrize(
    ("make", "side", "cases"),
    [
        (_qwen2, 28, [((280, 420), (56, 84, 196, 168)), ((560, 280), (0, 28, 112, 308))]),
        (_qwen3, 32, [((320, 480), (64, 96, 224, 192)), ((256, 256), (0, 0, 96, 64))]),
    ],
    ids=["qwen2-vl", "qwen3-vl"],
)
def test_qwen_aligned_squares_light_exactly_the_layout_tokens(make, side, cases) -> None:
    proc = make()
    for hw, box in cases:
        layout = ImageTokenLayout.from_processor(proc, hw)
        assert np.allclose(layout.footprints[0], [0, 0, side, side])  # smart_resize is identity
        lit, thw = _qwen_lit(proc, _image(*hw, box))
        assert layout.num_tokens == int(thw.prod()) // proc.merge_size**2 == lit.size
        np.testing.assert_array_equal(_layout_lit(layout, box), lit)


@pytest.mark.parametrize("make", [_qwen2, _qwen3], ids=["qwen2-vl", "qwen3-vl"])
@pytest.mark.parametrize(
    ("hw", "box"),
    [
        ((333, 517), (100, 60, 300, 250)),
        ((1000, 1500), (700, 100, 1100, 500)),
        ((90, 60), (10, 20, 50, 70)),
    ],
)
def test_qwen_resized_images_and_batch_output(make, hw, box) -> None:
    proc = make()
    layout = ImageTokenLayout.from_processor(proc, hw)
    lit, thw = _qwen_lit(proc, _image(*hw, box))
    assert layout.num_tokens == proc.get_number_of_image_patches(*hw) // proc.merge_size**2
    assert _iou(_layout_lit(layout, box), lit) >= 0.95
    (from_output,) = ImageTokenLayout.from_processor_output(proc, {"image_grid_thw": thw}, [hw])
    np.testing.assert_allclose(from_output.footprints, layout.footprints)
    # The footprints tile the original image exactly.
    assert layout.footprints[:, [0, 1]].min() == 0
    np.testing.assert_allclose(layout.footprints[-1, 2:], [hw[1], hw[0]])
    areas = np.prod(layout.footprints[:, 2:] - layout.footprints[:, :2], axis=1)
    assert np.isclose(areas.sum(), hw[0] * hw[1])


def test_qwen_batch_of_images_of_different_sizes() -> None:
    proc = _qwen2()
    sizes = [(280, 420), (333, 517)]
    out = proc([np.zeros((*s, 3), np.uint8) for s in sizes], return_tensors="np")
    layouts = ImageTokenLayout.from_processor_output(proc, out, sizes)
    assert [lay.num_tokens for lay in layouts] == [150, 216]
    assert sum(lay.num_tokens for lay in layouts) * 4 == out["pixel_values"].shape[0]
    with pytest.raises(ShapeError, match="one image size per"):
        ImageTokenLayout.from_processor_output(proc, out, sizes[:1])
    with pytest.raises(ShapeError, match="image_sizes"):
        ImageTokenLayout.from_processor_output(proc, out)


# ---------------------------------------------------------------- Gemma 3
def _gemma(**kwargs):
    return transformers.Gemma3ImageProcessorPil(size={"height": 896, "width": 896}, **RAW, **kwargs)


@pytest.mark.parametrize(
    ("hw", "box", "exact"),
    [
        ((896, 896), (112, 56, 336, 280), True),
        ((448, 1792), (224, 56, 672, 168), True),
        ((500, 700), (100, 120, 400, 330), False),
    ],
)
def test_gemma3_pooled_tokens_match_processor(hw, box, exact) -> None:
    proc = _gemma()
    layout = ImageTokenLayout.from_processor(proc, hw)
    assert layout.num_tokens == 256 and layout.family == "gemma3"
    pixels = proc(_image(*hw, box), return_tensors="np")["pixel_values"][0]
    # 14 px SigLIP patches average-pooled 4 x 4: the mean over 56 x 56 pixel blocks.
    lit = _patch_means(pixels, 56).ravel() > 127.5
    mine = _layout_lit(layout, box)
    if exact:
        np.testing.assert_array_equal(mine, lit)
    else:
        assert _iou(mine, lit) >= 0.95


def test_gemma3_pan_and_scan_is_refused_and_token_count_read() -> None:
    with pytest.raises(UnsupportedModelError, match="pan_and_scan"):
        ImageTokenLayout.from_processor(_gemma(do_pan_and_scan=True), (100, 400))
    full = SimpleNamespace(image_processor=_gemma(), image_seq_length=64)
    assert ImageTokenLayout.from_processor(full, (100, 400)).num_tokens == 64
    with pytest.raises(UnsupportedModelError, match="square number"):
        ImageTokenLayout.from_processor(_gemma(), (100, 400), tokens_per_image=200)


# ---------------------------------------------------------------- LLaVA-OneVision
def _onevision():
    return transformers.LlavaOnevisionImageProcessorPil(**RAW)


def _onevision_reference(proc, image: np.ndarray) -> np.ndarray:
    """Per-token brightness in sequence order from the model's own packing (newline = -1)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    out = proc(image, return_tensors="np")
    views = out["pixel_values"][0]
    feats = torch.from_numpy(np.stack([_patch_means(v, 14).reshape(-1, 1) for v in views]))
    model = SimpleNamespace(
        config=SimpleNamespace(
            vision_config=SimpleNamespace(image_size=384, patch_size=14),
            image_grid_pinpoints=proc.image_grid_pinpoints,
        )
    )
    packed, _lens = LlavaOnevisionModel.pack_image_features(
        model,
        [feats.float()],
        torch.as_tensor(out["image_sizes"]),
        image_newline=torch.tensor([-1.0]),
        vision_aspect_ratio="anyres_max_9",
    )
    return packed[0][:, 0].numpy()


def _onevision_count(proc, h: int, w: int) -> int:
    cls = transformers.LlavaOnevisionProcessor
    fake = SimpleNamespace(
        image_processor=proc, num_image_tokens=729, vision_aspect_ratio="anyres_max_9"
    )
    fake._get_unpadded_features = functools.partial(cls._get_unpadded_features, fake)
    return int(cls._get_number_of_features(fake, h, w, 384, 384))


@pytest.mark.parametrize(
    ("hw", "box", "min_iou"),
    [
        ((384, 384), (70, 42, 140, 126), 1.0),  # one tile, aligned to the 14 px patches
        ((768, 768), (84, 56, 168, 140), 1.0),  # 2 x 2 tiles, aligned in base and tiles
        ((500, 700), (100, 120, 400, 330), 0.95),  # unpadded rows
        ((300, 1200), (500, 40, 800, 260), 0.95),  # unpadded, very wide
        ((700, 500), (120, 100, 330, 400), 0.95),  # unpadded columns
        ((1200, 300), (40, 500, 260, 800), 0.95),  # unpadded, very tall
        ((1536, 1536), (300, 200, 900, 1000), 0.99),  # bilinearly shrunk (anyres_max_9)
    ],
)
def test_onevision_order_count_and_lit_tokens_match_model_packing(hw, box, min_iou) -> None:
    proc = _onevision()
    layout = ImageTokenLayout.from_processor(proc, hw)
    ref = _onevision_reference(proc, _image(*hw, box))
    assert layout.num_tokens == ref.size == _onevision_count(proc, *hw)
    np.testing.assert_array_equal(layout.is_image, ref != -1)
    mine = _layout_lit(layout, box)
    assert not mine[~layout.is_image].any()
    assert _iou(mine, ref > 127.5) >= min_iou
    base = slice(0, 729)
    if min_iou == 1.0:
        np.testing.assert_array_equal(mine, ref > 127.5)
    else:  # the base view alone is a plain resize: nearly exact
        assert _iou(mine[base], ref[base] > 127.5) >= 0.95
    (from_output,) = ImageTokenLayout.from_processor_output(
        proc, proc(np.zeros((*hw, 3), np.uint8), return_tensors="np")
    )
    np.testing.assert_allclose(from_output.footprints, layout.footprints)


def test_onevision_multi_image_samples_are_refused() -> None:
    proc = _onevision()
    images = [[np.zeros((50, 80, 3), np.uint8), np.zeros((60, 60, 3), np.uint8)]]
    out = proc(images, return_tensors="np")
    with pytest.raises(UnsupportedModelError, match="batch_num_images"):
        ImageTokenLayout.from_processor_output(proc, out)


def test_onevision_newline_tokens_get_no_target_even_smoothed() -> None:
    layout = ImageTokenLayout.from_processor(_onevision(), (500, 700))
    newline = ~layout.is_image
    assert newline.sum() == layout.grids[1].rows
    assert np.all(layout.footprints[newline] == 0)
    for smoothing in (None, gaussian(9, 3)):
        p = box_to_token_distribution([[100, 100, 300, 200]], layout, smoothing=smoothing)
        assert np.isclose(p.sum(), 1.0) and np.all(p[:, newline] == 0)


# ---------------------------------------------------------------- exact fractions
def _brightness_in_sequence_order(name: str, proc, image: np.ndarray) -> np.ndarray:
    """Mean brightness / 255 of each token's pixels, pooled or merged as the model does."""
    if name == "onevision":
        ref = _onevision_reference(proc, image)
        return np.where(ref == -1, 0.0, ref) / 255.0
    out = proc(image, return_tensors="np")
    if name.startswith("qwen"):
        flat = out["pixel_values"].reshape(-1, proc.merge_size**2, out["pixel_values"].shape[-1])
        return flat.mean(axis=(1, 2)) / 255.0
    return _patch_means(out["pixel_values"][0], 56 if name == "gemma3" else 14).ravel() / 255.0


@pytest.mark.parametrize(
    ("name", "make", "hw"),
    [
        ("vip-llava", _clip, (336, 336)),
        ("qwen2-vl", _qwen2, (280, 420)),
        ("qwen3-vl", _qwen3, (320, 480)),
        ("gemma3", _gemma, (896, 896)),
        ("onevision", _onevision, (384, 384)),
    ],
)
def test_unaligned_box_gives_the_exact_fraction_of_each_tokens_pixels(name, make, hw) -> None:
    # No resampling at these sizes, so a token's mean brightness is the covered fraction.
    proc = make()
    box = (37, 23, 211, 158)
    layout = ImageTokenLayout.from_processor(proc, hw)
    want = _brightness_in_sequence_order(name, proc, _image(*hw, box))
    got = box_to_token_distribution([box], layout)[0]
    np.testing.assert_allclose(got, want / want.sum(), atol=1e-6)


# ---------------------------------------------------------------- the kernel itself
def _brute_force(box: list[float], layout: ImageTokenLayout) -> np.ndarray:
    h, w = layout.image_size
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    cover = []
    for fx1, fy1, fx2, fy2 in layout.footprints.tolist():
        area = (fx2 - fx1) * (fy2 - fy1)
        ix = max(0.0, min(x2, fx2) - max(x1, fx1))
        iy = max(0.0, min(y2, fy2) - max(y1, fy1))
        cover.append(ix * iy / area if area > 0 else 0.0)
    c = np.array(cover)
    return c / c.sum() if c.sum() > 1e-12 else c


@settings(max_examples=40, deadline=None)
@given(
    st.tuples(*[st.floats(-60, 560, allow_nan=False) for _ in range(4)]),
    st.sampled_from([(333, 517), (90, 60), (500, 500)]),
)
def test_matches_per_token_loop(raw, hw) -> None:
    x1, x2 = sorted(raw[::2])
    y1, y2 = sorted(raw[1::2])
    layout = ImageTokenLayout.from_processor(_qwen2(), hw)
    got = box_to_token_distribution([[x1, y1, x2, y2]], layout)[0]
    np.testing.assert_allclose(got, _brute_force([x1, y1, x2, y2], layout), atol=1e-12)
    assert np.isclose(got.sum(), 1.0) or got.sum() == 0


def test_torch_numpy_dtypes_empty_and_errors() -> None:
    layout = ImageTokenLayout.from_grid((4, 6), (40, 60), Preprocess.plain_resize((40, 60)))
    boxes = [[5.0, 5.0, 25.0, 17.0], [100.0, 100.0, 120.0, 130.0]]
    ref = box_to_token_distribution(boxes, layout)
    assert ref.dtype == np.float64 and ref.shape == (2, 24)
    assert np.isclose(ref[0].sum(), 1.0) and np.all(ref[1] == 0)  # box outside: no target
    t32 = box_to_token_distribution(torch.tensor(boxes), layout)
    t64 = box_to_token_distribution(torch.tensor(boxes, dtype=torch.float64), layout)
    assert t32.dtype == torch.float32 and t64.dtype == torch.float64
    np.testing.assert_allclose(t32.numpy(), ref, atol=1e-6)
    assert box_to_token_distribution(np.zeros((0, 4)), layout).shape == (0, 24)
    assert box_to_token_distribution(torch.zeros(0, 4), layout).shape == (0, 24)
    with pytest.raises(ShapeError, match=r"\[N, 4\]"):
        box_to_token_distribution([[1, 2, 3]], layout)
    with pytest.raises(InvalidBoxError):
        box_to_token_distribution([[5, 5, 1, 1]], layout)
    with pytest.raises(WrongTypeError, match="ImageTokenLayout"):
        box_to_token_distribution(boxes, "layout")  # type: ignore[arg-type]
    with pytest.raises(WrongTypeError, match="smoothing"):
        box_to_token_distribution(boxes, layout, smoothing=3)  # type: ignore[arg-type]


def test_layout_validation() -> None:
    with pytest.raises(ShapeError, match=r"\[P, 4\]"):
        ImageTokenLayout(np.zeros((3, 3)), (10, 10), (TokenGrid(0, 1, 3),))
    with pytest.raises(ShapeError, match="cover all"):
        ImageTokenLayout(np.zeros((4, 4)), (10, 10), (TokenGrid(0, 1, 3),))
    with pytest.raises(ShapeError, match="in order"):
        ImageTokenLayout(np.zeros((6, 4)), (10, 10), (TokenGrid(0, 1, 3), TokenGrid(4, 1, 2)))
    with pytest.raises(UnsupportedModelError, match="fixed output size"):
        ImageTokenLayout.from_grid((24, 24), (10, 10), Preprocess(shortest_edge=336))
    grid = TokenGrid(3, 2, 2, newline=True)
    assert grid.length == 6 and grid.indices().tolist() == [[3, 4], [6, 7]]
