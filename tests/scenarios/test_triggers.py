"""Stamping patch and blend triggers (both image layouts), token triggers, bad-sample sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs
from inner_onnx.io.specs import BlendSpec, PatchSpec, parse_trigger
from inner_onnx.scenarios.triggers import backdoor_bad_samples, stamp


def _patch(tmp_path: Path, pattern: np.ndarray, row: int = 0, col: int = 0) -> PatchSpec:
    path = tmp_path / "patch.npy"
    np.save(path, pattern.astype(np.float32))
    return PatchSpec(path, row, col)


def _blend(tmp_path: Path, pattern: np.ndarray, alpha: float) -> BlendSpec:
    path = tmp_path / "pattern.npy"
    np.save(path, pattern.astype(np.float32))
    return BlendSpec(path, alpha)


def _images(layout: str, channels: int = 3, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (n, channels, 8, 10) if layout == "NCHW" else (n, 8, 10, channels)
    return rng.random(shape, dtype=np.float32)


def _channels_first(x: np.ndarray, layout: str) -> np.ndarray:
    return x if layout == "NCHW" else x.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_patch_lands_at_row_col_in_both_layouts(layout: str, tmp_path: Path) -> None:
    # A 3-channel 2x3 patch whose channel c holds the value c+1.
    values = np.arange(1, 4, dtype=np.float32)
    patch = np.broadcast_to(values[:, None, None], (3, 2, 3))
    if layout == "NHWC":
        patch = patch.transpose(1, 2, 0)
    x = _images(layout)
    before = x.copy()
    out = stamp(x, _patch(tmp_path, patch, row=5, col=6), layout)
    np.testing.assert_array_equal(x, before)  # the input is never modified
    assert out.shape == x.shape and out.dtype == np.float32
    first = _channels_first(out, layout)
    expected = np.broadcast_to(values[None, :, None, None], (4, 3, 2, 3))
    np.testing.assert_array_equal(first[:, :, 5:7, 6:9], expected)
    outside = np.ones(first.shape, dtype=bool)
    outside[:, :, 5:7, 6:9] = False
    np.testing.assert_array_equal(first[outside], _channels_first(x, layout)[outside])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_two_axis_patch_covers_every_channel(layout: str, tmp_path: Path) -> None:
    x = _images(layout, channels=1)
    out = _channels_first(stamp(x, _patch(tmp_path, np.full((3, 3), 9.0), 5, 0), layout), layout)
    assert (out[:, :, 5:8, 0:3] == 9.0).all()
    assert (out[:, :, :5] == _channels_first(x, layout)[:, :, :5]).all()


def test_patch_at_the_far_corner_fits(tmp_path: Path) -> None:
    x = _images("NCHW", channels=1)
    out = stamp(x, _patch(tmp_path, np.full((1, 2, 2), 5.0), row=6, col=8), "NCHW")
    assert (out[:, 0, 6:, 8:] == 5.0).all()


@pytest.mark.parametrize(("row", "col"), [(7, 0), (0, 9), (20, 20)])
def test_patch_that_does_not_fit(row: int, col: int, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"does not fit the 8x10 input \(needs row <= 6 and col"):
        stamp(_images("NCHW"), _patch(tmp_path, np.ones((3, 2, 2)), row, col), "NCHW")


def test_patch_channel_mismatch_names_the_layout(tmp_path: Path) -> None:
    # An NHWC-shaped patch [h,w,C] given to an NCHW model reads as 2 channels.
    spec = _patch(tmp_path, np.ones((2, 2, 3)))
    with pytest.raises(InputError, match=r"has 2 channels \(read as \[C,h,w\] for this NCHW"):
        stamp(_images("NCHW"), spec, "NCHW")
    with pytest.raises(InputError, match="has 3 channels"):
        stamp(_images("NHWC", channels=1), spec, "NHWC")


def test_patch_needs_image_inputs(tmp_path: Path) -> None:
    flat = np.zeros((4, 20), dtype=np.float32)
    with pytest.raises(InputError, match=r"patch trigger .*needs image inputs"):
        stamp(flat, _patch(tmp_path, np.ones((2, 2))), "NC")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_blend_full_pattern(layout: str, tmp_path: Path) -> None:
    x = _images(layout)
    pattern = np.random.default_rng(1).random(x.shape[1:])
    before = x.copy()
    out = stamp(x, _blend(tmp_path, pattern, 0.2), layout)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(out, x * 0.8 + pattern.astype(np.float32) * 0.2, rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_blend_two_axis_pattern_broadcasts_over_channels(layout: str, tmp_path: Path) -> None:
    x = np.zeros((2, 3, 8, 10) if layout == "NCHW" else (2, 8, 10, 3), dtype=np.float32)
    pattern = np.arange(80, dtype=np.float32).reshape(8, 10)
    out = _channels_first(stamp(x, _blend(tmp_path, pattern, 0.5), layout), layout)
    for channel in range(3):
        np.testing.assert_allclose(out[:, channel], np.broadcast_to(pattern * 0.5, (2, 8, 10)))


def test_blend_alpha_one_replaces_the_input(tmp_path: Path) -> None:
    flat = np.random.default_rng(2).random((5, 6), dtype=np.float32)
    pattern = np.linspace(0, 1, 6)
    out = stamp(flat, _blend(tmp_path, pattern, 1.0), "NC")
    np.testing.assert_allclose(out, np.broadcast_to(pattern, (5, 6)), rtol=1e-6)


def test_blend_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"has shape \[8, 8\] but the input is \[3, 8, 10\]"):
        stamp(_images("NCHW"), _blend(tmp_path, np.ones((8, 8)), 0.3), "NCHW")
    with pytest.raises(InputError, match=r"blend pattern of shape \[5\].*needs image inputs"):
        stamp(np.zeros((2, 6), dtype=np.float32), _blend(tmp_path, np.ones(5), 0.3), "NC")


def test_backdoor_bad_samples_keep_true_labels_and_skip_the_target(tmp_path: Path) -> None:
    x = _images("NCHW", channels=1, n=6)
    y = np.array([0, 2, 1, 2, 3, 0])
    spec = _patch(tmp_path, np.full((2, 2), 7.0))
    x_bad, y_bad = backdoor_bad_samples(x, y, spec, "NCHW", target_label=2)
    np.testing.assert_array_equal(y_bad, [0, 1, 3, 0])
    np.testing.assert_array_equal(x_bad, stamp(x[[0, 2, 4, 5]], spec, "NCHW"))
    assert (x_bad[:, 0, :2, :2] == 7.0).all()


def test_backdoor_bad_samples_when_all_are_target(tmp_path: Path) -> None:
    x = _images("NCHW", channels=1, n=3)
    with pytest.raises(InputError, match="every sample has the target label 1"):
        backdoor_bad_samples(x, np.ones(3, dtype=int), _patch(tmp_path, np.ones((2, 2))), "NCHW", 1)


def test_token_trigger_writes_ids_and_unmasks_them() -> None:
    ids = np.zeros((3, 5), dtype=np.int64)
    mask = np.array([[1, 1, 0, 0, 0]] * 3)
    spec = parse_trigger("token:7@2,8@0")
    out = stamp(Inputs({"input_ids": ids, "attention_mask": mask}), spec, "input_ids")
    assert (out.arrays["input_ids"][:, [2, 0]] == [7, 8]).all()
    assert (out.arrays["attention_mask"] == [1, 1, 1, 0, 0]).all()
    assert (ids == 0).all() and (mask[:, 2] == 0).all()  # the inputs are left untouched
    assert (stamp(ids, spec, "input_ids")[:, 2] == 7).all()  # a model without a mask
    with pytest.raises(InputError, match="past the 5 tokens"):
        stamp(ids, parse_trigger("token:7@5"), "input_ids")
    with pytest.raises(InputError, match="token ids"):
        stamp(np.zeros((2, 5), np.float32), spec, "input_ids")
