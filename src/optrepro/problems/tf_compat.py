"""TensorFlow/Keras semantics in PyTorch: initializers, "same" padding, L2 penalties, TF image augmentation.

The published numbers of CaAdam (Keras 3), DeepOBS/Crowded Valley (TensorFlow 1) and NOS (Keras 2) come from
TF code. These helpers reproduce the parts of TF behaviour that change the numbers:

- initializers: TF/Keras `VarianceScaling` ("truncated_normal" rescales the std by 1/0.87962566 and cuts at
  two std), `truncated_normal_initializer` (cut at two std, *no* rescaling), glorot/he variants;
- "same" padding: TF pads asymmetrically (the extra pixel goes after), PyTorch symmetric; max-pooling pads with
  -inf; transposed convolutions crop the full output the same way;
- L2: Keras `l2(c)` adds c*sum(w^2); TF `l2_regularizer(c)` / DeepOBS adds c/2*sum(w^2);
- image augmentation of DeepOBS's TF input pipelines, vectorised over a batch on any device.

Weights are stored in PyTorch layout; fans are computed as TF does for the equivalent TF kernel.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from optrepro.registry import unknown

TRUNCATED_NORMAL_STD_CORRECTION = 0.87962566103423978  # std of N(0,1) truncated to [-2, 2]


# --- initializers ---------------------------------------------------------------------------------
def tf_fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as TF computes them for the same kernel. 1-D: both equal its length (TF rule).

    PyTorch stores Linear/Conv weights as (out, in, *k) and ConvTranspose as (in, out, *k); TF's
    conv2d_transpose kernel is (kh, kw, filters, in) with fan_in = kh*kw*filters. In both cases that is
    receptive * shape[1] for fan_in and receptive * shape[0] for fan_out.
    """
    if weight.ndim == 1:
        return weight.shape[0], weight.shape[0]
    receptive = math.prod(weight.shape[2:]) if weight.ndim > 2 else 1
    return receptive * weight.shape[1], receptive * weight.shape[0]


def variance_scaling_(weight: torch.Tensor, scale: float, mode: str, distribution: str) -> torch.Tensor:
    """TF/Keras VarianceScaling. mode: fan_in|fan_out|fan_avg; distribution: truncated_normal|uniform|untruncated_normal."""
    fan_in, fan_out = tf_fans(weight)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    with torch.no_grad():
        if distribution == "truncated_normal":
            std = math.sqrt(scale / n) / TRUNCATED_NORMAL_STD_CORRECTION
            return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * scale / n)
            return nn.init.uniform_(weight, -limit, limit)
        if distribution == "untruncated_normal":
            return nn.init.normal_(weight, 0.0, math.sqrt(scale / n))
    raise unknown("distribution", distribution, ("truncated_normal", "uniform", "untruncated_normal"))


def glorot_uniform_(weight: torch.Tensor) -> torch.Tensor:
    return variance_scaling_(weight, 1.0, "fan_avg", "uniform")


def glorot_normal_(weight: torch.Tensor) -> torch.Tensor:
    """TF1 `glorot_normal` (GlorotNormal/glorot_normal_initializer): a truncated normal, rescaled std."""
    return variance_scaling_(weight, 1.0, "fan_avg", "truncated_normal")


