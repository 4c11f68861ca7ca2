"""Value ranges of generator outputs: validation, conversion to ``[0, 1]``, uint8 and grids.

Generators emit batches of images in one of three conventions. This module is the one place
that knows them; everything downstream (embedders, sample grids) works on floats in ``[0, 1]``.

=============  ==================  =================================================
value_range    dtype               typical source
=============  ==================  =================================================
``"[-1,1]"``   floating            diffusion decoders, GANs with a ``tanh`` output
``"[0,1]"``    floating            VAEs with a ``sigmoid`` output, ``ToTensor`` data
``"uint8"``    ``torch.uint8``     decoded files, ``[0, 255]`` pixel values
=============  ==================  =================================================
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

ValueRange = Literal["[-1,1]", "[0,1]", "uint8"]

_BOUNDS: dict[str, tuple[float, float]] = {
    "[-1,1]": (-1.0, 1.0),
    "[0,1]": (0.0, 1.0),
    "uint8": (0.0, 255.0),
}


def value_range_bounds(value_range: ValueRange) -> tuple[float, float]:
    """Return the lowest and highest pixel value of a value range.

    Args:
        value_range: ``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"``.

    Returns:
        ``(low, high)``; ``(0.0, 255.0)`` for ``"uint8"``.

    Examples:
        >>> value_range_bounds("[-1,1]")
        (-1.0, 1.0)
    """
    if value_range not in _BOUNDS:
        raise ValueError(
            f"value_range must be one of {list(get_args(ValueRange))}, got {value_range!r}"
        )
    return _BOUNDS[value_range]


def check_images(
    images: Tensor, value_range: ValueRange, *, name: str = "images", tolerance: float = 1e-3
) -> None:
    """Check that ``images`` is a ``(B, 3, H, W)`` batch in the declared value range.

    Args:
        images: batch of images, on any device.
        value_range: the range the values are declared to lie in (see the module table).
        name: how the images are called in error messages (an argument name, say).
        tolerance: how far values may lie outside the declared range, in the range's own units,
            to allow for round-off in the generator (ignored for ``"uint8"``).

    Raises:
        TypeError: if ``images`` is not a tensor or its dtype does not fit ``value_range``.
        ValueError: if the shape is not ``(B, 3, H, W)``, a value is NaN or infinite, or a value
            lies outside the range by more than ``tolerance``.

    Examples:
        >>> check_images(torch.zeros(2, 3, 8, 8), "[0,1]")
        >>> check_images(torch.zeros(2, 3, 8, 8) - 1, "[0,1]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: images must lie in [0, 1] (...), got min -1, max -1; ...value_range='[-1,1]'
    """
    _checked_extrema(images, value_range, name, tolerance)


def _checked_extrema(
    images: Tensor, value_range: ValueRange, name: str, tolerance: float
) -> tuple[float, float] | None:
    """Validate like :func:`check_images`; return the float batch's (min, max), else None."""
    low, high = value_range_bounds(value_range)
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        hint = ""
        if images.ndim == 4 and images.shape[1] == 4:  # the package's one transparency rule
            hint = "; composite RGBA uint8 images with composite_on_black(images) first"
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}{hint}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if value_range == "uint8":
        if images.dtype != torch.uint8:
            raise TypeError(
                f"{name} with value_range='uint8' must be torch.uint8, got {images.dtype}"
            )
        return None
    if not images.is_floating_point():
        raise TypeError(
            f"{name} with value_range={value_range!r} must be a floating dtype, got {images.dtype}"
            + (
                "; use value_range='uint8' for [0, 255] pixels"
                if images.dtype == torch.uint8
                else ""
            )
        )
    if images.numel() == 0:
        return None
    # One pass and one device sync: NaN propagates into both, +-inf shows up in one of them.
    low_seen, high_seen = torch.stack(torch.aminmax(images)).tolist()
    if not (math.isfinite(low_seen) and math.isfinite(high_seen)):
        n_nan = int(torch.isnan(images).sum())
        n_inf = int(torch.isinf(images).sum())
        raise ValueError(f"{name} must be finite, got {n_nan} NaN and {n_inf} infinite values")
    if low_seen < low - tolerance or high_seen > high + tolerance:
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}] (value_range={value_range!r}, tolerance "
            f"{tolerance:g}), got min {low_seen:.4g}, max {high_seen:.4g}"
            + _range_hint(low_seen, high_seen)
        )
    return low_seen, high_seen


