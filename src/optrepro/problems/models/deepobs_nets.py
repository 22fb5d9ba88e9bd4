"""The eight DeepOBS 1.2 (TensorFlow 1) test-problem networks of the Crowded Valley benchmark, in PyTorch.

Each follows the TF definition in fsschneider/DeepOBS (deepobs/tensorflow/testproblems/): layer sizes, TF
"same"/"valid" padding, initializers (tf.layers defaults are glorot_uniform kernels and zero biases), and
which tensors carry L2 (`l2_weights()`: kernels, never biases or BN parameters). Widths are arguments so
that smoke scale runs the same code with narrow layers; the defaults are the published sizes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optrepro.problems.tf_compat import (TFConv2d, TFConvTranspose2d, TFMaxPool2d, glorot_normal_, glorot_uniform_,
                                         kernels, tf_truncated_normal_)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- P1 quadratic_deep ----------------------------------------------------------------------------
def deepobs_random_rotation(rng: np.random.RandomState, dim: int) -> np.ndarray:
    """DeepOBS's Haar rotation (Diaconis-Shahshahani subgroup algorithm), drawing from `rng` in its order."""
    t = 2 * np.pi * rng.uniform()
    rotation = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v = v / np.sqrt(v.T @ v)
        e = np.concatenate((np.array([[1.0]]), np.zeros((d, 1))), axis=0)
        x = (e - v) / np.sqrt((e - v).T @ (e - v))
        block = np.vstack([np.hstack([[[1.0]], np.zeros((1, d))]), np.hstack([np.zeros((d, 1)), rotation])])
        rotation = block - 2 * np.outer(x, x.T @ block)
    return -rotation


def deepobs_quadratic_hessian(instance: int = 0, dim: int = 100) -> np.ndarray:
    """Q = R^T diag(eigs) R of quadratic_deep, drawn from DeepOBS's *module-level* RandomState(42).

    The TF module draws from one RandomState(42) shared by every instantiation in a process (fixed later
    by DeepOBS PR #44), so the k-th problem instance built in a process gets draw k. The Crowded Valley runs
    used draws 0 to 17, depending on how many runs their process had run before (the instance of each
    published run follows from its epoch-0 test loss: paper/published/raw/crowded_valley/hessian_instances.csv);
    instance=0 is the first draw (a fresh process, and what PR #44 made every instance use).
    """
    if dim != 100:
        raise ValueError("quadratic_deep is defined for dim=100 (90 small and 10 large eigenvalues)")
    if int(instance) != instance or instance < 0:
        raise ValueError(f"Hessian instance must be an integer >= 0, got {instance!r}")
    while len(_HESSIAN_DRAWS) <= instance:  # draw k needs draws 0..k-1 first: keep them (one RNG, in order)
        eigenvalues = np.concatenate((_HESSIAN_RNG.uniform(0.0, 1.0, 90), _HESSIAN_RNG.uniform(30.0, 60.0, 10)))
        rotation = deepobs_random_rotation(_HESSIAN_RNG, 100)
        hessian = rotation.T @ np.diag(eigenvalues) @ rotation
        hessian.setflags(write=False)
        _HESSIAN_DRAWS.append(hessian)
    return _HESSIAN_DRAWS[instance]


# DeepOBS's module-level RandomState(42) and the Hessians drawn from it so far, in order
_HESSIAN_RNG = np.random.RandomState(42)
_HESSIAN_DRAWS: list[np.ndarray] = []


class Quadratic(nn.Module):
    """theta (1 x dim, initialised to 1.0); per-example loss 0.5 (theta - x)^T Q (theta - x)."""

    def __init__(self, hessian: np.ndarray):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(1, hessian.shape[0]))
        self.register_buffer("hessian", torch.tensor(hessian, dtype=torch.float32))  # TF casts Q to float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.theta - x
        return 0.5 * ((d @ self.hessian) * d).sum(dim=1)

    def l2_weights(self) -> list[torch.Tensor]:
        return []


