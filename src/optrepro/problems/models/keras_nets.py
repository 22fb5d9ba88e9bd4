"""Keras models ported with Keras semantics: CaAdam's ResNet-20 and MLPs, and the NOS search ConvNet.

Keras semantics reproduced: initializers (he_normal = truncated normal std sqrt(2/fan_in)/0.8796;
glorot_uniform; zero biases), Conv2D biases (Keras use_bias=True by default), "same" padding (asymmetric
for stride 2), BatchNormalization momentum 0.99 / eps 1e-3, and parameter registration in the order of
Keras's `model.trainable_variables` (CaAdam's depth scaling depends on it).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from optrepro.problems.tf_compat import TFConv2d, glorot_uniform_, he_normal_, keras_batchnorm


def keras_dense(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    glorot_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def keras_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, init: str = "glorot_uniform") -> TFConv2d:
    conv = TFConv2d(in_ch, out_ch, kernel, stride, padding="same", bias=True)
    if init == "he_normal":
        he_normal_(conv.weight)
    else:
        glorot_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class KerasBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ 1x1 conv+BN projection when the shape changes), add, ReLU.

    Registration order follows Keras's topological (depth) order of the functional graph: the projection
    conv sits beside the first 3x3 conv (same depth), its BN beside the first BN, then the second conv/BN.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv_a = keras_conv(in_ch, out_ch, 3, stride, init="he_normal")
        project = stride != 1 or in_ch != out_ch
        self.shortcut_conv = keras_conv(in_ch, out_ch, 1, stride) if project else None
        self.bn_a = keras_batchnorm(out_ch)
        self.shortcut_bn = keras_batchnorm(out_ch) if project else None
        self.conv_b = keras_conv(out_ch, out_ch, 3, 1, init="he_normal")
        self.bn_b = keras_batchnorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = self.bn_b(self.conv_b(y))
        shortcut = x if self.shortcut_conv is None else self.shortcut_bn(self.shortcut_conv(x))
        return F.relu(y + shortcut)


class KerasResNet(nn.Module):
    """ResNet 6n+2 (n=3: ResNet-20) as the CaAdam notebooks build it; L2 goes on `l2_weights()` (3x3 convs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, blocks_per_stage: int = 3,
                 widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        self.stem_conv = keras_conv(in_channels, widths[0], 3, 1, init="he_normal")
        self.stem_bn = keras_batchnorm(widths[0])
        blocks = []
        in_ch = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(KerasBasicBlock(in_ch, width, stride))
                in_ch = width
        self.blocks = nn.Sequential(*blocks)
        self.head = keras_dense(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        return self.head(x.mean(dim=(-2, -1)))

    def l2_weights(self) -> list[torch.Tensor]:
        """The kernels with Keras l2(1e-4): every 3x3 conv (stem and blocks), not the 1x1 shortcuts or Dense."""
        return [m.weight for m in self.modules() if isinstance(m, TFConv2d) and m.kernel_size == (3, 3)]


class KerasMLP(nn.Module):
    """Dense(u, relu) for each u, then Dense(1) linear (CaAdam's California Housing regressors)."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for units in hidden:
            layers += [keras_dense(in_features, units), nn.ReLU()]
            in_features = units
        layers.append(keras_dense(in_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NOSConvNet(nn.Module):
    """The NOS search proxy: Conv3x3(b)-BN-swish, Conv3x3(2b, s2)-BN-swish, Conv3x3(4b, s2)-BN-swish, GAP,
    Dropout 0.2, Dense(classes). Keras defaults: glorot_uniform, conv biases, BN momentum 0.99 / eps 1e-3."""

    def __init__(self, base: int = 32, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        self.convs = nn.ModuleList([keras_conv(in_channels, base, 3, 1), keras_conv(base, 2 * base, 3, 2),
                                    keras_conv(2 * base, 4 * base, 3, 2)])
        self.bns = nn.ModuleList([keras_batchnorm(base), keras_batchnorm(2 * base), keras_batchnorm(4 * base)])
        self.dropout = nn.Dropout(dropout)
        self.head = keras_dense(4 * base, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.bns):
            x = F.silu(bn(conv(x)))
        return self.head(self.dropout(x.mean(dim=(-2, -1))))