def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras `he_normal`: truncated normal, std sqrt(2/fan_in)/0.8796."""
    return variance_scaling_(weight, 2.0, "fan_in", "truncated_normal")


def tf_truncated_normal_(weight: torch.Tensor, std: float) -> torch.Tensor:
    """`tf.truncated_normal_initializer(stddev)`: N(0, std) re-drawn outside two std; std is NOT rescaled."""
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


# --- "same" padding -------------------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding of one spatial dim: (before, after); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class TFConv2d(nn.Conv2d):
    """Conv2d with TF padding semantics: padding="same" (asymmetric, as TF) or "valid"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: str = "same", bias: bool = True):
        if padding not in ("same", "valid"):
            raise unknown("padding", padding, ("same", "valid"))
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=bias)
        self.tf_padding = padding
        self.symmetric = padding == "same" and stride == 1 and kernel_size % 2 == 1  # fast path: plain padding
        if self.symmetric:
            self.padding = (kernel_size // 2, kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding == "same" and not self.symmetric:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


class TFMaxPool2d(nn.Module):
    """Max pooling with TF "same" padding (pads with -inf, the odd pixel after)."""

    def __init__(self, kernel_size: int, stride: int, padding: str = "same"):
        super().__init__()
        self.kernel_size, self.stride, self.tf_padding = kernel_size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding == "same":
            x = pad_same(x, self.kernel_size, self.stride, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class TFConvTranspose2d(nn.ConvTranspose2d):
    """conv2d_transpose with TF "same" padding: output = input*stride, cropped as TF's gradient of SAME conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        h_out, w_out = x.shape[-2] * s, x.shape[-1] * s
        top, _ = same_padding(h_out, k, s)
        left, _ = same_padding(w_out, k, s)
        return full[..., top:top + h_out, left:left + w_out]


def keras_batchnorm(num_features: int, momentum: float = 0.99, eps: float = 1e-3) -> nn.BatchNorm2d:
    """Keras BatchNormalization (momentum 0.99, eps 1e-3): PyTorch momentum is 1 - Keras momentum."""
    return nn.BatchNorm2d(num_features, eps=eps, momentum=1.0 - momentum)


# --- L2 penalties ---------------------------------------------------------------------------------
def l2_penalty(weights: Sequence[torch.Tensor], coefficient: float) -> torch.Tensor | float:
    """coefficient * sum of squares of `weights` (pass 0.5*wd for TF/DeepOBS, wd for Keras l2(wd))."""
    if coefficient == 0 or not weights:
        return 0.0
    return coefficient * torch.stack([w.square().sum() for w in weights]).sum()


# --- augmentation (DeepOBS TF input pipelines) ----------------------------------------------------
def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    # Drawn on the generator's device (a CPU generator cannot drive CUDA sampling), then moved.
    u = torch.rand(n, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator, mode: str = "constant") -> torch.Tensor:
    """Pad by `pad` on every side (zeros, or "reflect"), then crop back at a uniform offset per image
    (tf.random_crop after resize_image_with_crop_or_pad; torchvision RandomCrop(padding))."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = _uniform(len(x), 0.0, 1.0, generator, x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """TF adjust_saturation on RGB (N,3,H,W): HSV saturation times factor, clipped to [0,1]; hue, value kept.

    With V = max and S = (max-min)/max, each channel is c = V - V*S*k(hue); scaling S to S' gives
    c' = V - (V - c) * S'/S. Grey pixels (S = 0) are unchanged.
    """
    v = x.amax(dim=1, keepdim=True)
    m = x.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - m) / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * factor[:, None, None, None]).clamp(0.0, 1.0)
    ratio = torch.where(s > 0, s_new / s.clamp_min(1e-12), torch.ones_like(s))
    return v - (v - x) * ratio


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """TF adjust_contrast: (x - mean) * factor + mean with the mean per image and channel."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * factor[:, None, None, None] + mean


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """tf.image.per_image_standardization: (x - mean) / max(std, 1/sqrt(num_elements)) per image."""
    flat = x.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.var(dim=1, unbiased=False).sqrt()
    adjusted = torch.maximum(std, torch.full_like(std, 1.0 / math.sqrt(flat.shape[1])))
    return (x - mean[:, None, None, None]) / adjusted[:, None, None, None]


def deepobs_augment(x: torch.Tensor, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """DeepOBS's TF training augmentation of CIFAR (flip=True) and SVHN (flip=False) on pixel values 0..255.

    resize_image_with_crop_or_pad to 36 + random_crop 32 (i.e. zero-pad 2, random offset), random
    left-right flip, random_brightness(63/255) -- additive on the 0..255 scale, as in the TF code --,
    random_saturation [0.5, 1.5], random_contrast [0.2, 1.8]. Per-image standardization follows in the
    problem's forward (it applies to evaluation images too). Returns float32.
    """
    x = x.float()
    n = len(x)
    x = random_crop(x, 2, generator)
    if flip:
        x = random_flip(x, generator)
    x = x + _uniform(n, -63.0 / 255.0, 63.0 / 255.0, generator, x.device)[:, None, None, None]
    x = adjust_saturation(x, _uniform(n, 0.5, 1.5, generator, x.device))
    x = adjust_contrast(x, _uniform(n, 0.2, 1.8, generator, x.device))
    return x


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """tensorflow_addons random_cutout: a size x size square of zeros per image, centred uniformly in the
    image (it may hang over the border)."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=generator, device=generator.device).to(x.device)
    cx = torch.randint(0, w, (n,), generator=generator, device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    inside_y = (rows >= (cy - size // 2)[:, None]) & (rows < (cy - size // 2 + size)[:, None])
    inside_x = (cols >= (cx - size // 2)[:, None]) & (cols < (cx - size // 2 + size)[:, None])
    mask = inside_y[:, :, None] & inside_x[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


def kernels(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """The weight tensors (never biases) of conv/linear modules, for L2 on weights only."""
    return [m.weight for m in modules if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
