"""open_clip's evaluation transform, reproduced on batched tensors on any device.

open_clip preprocesses one PIL image at a time: resize (antialiased, PIL's kernels), center crop
or pad, ``ToTensor``, normalise. Here the same steps run on a whole ``(B, 3, H, W)`` batch where
it already lives. Resampling is linear and separable: along a short axis it is one matmul with
a small matrix of PIL's filter weights, with the crop folded in by keeping only the rows that
survive it; along a long one, torch's antialiased interpolation, which uses the same weights as
a direct filter. The value-range conversion, ``ToTensor`` and normalisation fold into one
per-channel affine map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diversity_callbacks.images import ValueRange, value_range_bounds


def _bicubic(x: Tensor) -> Tensor:
    """PIL's cubic convolution kernel (Keys, a = -0.5; torch's non-antialiased one uses -0.75)."""
    a = -0.5
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _bilinear(x: Tensor) -> Tensor:
    """PIL's triangle kernel."""
    return (1.0 - x.abs()).clamp(min=0.0)


# kernel and its support radius in input pixels at scale 1
_KERNELS: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {
    "bicubic": (_bicubic, 2.0),
    "bilinear": (_bilinear, 1.0),
}


def resize_weights(in_size: int, out_size: int, interpolation: str) -> Tensor:
    """Weights of PIL's resampling along one axis as a dense ``(out_size, in_size)`` matrix.

    As PIL (and ``torch.nn.functional.interpolate(..., antialias=True)``): output pixel ``i`` is
    centred at ``(i + 0.5) * in_size / out_size`` in input coordinates; when shrinking, the
    kernel is stretched by the scale factor (that is the antialiasing); taps that fall outside
    the image are dropped and each row is renormalised to sum to one.

    Examples:
        >>> resize_weights(4, 2, "bilinear")
        tensor([[0.4286, 0.4286, 0.1429, 0.0000],
                [0.0000, 0.1429, 0.4286, 0.4286]], dtype=torch.float64)
    """
    kernel, _ = _KERNELS[interpolation]
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    centers = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    pixels = torch.arange(in_size, dtype=torch.float64) + 0.5
    weights = kernel((pixels[None, :] - centers[:, None]) / stretch)
    return weights / weights.sum(dim=1, keepdim=True)


# A dense matmul does in_size / taps times the arithmetic of a direct filter, but BLAS runs it
# so much faster per operation than torch's antialiased interpolate on CPU that it wins on short
# axes and loses on long ones (timings: docs/performance.md, "Implementation choices"). Below
# this ratio: matmul.
_DENSE_MAX_RATIO = 16


@dataclass(frozen=True)
class _AxisPlan:
    """What happens along one axis: resample, crop, pad.

    ``weights`` is set when resampling runs as a matmul with the crop folded in (only the kept
    output rows), ``None`` when it runs as torch's antialiased interpolation (same kernel,
    direct filter) followed by the crop, or when the axis keeps its size.
    """

    in_size: int
    resized: int
    weights: Tensor | None  # (crop_size, in_size) float32 on the target device
    crop_start: int
    crop_size: int
    pad_before: int
    pad_after: int


def _axis_plan(
    in_size: int, resized: int, target: int, interpolation: str, device: torch.device
) -> _AxisPlan:
    # Center crop and pad exactly as torchvision's center_crop / open_clip's CenterCropOrPad.
    crop_start = round((resized - target) / 2.0) if resized > target else 0
    crop_size = min(resized, target)
    pad_before = (target - resized) // 2 if resized < target else 0
    pad_after = target - crop_size - pad_before
    weights = None
    if resized != in_size:  # PIL skips an axis whose size does not change
        full = resize_weights(in_size, resized, interpolation)
        taps = int((full != 0).sum(dim=1).max())
        if in_size <= _DENSE_MAX_RATIO * taps:
            weights = full[crop_start : crop_start + crop_size].to(device, torch.float32)
    return _AxisPlan(in_size, resized, weights, crop_start, crop_size, pad_before, pad_after)


def _resample(x: Tensor, dim: int, plan: _AxisPlan, interpolation: str) -> Tensor:
    """Resample and crop ``x`` along ``dim`` (-1: width, -2: height)."""
    if plan.weights is not None:
        if dim == -1:  # one GEMM over all rows of all images and channels
            flat = x.reshape(-1, x.shape[-1]) @ plan.weights.T
            return flat.view(*x.shape[:-1], plan.crop_size)
        return torch.matmul(plan.weights, x)
    if plan.resized != plan.in_size:
        size = [x.shape[-2], x.shape[-1]]
        size[dim] = plan.resized
        x = F.interpolate(x, size=size, mode=interpolation, antialias=True, align_corners=False)
    return x.narrow(dim, plan.crop_start, plan.crop_size)