# --- P2/P5 VAE ------------------------------------------------------------------------------------
def _tf_default_init(module: nn.Module) -> None:
    """tf.layers defaults: glorot_uniform kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            glorot_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class VAE(nn.Module):
    """DeepOBS _vae: encoder 3x conv(k4; strides 2,2,1; leaky ReLU 0.3; dropout 0.2) -> dense mean and
    0.5*dense log-std (8-d); decoder dense 24 -> 49 (leaky ReLU) -> 7x7x1 -> 3x deconv(k4; strides 2,1,1;
    ReLU; dropout 0.2 after the first two) -> dense 784 sigmoid. The reparameterisation noise is drawn from
    torch's global RNG, in training and evaluation alike (TF samples in every phase)."""

    def __init__(self, n_latent: int = 8, filters: int = 64, dropout: float = 0.2):
        super().__init__()
        self.n_latent = n_latent
        self.enc = nn.ModuleList([TFConv2d(1, filters, 4, 2), TFConv2d(filters, filters, 4, 2),
                                  TFConv2d(filters, filters, 4, 1)])
        self.mean = nn.Linear(7 * 7 * filters, n_latent)
        self.log_std = nn.Linear(7 * 7 * filters, n_latent)
        self.dec_dense = nn.ModuleList([nn.Linear(n_latent, 24), nn.Linear(24, 49)])
        self.dec = nn.ModuleList([TFConvTranspose2d(1, filters, 4, 2), TFConvTranspose2d(filters, filters, 4, 1),
                                  TFConvTranspose2d(filters, filters, 4, 1)])
        self.out = nn.Linear(14 * 14 * filters, 28 * 28)
        self.dropout = nn.Dropout(dropout)
        _tf_default_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = x.reshape(-1, 1, 28, 28)
        for conv in self.enc:
            h = self.dropout(F.leaky_relu(conv(h), 0.3))
        h = h.flatten(1)
        mean = self.mean(h)
        std_dev = 0.5 * self.log_std(h)  # DeepOBS calls it std_dev; it is a log standard deviation
        epsilon = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype)
        z = mean + epsilon * torch.exp(std_dev)
        for dense in self.dec_dense:
            z = F.leaky_relu(dense(z), 0.3)
        h = z.reshape(-1, 1, 7, 7)
        for i, deconv in enumerate(self.dec):
            h = F.relu(deconv(h))
            if i < 2:
                h = self.dropout(h)
        img = torch.sigmoid(self.out(h.flatten(1)))
        return img.reshape(-1, 28, 28), mean, std_dev

    def l2_weights(self) -> list[torch.Tensor]:
        return []


def vae_losses(x: torch.Tensor, img: torch.Tensor, mean: torch.Tensor, std_dev: torch.Tensor) -> torch.Tensor:
    """Per-example DeepOBS VAE loss: summed squared pixel error + KL(N(mean, exp(std_dev)^2) || N(0, I))."""
    img_loss = (img.reshape(len(img), -1) - x.reshape(len(x), -1)).square().sum(dim=1)
    latent_loss = -0.5 * (1.0 + 2.0 * std_dev - mean.square() - torch.exp(2.0 * std_dev)).sum(dim=1)
    return img_loss + latent_loss


# --- P3 fmnist_2c2d -------------------------------------------------------------------------------
class Net2c2d(nn.Module):
    """conv32 5x5 same ReLU, maxpool 2 same, conv64 5x5, maxpool, fc1024 ReLU, fc; truncated normal
    std 0.05 (tf.truncated_normal_initializer: cut at 2 std, not rescaled) and biases 0.05."""

    def __init__(self, num_outputs: int = 10, in_channels: int = 1, image_size: int = 28,
                 filters: tuple[int, int] = (32, 64), hidden: int = 1024):
        super().__init__()
        self.conv1 = TFConv2d(in_channels, filters[0], 5)
        self.conv2 = TFConv2d(filters[0], filters[1], 5)
        self.pool = TFMaxPool2d(2, 2)
        side = ceil_div(ceil_div(image_size, 2), 2)  # two 'same' pools of stride 2
        self.fc1 = nn.Linear(side * side * filters[1], hidden)
        self.fc2 = nn.Linear(hidden, num_outputs)
        for m in (self.conv1, self.conv2, self.fc1, self.fc2):
            tf_truncated_normal_(m.weight, 0.05)
            nn.init.constant_(m.bias, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)

    def l2_weights(self) -> list[torch.Tensor]:
        return []