def _range_hint(low_seen: float, high_seen: float) -> str:
    """Name the value range the observed extrema most likely come from."""
    if low_seen < -0.01:
        return f"; values down to {low_seen:.4g} suggest value_range='[-1,1]'"
    if high_seen > 1.01:
        return f"; values up to {high_seen:.4g} suggest uint8 pixels (value_range='uint8')"
    return ""


def to_unit_range(
    images: Tensor, value_range: ValueRange, *, name: str = "images", tolerance: float = 1e-3
) -> Tensor:
    """Validate a batch of images and map it to floats in ``[0, 1]``.

    Args:
        images: ``(B, 3, H, W)`` batch on any device; dtype ``torch.uint8`` for ``"uint8"``,
            floating otherwise.
        value_range: the range the values are declared to lie in (see the module table).
        name: how the images are called in error messages.
        tolerance: how far values may lie outside the declared range, in its own units; such
            values are clamped.

    Returns:
        The images in ``[0, 1]`` on the same device, float32 (float64 stays float64; float16 and
        bfloat16 are widened). Float32 input already in ``[0, 1]`` is returned as is, not copied.

    Raises:
        TypeError, ValueError: as :func:`check_images`.

    Examples:
        >>> to_unit_range(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1), "[-1,1]").flatten()
        tensor([0.0000, 0.5000, 1.0000])
        >>> to_unit_range(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), "uint8").flatten()
        tensor([1., 1., 1.])
    """
    extrema = _checked_extrema(images, value_range, name, tolerance)
    low, high = value_range_bounds(value_range)
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    unit = images.to(dtype)
    if value_range == "uint8":
        return unit.div_(255)  # torchvision's ToTensor divides the same way
    if low != 0.0 or high != 1.0:
        unit = unit.sub(low).div_(high - low)
    if extrema is None or (extrema[0] >= low and extrema[1] <= high):
        return unit
    return unit.clamp(0.0, 1.0)  # only values within the tolerance get here