class TensorPreprocess:
    """open_clip's evaluation transform for ``(B, 3, H, W)`` batches, on their own device.

    Matches ``open_clip.image_transform_v2(PreprocessCfg(**cfg), is_train=False)`` applied to
    the uint8 PIL version of each image, up to PIL's uint8 rounding of intermediate results
    (measured in ``tests/embedders/test_preprocess.py``).

    Args:
        size: model input size, an int or ``(height, width)``.
        mean: per-channel mean subtracted after scaling to ``[0, 1]``.
        std: per-channel standard deviation divided by.
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        resize_mode: ``"shortest"`` (shorter side to size, then center crop), ``"longest"``
            (longer side to size, then pad with ``fill_color``) or ``"squash"`` (both sides).
        fill_color: padding value in ``[0, 255]`` pixel units (``"longest"`` only).

    Examples:
        >>> pre = TensorPreprocess(size=4, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> pre(torch.ones(2, 3, 8, 6), "[0,1]").shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
        fill_color: int = 0,
    ) -> None:
        if interpolation not in _KERNELS:
            raise ValueError(
                f"interpolation must be one of {list(_KERNELS)}, got {interpolation!r}"
            )
        if resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(
                "resize_mode must be 'shortest', 'longest' or 'squash', got " + repr(resize_mode)
            )
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.fill_color = fill_color
        # open_clip's non-square "shortest" path builds ResizeKeepRatio without passing the
        # configured interpolation, so it always resamples bicubically.
        non_square_shortest = resize_mode == "shortest" and self.size[0] != self.size[1]
        self._resample_with = "bicubic" if non_square_shortest else interpolation
        self._plans: dict[tuple[int, int, torch.device], tuple[_AxisPlan, _AxisPlan]] = {}
        self._affines: dict[tuple[str, torch.device, int, int], tuple[Tensor, ...]] = {}

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> TensorPreprocess:
        """Build from an open_clip ``model.visual.preprocess_cfg`` dict."""
        return cls(
            size=cfg["size"],
            mean=cfg["mean"],
            std=cfg["std"],
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill_color=cfg.get("fill_color", 0),
        )

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after open_clip's resize step, before crop or pad."""
        target_h, target_w = self.size
        if self.resize_mode == "squash":
            return target_h, target_w
        if self.resize_mode == "shortest" and target_h == target_w:
            # torchvision Resize(int): shorter side to size, longer side truncated
            if width <= height:
                return int(target_h * height / width), target_h
            return target_h, int(target_h * width / height)
        # open_clip's ResizeKeepRatio: one ratio for both sides, rounded
        ratios = (height / target_h, width / target_w)
        ratio = max(ratios) if self.resize_mode == "longest" else min(ratios)
        return round(height / ratio), round(width / ratio)

    def _plans_for(self, height: int, width: int, device: torch.device) -> tuple[_AxisPlan, ...]:
        key = (height, width, device)
        if key not in self._plans:
            resized_h, resized_w = self.resized_size(height, width)
            self._plans[key] = (
                _axis_plan(height, resized_h, self.size[0], self._resample_with, device),
                _axis_plan(width, resized_w, self.size[1], self._resample_with, device),
            )
        return self._plans[key]

    def _affine_for(
        self, value_range: ValueRange, device: torch.device, height: int, width: int
    ) -> tuple[Tensor, ...]:
        """Scale and shift from raw values to model input, per pixel; the normalised fill.

        Scale and shift are per channel, but stored expanded to ``(3, height, width)``: an
        ``addcmul`` without broadcasting runs several times faster on CPU, which matters next to
        a small encoder (docs/performance.md, "Implementation choices").
        """
        key = (value_range, device, height, width)
        if key not in self._affines:
            low, high = value_range_bounds(value_range)
            mean = torch.tensor(self.mean, dtype=torch.float64).view(3, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float64).view(3, 1, 1)
            # raw -> [0, 1] -> (unit - mean) / std, as one multiply-add
            scale = (1.0 / ((high - low) * std)).expand(3, height, width)
            shift = ((-low / (high - low) - mean) / std).expand(3, height, width)
            fill = (self.fill_color / 255 - mean) / std
            self._affines[key] = tuple(
                t.to(device, torch.float32).contiguous() for t in (scale, shift, fill)
            )
        return self._affines[key]

    def __call__(self, images: Tensor, value_range: ValueRange) -> Tensor:
        """Preprocess a validated batch.

        Args:
            images: ``(B, 3, H, W)`` batch in ``value_range`` (already validated, e.g. by
                :func:`~diversity_callbacks.images.check_images`).
            value_range: the range of ``images``.

        Returns:
            ``(B, 3, *size)`` float32 model input on the device of ``images``.
        """
        plan_h, plan_w = self._plans_for(images.shape[2], images.shape[3], images.device)
        scale, shift, fill = self._affine_for(
            value_range, images.device, plan_h.crop_size, plan_w.crop_size
        )
        bounds = value_range_bounds(value_range)
        # PIL's order: width, then height. PIL stores the intermediate image as uint8, so cubic
        # overshoot is clipped after each pass; clamp_ only what this method allocated.
        x = images.float()
        for dim, plan in ((-1, plan_w), (-2, plan_h)):
            x = _resample(x, dim, plan, self._resample_with)
            if plan.resized != plan.in_size:
                x = x.clamp_(*bounds)
        x = torch.addcmul(shift, x, scale)
        if plan_h.pad_before or plan_h.pad_after or plan_w.pad_before or plan_w.pad_after:
            x = self._pad(x, plan_h, plan_w, fill)
        return x

    def _pad(self, x: Tensor, plan_h: _AxisPlan, plan_w: _AxisPlan, fill: Tensor) -> Tensor:
        out = fill.expand(x.shape[0], 3, *self.size).clone()
        top, left = plan_h.pad_before, plan_w.pad_before
        out[:, :, top : top + x.shape[2], left : left + x.shape[3]] = x
        return out
