"""Value ranges of generator outputs: validation, conversion, uint8 and grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diversity_callbacks.images import (
    check_images,
    make_grid,
    to_uint8,
    to_unit_range,
    value_range_bounds,
)


def test_to_unit_range_maps_each_range_onto_zero_one() -> None:
    pixels = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    expected = pixels.float() / 255
    torch.testing.assert_close(to_unit_range(pixels, "uint8"), expected, rtol=0, atol=0)
    torch.testing.assert_close(to_unit_range(expected * 2 - 1, "[-1,1]"), expected)
    assert to_unit_range(expected, "[0,1]") is expected  # nothing to do, nothing copied


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_to_unit_range_widens_low_precision_and_keeps_float64(dtype, expected) -> None:
    images = torch.rand(1, 3, 2, 2).to(dtype) * 2 - 1
    assert to_unit_range(images, "[-1,1]").dtype == expected


def test_to_unit_range_clamps_round_off_within_the_tolerance_only() -> None:
    images = torch.rand(1, 3, 4, 4)
    images[0, 0, 0, :2] = torch.tensor([-5e-4, 1 + 5e-4])
    unit = to_unit_range(images, "[0,1]")
    assert unit.min() == 0 and unit.max() == 1
    assert images.min() < 0  # the caller's tensor is left alone
    with pytest.raises(ValueError, match=r"tolerance 0\.0001"):
        to_unit_range(images, "[0,1]", tolerance=1e-4)


@pytest.mark.parametrize(
    ("images", "value_range", "error", "match"),
    [
        ([[0.0]], "[0,1]", TypeError, "samples must be a torch.Tensor, got list"),
        (
            torch.rand(3, 8, 8),
            "[0,1]",
            ValueError,
            r"samples must have shape \(B, 3, H, W\), got \(3, 8, 8\)",
        ),
        (torch.rand(2, 1, 8, 8), "[0,1]", ValueError, r"got \(2, 1, 8, 8\)"),
        (torch.rand(2, 3, 8, 8), "uint8", TypeError, "must be torch.uint8, got torch.float32"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "[0,1]", TypeError, "use value_range='uint8'"),
        (torch.rand(2, 3, 8, 8), "0-255", ValueError, r"value_range must be one of .*'0-255'"),
        (torch.rand(2, 3, 8, 8) * 2 - 1, "[0,1]", ValueError, "suggest value_range='\\[-1,1\\]'"),
        (torch.rand(2, 3, 8, 8) * 255, "[0,1]", ValueError, "suggest uint8 pixels"),
        (
            torch.rand(2, 3, 8, 8) * 3,
            "[-1,1]",
            ValueError,
            r"samples must lie in \[-1, 1\].*got min",
        ),
    ],
)
def test_check_images_errors_name_expected_and_actual(images, value_range, error, match) -> None:
    with pytest.raises(error, match=match):
        check_images(images, value_range, name="samples")


def test_check_images_counts_nan_and_inf() -> None:
    images = torch.rand(2, 3, 4, 4)
    images[0, 0, 0, 0] = float("nan")
    images[1, 2, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="must be finite, got 1 NaN and 1 infinite values"):
        check_images(images, "[0,1]")


def test_empty_batch_is_valid_and_converted() -> None:
    empty = torch.empty(0, 3, 8, 8, dtype=torch.uint8)
    assert to_unit_range(empty, "uint8").shape == (0, 3, 8, 8)


def test_value_range_bounds() -> None:
    assert value_range_bounds("uint8") == (0.0, 255.0)
    assert value_range_bounds("[-1,1]") == (-1.0, 1.0)


def test_to_uint8_rounds_to_nearest_and_round_trips() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(to_uint8(pixels.float() / 255), pixels)
    values = torch.tensor([0.4, 0.6, 254.4, 254.6]) / 255
    assert to_uint8(values).tolist() == [0, 1, 254, 255]
    with pytest.raises(TypeError, match="floating tensor"):
        to_uint8(pixels)


def test_make_grid_places_images_in_rows_with_padding() -> None:
    images = torch.arange(1, 6, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 3, 2, 3)
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (3, 3 * 3 + 1, 2 * 4 + 1) and grid.dtype == torch.uint8
    # tile (row, col) starts at (1 + 3 * row, 1 + 4 * col); image i sits at divmod(i, 2)
    for i in range(5):
        row, col = divmod(i, 2)
        tile = grid[:, 1 + 3 * row : 3 + 3 * row, 1 + 4 * col : 4 + 4 * col]
        assert torch.all(tile == i + 1)
    assert grid.sum() == sum((i + 1) * 3 * 2 * 3 for i in range(5))  # padding and gap are 0


def test_make_grid_pads_and_fills_the_last_row_with_pad_value() -> None:
    images = torch.zeros(3, 3, 2, 2, dtype=torch.uint8)
    grid = make_grid(images, nrow=2, padding=1, pad_value=200)
    assert grid.shape == (3, 2 * 3 + 1, 2 * 3 + 1)
    tiles = torch.zeros_like(grid, dtype=torch.bool)
    for row, col in [(0, 0), (0, 1), (1, 0)]:
        tiles[:, 1 + 3 * row : 3 + 3 * row, 1 + 3 * col : 3 + 3 * col] = True
    assert grid[tiles].eq(0).all() and grid[~tiles].eq(200).all()  # padding, and the blank tile


def test_make_grid_takes_unit_floats_like_uint8() -> None:
    pixels = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(make_grid(pixels.float() / 255, nrow=8), make_grid(pixels, nrow=8))
    assert make_grid(pixels, nrow=8).shape == (3, 4 + 4, 3 * 6 + 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nrow": 0}, "nrow"),
        ({"nrow": 2, "padding": -1}, "padding"),
        ({"nrow": 2, "pad_value": 256}, r"pad_value must be an int in \[0, 255\], got 256"),
        ({"nrow": 2, "pad_value": 0.5}, "pad_value"),
    ],
)
def test_make_grid_rejects_bad_layout(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_grid(torch.rand(2, 3, 4, 4), **kwargs)


# ------------------------------------------------------------------ decoding files


def test_16_bit_grey_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path) -> None:
    from PIL import Image

    from diversity_callbacks.images import decode_image_file

    decoded = []
    for level in (1000, 20000, 40000, 65535):
        path = tmp_path / f"{level}.png"
        Image.fromarray(np.full((4, 4), level, dtype=np.uint16)).save(path)
        assert Image.open(path).mode.startswith("I")
        decoded.append(int(decode_image_file(str(path))[0, 0, 0]))
    assert decoded == [level >> 8 for level in (1000, 20000, 40000, 65535)]


def test_exif_orientation_is_applied(tmp_path) -> None:
    from PIL import Image

    from diversity_callbacks.images import decode_image_file

    stored = np.zeros((2, 6, 3), dtype=np.uint8)  # 2 rows, 6 columns, stored sideways
    stored[:, :3] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.png"
    Image.fromarray(stored).save(path, exif=exif)
    assert tuple(decode_image_file(str(path)).shape) == (3, 6, 2)  # upright: 6 rows, 2 columns


def test_transparent_pixels_are_black_in_files_and_tensors(tmp_path) -> None:
    from PIL import Image

    from diversity_callbacks.images import composite_on_black, decode_image_file

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)  # hidden colour
    rgba[:2, :, 3] = 255  # top half opaque, bottom transparent
    rgba[0, 0, 3] = 128  # half transparent: half the colour
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    decoded = decode_image_file(str(path))
    assert decoded[:, 2:].eq(0).all()  # transparent: black, not the hidden colour
    assert decoded[:, 1, 0].tolist() == [200, 100, 50]
    assert decoded[:, 0, 0].tolist() == [100, 50, 25]
    tensor = torch.from_numpy(rgba).permute(2, 0, 1)
    assert torch.equal(composite_on_black(tensor[None])[0], decoded)  # one rule for both


def test_animated_image_gives_its_first_frame(tmp_path) -> None:
    from PIL import Image

    from diversity_callbacks.images import decode_image_file

    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "animated.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    assert decode_image_file(str(path))[:, 0, 0].tolist() == [255, 0, 0]


def test_composite_on_black_refuses_other_shapes() -> None:
    from diversity_callbacks.images import composite_on_black

    with pytest.raises(ValueError, match="4 channels"):
        composite_on_black(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        composite_on_black(torch.zeros(4, 2, 2))


def test_an_rgba_batch_is_refused_pointing_at_the_transparency_rule() -> None:
    with pytest.raises(ValueError, match="composite_on_black"):
        check_images(torch.zeros(1, 4, 2, 2, dtype=torch.uint8), "uint8")