def to_uint8(images: Tensor) -> Tensor:
    """Convert floats in ``[0, 1]`` to ``torch.uint8`` pixels, rounding to the nearest value.

    Args:
        images: floating tensor of any shape with values in ``[0, 1]`` (slight excursions are
            clamped).

    Returns:
        A uint8 tensor of the same shape and device.

    Examples:
        >>> to_uint8(torch.tensor([0.0, 0.499 / 255, 0.501 / 255, 1.0]))
        tensor([  0,   0,   1, 255], dtype=torch.uint8)
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"images must be a floating tensor with values in [0, 1], got {kind}")
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def make_grid(images: Tensor, nrow: int, *, padding: int = 2, pad_value: int = 0) -> Tensor:
    """Tile a batch of images into one uint8 image for logging.

    Args:
        images: ``(B, 3, H, W)`` batch, either uint8 pixels or floats in ``[0, 1]``.
        nrow: number of images per grid row (the last row may be shorter).
        padding: pixels between images and around the grid.
        pad_value: the uint8 value of the padding and of the blank tiles that fill the last
            row, as torchvision's ``pad_value``: black (0) by default; the media grids use a
            mid grey (:data:`~diversity_callbacks.media.picture.PAD_VALUE`) so that tiles on a
            black or white background stay apart.

    Returns:
        A ``(3, H', W')`` uint8 tensor on the device of ``images``, with
        ``H' = rows * (H + padding) + padding`` and ``W' = nrow' * (W + padding) + padding``,
        where ``nrow' = min(nrow, B)``.

    Examples:
        >>> make_grid(torch.ones(5, 3, 4, 4), nrow=2).shape
        torch.Size([3, 20, 14])
    """
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    if isinstance(pad_value, bool) or not isinstance(pad_value, int) or not 0 <= pad_value <= 255:
        raise ValueError(f"pad_value must be an int in [0, 255], got {pad_value!r}")
    if isinstance(images, Tensor) and images.dtype == torch.uint8:
        check_images(images, "uint8")
        pixels = images
    else:
        pixels = to_uint8(to_unit_range(images, "[0,1]"))
    if pixels.shape[0] == 0:
        raise ValueError("images must contain at least one image to make a grid, got 0")
    b, c, h, w = pixels.shape
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    # Blank images fill the last row; each tile carries its top and left padding, and the
    # bottom and right border is added once at the end.
    tiles = pixels.new_full((rows * cols, c, h + padding, w + padding), pad_value)
    tiles[:b, :, padding:, padding:] = pixels
    grid = tiles.view(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)
    grid = grid.reshape(c, rows * (h + padding), cols * (w + padding))
    return torch.nn.functional.pad(grid, (0, padding, 0, padding), value=pad_value)


def composite_on_black(rgba: Tensor) -> Tensor:
    """Composite uint8 RGBA pixels on a black background: ``rgb * alpha / 255``, rounded.

    This is the package's one rule for transparency, for files (:func:`decode_image_file`) and
    for tensors alike: a transparent pixel is black, whatever colour it hides. open_clip's PIL
    transform gives the same black there (Pillow resizes RGBA premultiplied), so the embeddings
    of a transparent image do not depend on pixels no viewer shows.

    Args:
        rgba: uint8 tensor with 4 channels in dimension -3: ``(4, H, W)`` or ``(B, 4, H, W)``.

    Returns:
        uint8 RGB pixels, ``(3, H, W)`` or ``(B, 3, H, W)``.

    Examples:
        >>> pixel = torch.tensor([200, 100, 50, 0], dtype=torch.uint8).view(4, 1, 1)
        >>> composite_on_black(pixel).flatten()
        tensor([0, 0, 0], dtype=torch.uint8)
    """
    if not isinstance(rgba, Tensor) or rgba.dtype != torch.uint8 or rgba.ndim < 3:
        got = f"{rgba.dtype} of shape {tuple(rgba.shape)}" if isinstance(rgba, Tensor) else rgba
        raise TypeError(f"rgba must be a uint8 (..., 4, H, W) tensor, got {got}")
    if rgba.shape[-3] != 4:
        raise ValueError(
            f"rgba must have 4 channels in dimension -3, got shape {tuple(rgba.shape)}"
        )
    rgb, alpha = rgba.narrow(-3, 0, 3).float(), rgba.narrow(-3, 3, 1).float()
    return rgb.mul_(alpha).div_(255).round_().to(torch.uint8)


def decode_image_file(path: str) -> Tensor:
    """uint8 ``(3, H, W)`` RGB pixels of an image file, as a viewer shows it.

    - EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a photo stored sideways with
      Orientation = 6 comes out upright;
    - 16-bit greyscale (Pillow modes ``I;16*`` and ``I``, as 16-bit PNGs open) is scaled to 8
      bits (``value >> 8``), not clipped to white;
    - transparency (RGBA, LA, palette with transparency) is composited on black
      (:func:`composite_on_black`);
    - an animated image (GIF, WebP, APNG) gives its first frame.

    Raises:
        OSError, ValueError: as Pillow raises them for a file it cannot decode.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        # In place, no copy: loaded (frame 0 of an animation) and turned upright.
        ImageOps.exif_transpose(opened, in_place=True)
        image = opened
        if image.mode.startswith("I"):  # 16-bit grey ("I;16", "I;16B", "I" from PNG)
            import numpy as np

            grey = np.asarray(image).astype(np.int64) >> 8
            image = Image.fromarray(grey.clip(0, 255).astype(np.uint8), mode="L")
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            pixels = torch.frombuffer(bytearray(rgba.tobytes()), dtype=torch.uint8)
            return composite_on_black(pixels.view(rgba.height, rgba.width, 4).permute(2, 0, 1))
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1)
