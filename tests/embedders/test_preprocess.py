"""Tensor preprocessing against open_clip's own PIL transform.

Tolerance, measured: PIL rounds to uint8 after each resampling pass, the tensor path does not,
so the two differ by up to about one uint8 step (1/255 before normalisation; mean difference
about 0.3 step). The bound checked is 1.5 steps (divided by the smallest std, after
normalisation). Where input and output sizes match, the paths agree to float round-off.

Both paths resample width first, then height, and clip cubic overshoot in between, as Pillow's
C source does. Pillow 13 runs the height pass first for some size pairs whose axes are scaled
by different factors; the clipping then moves and isolated pixels differ by a few steps (at
most 5.3 measured, over generator-like images), the mean by no more than elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diversity_callbacks.embedders.preprocess import TensorPreprocess, resize_weights
from tests.helpers.embedders import generator_like

open_clip_transform = pytest.importorskip("open_clip.transform")


def pil_reference(pixels: torch.Tensor, cfg: dict) -> torch.Tensor:
    transform = open_clip_transform.image_transform_v2(
        open_clip_transform.PreprocessCfg(**cfg), is_train=False
    )
    images = [Image.fromarray(np.ascontiguousarray(p.permute(1, 2, 0).numpy())) for p in pixels]
    return torch.stack([transform(image) for image in images])


def step_bound(cfg: dict, steps: float) -> float:
    std = cfg.get("std", open_clip_transform.PreprocessCfg().std)
    return steps / 255 / min(std)


@pytest.mark.parametrize(
    ("cfg", "size"),
    [
        ({"size": 32}, (64, 64)),  # shrink 2x, bicubic
        ({"size": 32}, (256, 256)),  # shrink 8x
        ({"size": 32}, (20, 20)),  # enlarge
        ({"size": 32}, (48, 72)),  # shorter side to 32, then center crop of the width
        ({"size": 32}, (75, 50)),  # ... of the height
        ({"size": 32, "interpolation": "bilinear"}, (64, 64)),
        ({"size": 32, "resize_mode": "squash"}, (40, 40)),
        ({"size": 32, "resize_mode": "longest", "fill_color": 128}, (40, 60)),  # pad rows
        ({"size": 32, "resize_mode": "longest"}, (60, 30)),  # pad columns
        # non-square model input: open_clip resamples bicubically whatever the config says
        ({"size": (32, 24), "interpolation": "bilinear"}, (64, 64)),
        ({"size": (24, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}, (50, 70)),
        # long axes resample with torch's interpolate instead of a matmul
        ({"size": 96}, (128, 128)),
        ({"size": 96, "interpolation": "bilinear"}, (150, 120)),
    ],
)
def test_matches_open_clip_pil_transform_within_one_uint8_step(cfg, size) -> None:
    pixels = generator_like(3, *size)
    expected = pil_reference(pixels, cfg)
    preprocess = TensorPreprocess.from_cfg(open_clip_transform.PreprocessCfg(**cfg).__dict__)
    got = preprocess(pixels, "uint8")
    assert got.shape == expected.shape and got.dtype == torch.float32
    difference = (got - expected).abs()
    assert difference.max() <= step_bound(cfg, 1.5)
    assert difference.mean() <= step_bound(cfg, 0.5)
    # the value range is folded into the same affine map: [-1, 1] input gives the same result
    signed = pixels.double() / 127.5 - 1
    torch.testing.assert_close(preprocess(signed, "[-1,1]"), got, atol=1e-5, rtol=0)


def test_both_resampling_paths_are_covered_above() -> None:
    """Short axes resample by matmul, long ones by interpolate (see _DENSE_MAX_RATIO)."""
    plans = TensorPreprocess(size=32, mean=(0.5,) * 3, std=(0.5,) * 3)._plans_for(
        256, 256, torch.device("cpu")
    )
    assert all(plan.weights is not None for plan in plans)
    plans = TensorPreprocess(size=96, mean=(0.5,) * 3, std=(0.5,) * 3)._plans_for(
        128, 150, torch.device("cpu")
    )
    assert all(plan.weights is None and plan.resized != plan.in_size for plan in plans)


@pytest.mark.parametrize(
    ("cfg", "size"),
    [
        ({"size": 32, "resize_mode": "squash"}, (48, 24)),
        ({"size": 32, "resize_mode": "longest"}, (63, 21)),
    ],
)
def test_axes_scaled_differently_differ_at_isolated_pixels_only(cfg, size) -> None:
    pixels = generator_like(3, *size)
    expected = pil_reference(pixels, cfg)
    got = TensorPreprocess.from_cfg(open_clip_transform.PreprocessCfg(**cfg).__dict__)(
        pixels, "uint8"
    )
    difference = (got - expected).abs()
    assert difference.max() <= step_bound(cfg, 8)
    assert difference.flatten().quantile(0.999) <= step_bound(cfg, 3)
    assert difference.mean() <= step_bound(cfg, 0.5)


@pytest.mark.parametrize("size", [(32, 32), (32, 40)])
def test_no_resampling_when_the_short_side_already_fits(size) -> None:
    cfg = {"size": 32}
    pixels = generator_like(2, *size)
    got = TensorPreprocess.from_cfg(cfg | {"mean": (0.4,) * 3, "std": (0.3,) * 3})(pixels, "uint8")
    expected = pil_reference(pixels, cfg | {"mean": (0.4,) * 3, "std": (0.3,) * 3})
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("mode", "n_in", "n_out"), [("bicubic", 64, 24), ("bilinear", 37, 80)])
def test_resize_weights_equal_torch_antialiased_interpolation(mode, n_in, n_out) -> None:
    """torch's antialiased kernels were written to match PIL: same weights, in float."""
    signal = torch.randn(1, 1, 3, n_in, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(
        signal, size=(3, n_out), mode=mode, antialias=True, align_corners=False
    )
    torch.testing.assert_close(signal @ resize_weights(n_in, n_out, mode).T, expected)


def test_preprocess_runs_on_the_input_device_dtype_float32() -> None:
    preprocess = TensorPreprocess(size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    half = torch.rand(2, 3, 40, 30).half()
    out = preprocess(half, "[0,1]")
    assert out.dtype == torch.float32 and out.device == half.device and out.shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interpolation": "nearest"}, "interpolation must be one of"),
        ({"resize_mode": "fit"}, "resize_mode"),
    ],
)
def test_rejects_unknown_modes(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TensorPreprocess(size=16, mean=(0.5,) * 3, std=(0.5,) * 3, **kwargs)


def test_transparent_files_match_open_clip_pil_transform(tmp_path) -> None:
    """RGBA with a hidden colour under transparent pixels: the decoded file (composited on
    black) through the tensor path agrees with open_clip's transform of the PIL RGBA image
    (which resizes premultiplied, so transparent pixels come out black); dropping alpha kept
    the hidden colour."""
    from diversity_callbacks.images import decode_image_file

    cfg = {"size": 32}
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = generator_like(1, 64, 64)[0].permute(1, 2, 0).numpy()
    rgba[:, :32, 3] = 255  # left half opaque, right half transparent over the hidden colour
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    transform = open_clip_transform.image_transform_v2(
        open_clip_transform.PreprocessCfg(**cfg), is_train=False
    )
    expected = transform(Image.open(path))[None]
    preprocess = TensorPreprocess.from_cfg(open_clip_transform.PreprocessCfg(**cfg).__dict__)
    got = preprocess(decode_image_file(str(path))[None], "uint8")
    interior = (got - expected).abs()[..., :, list(range(14)) + list(range(18, 32))]
    # within one step away from the edge, where open_clip un-premultiplies the blend
    assert interior.max() <= step_bound(cfg, 1.5)