# --- P4 cifar10_3c3d ------------------------------------------------------------------------------
class Net3c3d(nn.Module):
    """conv64 5x5 valid, maxpool 3/2 same, conv96 3x3 valid, maxpool, conv128 3x3 same, maxpool, fc512, fc256,
    fc; ReLU; convs glorot_normal (TF1: truncated), dense glorot_uniform, zero biases; L2 on all kernels."""

    def __init__(self, num_outputs: int = 10, in_channels: int = 3, image_size: int = 32,
                 filters: tuple[int, int, int] = (64, 96, 128), hidden: tuple[int, int] = (512, 256)):
        super().__init__()
        self.convs = nn.ModuleList([TFConv2d(in_channels, filters[0], 5, padding="valid"),
                                    TFConv2d(filters[0], filters[1], 3, padding="valid"),
                                    TFConv2d(filters[1], filters[2], 3, padding="same")])
        self.pool = TFMaxPool2d(3, 2)
        # valid 5x5, pool/2, valid 3x3, pool/2, same 3x3, pool/2: 32 -> 28 -> 14 -> 12 -> 6 -> 6 -> 3
        side = ceil_div(ceil_div(ceil_div(image_size - 4, 2) - 2, 2), 2)
        self.fcs = nn.ModuleList([nn.Linear(side * side * filters[2], hidden[0]), nn.Linear(hidden[0], hidden[1]),
                                  nn.Linear(hidden[1], num_outputs)])
        for conv in self.convs:
            glorot_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        for fc in self.fcs:
            glorot_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.pool(F.relu(conv(x)))
        x = x.flatten(1)
        x = F.relu(self.fcs[0](x))
        x = F.relu(self.fcs[1](x))
        return self.fcs[2](x)

    def l2_weights(self) -> list[torch.Tensor]:
        return kernels(self.modules())


# --- P6 cifar100_allcnnc --------------------------------------------------------------------------
class AllCNNC(nn.Module):
    """All-CNN-C: dropout 0.2 on the input; 3x conv96 (third stride 2); dropout 0.5; 3x conv192 (third stride
    2); dropout 0.5; conv192 3x3 valid; conv192 1x1; conv(classes) 1x1; every conv ReLU (the last too);
    global average pooling. glorot_normal (TF1: truncated) kernels, biases 0.1."""

    def __init__(self, num_outputs: int = 100, in_channels: int = 3, widths: tuple[int, int] = (96, 192)):
        super().__init__()
        a, b = widths
        spec = [(in_channels, a, 3, 1, "same"), (a, a, 3, 1, "same"), (a, a, 3, 2, "same"),
                (a, b, 3, 1, "same"), (b, b, 3, 1, "same"), (b, b, 3, 2, "same"),
                (b, b, 3, 1, "valid"), (b, b, 1, 1, "same"), (b, num_outputs, 1, 1, "same")]
        self.convs = nn.ModuleList([TFConv2d(i, o, k, s, padding=p) for i, o, k, s, p in spec])
        for conv in self.convs:
            glorot_normal_(conv.weight)
            nn.init.constant_(conv.bias, 0.1)
        self.input_dropout = nn.Dropout(0.2)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x)
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i in (2, 5):
                x = self.dropout(x)
        return x.mean(dim=(-2, -1))

    def l2_weights(self) -> list[torch.Tensor]:
        return kernels(self.modules())


# --- P7 svhn_wrn164 -------------------------------------------------------------------------------
class WRNUnit(nn.Module):
    """Pre-activation unit of DeepOBS _wrn. The first unit of a stage takes its shortcut from BN-ReLU(x):
    identity / max-pool when the width does not change, else a 1x1 conv (no bias)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, first: bool, bn_momentum: float):
        super().__init__()
        self.first = first
        self.bn_a = nn.BatchNorm2d(in_ch, eps=1e-5, momentum=1.0 - bn_momentum)
        self.shortcut = (TFConv2d(in_ch, out_ch, 1, stride, bias=False) if first and in_ch != out_ch else None)
        self.stride = stride
        self.conv_a = TFConv2d(in_ch, out_ch, 3, stride, bias=False)
        self.bn_b = nn.BatchNorm2d(out_ch, eps=1e-5, momentum=1.0 - bn_momentum)
        self.conv_b = TFConv2d(out_ch, out_ch, 3, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = F.relu(self.bn_a(x))
            if self.shortcut is not None:
                shortcut = self.shortcut(x)
            elif self.stride == 1:
                shortcut = x
            else:
                shortcut = F.max_pool2d(x, self.stride, self.stride)
            y = self.conv_a(x)
        else:
            shortcut = x
            y = self.conv_a(F.relu(self.bn_a(x)))
        y = self.conv_b(F.relu(self.bn_b(y)))
        return y + shortcut


class WideResNet(nn.Module):
    """DeepOBS _wrn (WRN-16-4: num_residual_units=2, widening_factor=4): glorot_uniform kernels without bias,
    BN momentum 0.9 / eps 1e-5, L2 on conv kernels and the dense kernel."""

    def __init__(self, num_outputs: int = 10, num_residual_units: int = 2, widening_factor: int = 4,
                 in_channels: int = 3, bn_momentum: float = 0.9):
        super().__init__()
        filters = [16, 16 * widening_factor, 32 * widening_factor, 64 * widening_factor]
        strides = [1, 2, 2]
        self.stem = TFConv2d(in_channels, 16, 3, 1, bias=False)
        units = []
        for i in range(1, 4):
            units.append(WRNUnit(filters[i - 1], filters[i], strides[i - 1], True, bn_momentum))
            for _ in range(1, num_residual_units):
                units.append(WRNUnit(filters[i], filters[i], 1, False, bn_momentum))
        self.units = nn.Sequential(*units)
        self.bn_last = nn.BatchNorm2d(filters[3], eps=1e-5, momentum=1.0 - bn_momentum)
        self.fc = nn.Linear(filters[3], num_outputs)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                glorot_uniform_(m.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem(x))
        x = F.relu(self.bn_last(x)).mean(dim=(-2, -1))
        return self.fc(x)

    def l2_weights(self) -> list[torch.Tensor]:
        return kernels(self.modules())


# --- P8 tolstoi_char_rnn --------------------------------------------------------------------------
class TFLSTMLayer(nn.Module):
    """One tf.contrib.rnn.LSTMCell layer run by torch's fused LSTM kernel.

    TF has one bias per cell (zero-initialised, trainable) plus a constant forget_bias=1.0; PyTorch's
    nn.LSTM has two trainable biases, which would double the bias step. Here the trainable `bias` plays
    TF's bias and the constant `forget_bias` buffer fills torch's second bias slot. The kernel is
    glorot_uniform over TF's fused [input+hidden, 4*hidden] matrix.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        forget = torch.zeros(4 * hidden_size)
        forget[hidden_size:2 * hidden_size] = 1.0  # torch gate order i, f, g, o
        self.register_buffer("forget_bias", forget)
        limit = (6.0 / (input_size + hidden_size + 4 * hidden_size)) ** 0.5
        with torch.no_grad():
            self.weight_ih.uniform_(-limit, limit)
            self.weight_hh.uniform_(-limit, limit)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h0, c0 = state
        weights = [self.weight_ih, self.weight_hh, self.bias, self.forget_bias]
        out, h, c = torch.lstm(x, (h0[None], c0[None]), weights, True, 1, 0.0, self.training, False, True)
        return out, (h[0], c[0])


class CharRNN(nn.Module):
    """DeepOBS tolstoi_char_rnn: embedding 128 -> 2 x LSTM(128) with DropoutWrapper(input and output keep 0.8)
    on each cell -> softmax layer. TF's default glorot_uniform initializer covers the embedding, softmax_w and
    (it being a get_variable without initializer) softmax_b. Dropout masks are fresh per time step, so
    dropout on the (B, T, H) tensor is the same as TF's per-step DropoutWrapper; between the layers both the
    output dropout of layer 1 and the input dropout of layer 2 apply, as in TF."""

    def __init__(self, vocab_size: int = 83, hidden: int = 128, num_layers: int = 2, keep_prob: float = 0.8):
        super().__init__()
        self.hidden, self.num_layers = hidden, num_layers
        self.embedding = nn.Parameter(torch.empty(vocab_size, hidden))
        self.layers = nn.ModuleList([TFLSTMLayer(hidden, hidden) for _ in range(num_layers)])
        self.softmax_w = nn.Parameter(torch.empty(hidden, vocab_size))
        self.softmax_b = nn.Parameter(torch.empty(vocab_size))
        for p in (self.embedding, self.softmax_w, self.softmax_b):
            glorot_uniform_(p)
        self.drop = 1.0 - keep_prob

    def zero_state(self, batch_size: int, device) -> tuple:
        zeros = torch.zeros(batch_size, self.hidden, device=device)
        return tuple((zeros, zeros) for _ in range(self.num_layers))

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        h = F.embedding(x, self.embedding)
        new_state = []
        for layer, layer_state in zip(self.layers, state):
            h = F.dropout(h, self.drop, self.training)
            h, s = layer(h, layer_state)
            h = F.dropout(h, self.drop, self.training)
            new_state.append(s)
        return h @ self.softmax_w + self.softmax_b, tuple(new_state)

    def l2_weights(self) -> list[torch.Tensor]:
        return []
