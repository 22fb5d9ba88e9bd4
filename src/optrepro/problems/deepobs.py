"""The eight DeepOBS 1.2 test problems of "Descending through a Crowded Valley" (fsschneider/DeepOBS).

As the TF1 code that produced the published logs:
- validation set = the FIRST `valid_size` training examples (DeepOBS 1.2 `data.take(train_eval_size)`),
  training set = the rest; test = the publisher's test split;
- inputs: MNIST/FMNIST pixels /255; CIFAR/SVHN pixels cast to float on the 0..255 scale, augmented in
  training (zero-pad 2 + random 32x32 crop, flip (not SVHN), additive brightness 63/255, saturation, contrast),
  then per-image standardization in every phase;
- the loss that is differentiated = mean per-example loss + 0.5*wd*sum(w^2) over weights (never biases);
  `sums["loss"]` is the data loss, `sums["reg_loss"]` adds the penalty (what DeepOBS's runner logged);
- DeepOBS drops the last partial batch in every phase (`drop_remainder=True`): `drop_last_eval = True` asks
  the loop to do the same when it evaluates (quadratic_deep's epoch-0 test losses, e.g. 347.36 for Hessian draw 1,
  are over 7x128 points).
Smoke scale runs the same classes with narrow layers on scikit-learn digits / generated images / offline text.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from optrepro.problems.base import LazySums, Output, Problem, Split, classification_output
from optrepro.problems.models import deepobs_nets as nets
from optrepro.problems.sources import (digits_images, english_text, fixed_permutation, labels, load_source,
                                       nhwc_to_nchw, synthetic_images)
from optrepro.problems.tf_compat import deepobs_augment, l2_penalty, per_image_standardization

SMOKE_TRAIN, SMOKE_VALID, SMOKE_TEST = 256, 64, 64


@dataclass
class DeepOBSProblem(Problem):
    """Shared data handling. Subclasses set `source`, `valid_size`, `weight_decay` and build the model."""

    source: ClassVar[str] = ""
    valid_size: ClassVar[int] = 10_000
    drop_last_eval: ClassVar[bool] = True
    augment: ClassVar[str | None] = None  # "cifar" (crop+flip+lighting) | "svhn" (no flip) | None
    weight_decay: float = 0.0

    def smoke_arrays(self) -> dict[str, np.ndarray]:
        x, y = digits_images(28, 1)
        return self._smoke_subset(x, y)

    @staticmethod
    def _smoke_subset(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        order = fixed_permutation(len(x)).numpy()
        x, y = x[order], y[order]
        n_train = SMOKE_TRAIN + SMOKE_VALID
        return {"x_train": x[:n_train], "y_train": y[:n_train],
                "x_test": x[n_train:n_train + SMOKE_TEST], "y_test": y[n_train:n_train + SMOKE_TEST]}

    def load_splits(self) -> dict[str, Split]:
        if self.scale == "full":
            a = load_source(self.source, ("x_train", "y_train", "x_test", "y_test"))
            valid_size = self.valid_size
        else:
            a = self.smoke_arrays()
            valid_size = SMOKE_VALID
        x, y = nhwc_to_nchw(a["x_train"]), self.labels(a["y_train"])
        x_test, y_test = nhwc_to_nchw(a["x_test"]), self.labels(a["y_test"])
        transform = None
        if self.augment is not None:
            flip = self.augment == "cifar"
            transform = lambda batch, generator: (deepobs_augment(batch[0], generator, flip),) + tuple(batch[1:])  # noqa: E731
        return {"train": Split(x[valid_size:], y[valid_size:], transform=transform),
                "valid": Split(x[:valid_size], y[:valid_size]),
                "test": Split(x_test, y_test)}

    def labels(self, y: np.ndarray) -> torch.Tensor:
        return labels(y)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel preprocessing of every phase (augmentation already happened in the Split's transform)."""
        if self.augment is None:
            return x.float() / 255.0
        return per_image_standardization(x.float())

    def classify(self, model, batch) -> Output:
        x, y = batch
        penalty = l2_penalty(model.l2_weights(), 0.5 * self.weight_decay)
        out = classification_output(model(self.inputs(x)), y, penalty)
        out.sums["reg_loss"] = out.sums["loss"] + len(y) * (penalty.detach() if torch.is_tensor(penalty) else penalty)
        return out

    def forward(self, model, batch, carry=None) -> Output:
        return self.classify(model, batch)


# --- P1 -------------------------------------------------------------------------------------------
class FixedOrderSplit(Split):
    """A training split drawn in the same shuffled order every epoch, as DeepOBS's TF-1 pipeline did.

    DeepOBS re-initialises its tf.data iterator at every epoch and sets a graph-level seed (tf.set_random_seed),
    so `shuffle` replays the same permutation each time (TF-1 graph mode has no cross-initialisation reshuffle).
    The examples are stored in that permuted order and `order` is the identity: the loop's step s takes rows
    [s*B, (s+1)*B) (the last partial batch dropped, the same examples every epoch), and a train-split evaluation
    over the first full batches sees exactly the examples trained on, as DeepOBS's train-eval set (take(n) of
    the same shuffled dataset). The generator the loop passes is not used.
    """

    def __init__(self, *tensors: torch.Tensor, seed: int, transform=None):
        self.seed = int(seed)
        perm = torch.randperm(len(tensors[0]), generator=torch.Generator().manual_seed(self.seed))
        super().__init__(*(t[perm.to(t.device)] for t in tensors), transform=transform)

    def order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(len(self))

    def to(self, device) -> "FixedOrderSplit":
        moved = Split.to(self, device)
        moved.__class__, moved.seed = FixedOrderSplit, self.seed
        return moved


def quadratic_points(seed: int) -> torch.Tensor:
    """DeepOBS's quadratic data set: 1000 draws of N(0, 0.6^2 I_100) from RandomState(seed), cast to float32."""
    return torch.from_numpy(np.float32(np.random.RandomState(seed).normal(0.0, 0.6, (1000, 100))))


@dataclass
class QuadraticDeep(DeepOBSProblem):
    """100-d noisy quadratic with a deep-learning-like spectrum. Data: N(0, 0.6^2 I) draws of 1000 points from
    RandomState(42) (train), (44) (valid, DeepOBS 1.2) and (43) (test); identical at both scales.

    hessian_instance: which draw of DeepOBS's module-level RandomState(42) the Hessian is (the k-th problem built
    in one TF process got draw k; paper/published/raw/crowded_valley/hessian_instances.csv lists the draw of
    every published run). 0 = a fresh process (and every instance after DeepOBS PR #44).
    order_seed: None = a fresh permutation of the training set every epoch (from the loop's data seed); an int =
    DeepOBS's TF-1 order, one permutation drawn from this seed and replayed every epoch (FixedOrderSplit).
    Crowded Valley runs set it to the run's seed (optrepro.fidelity.published_spec).
    """

    name: ClassVar[str] = "quadratic_deep"
    hessian_instance: int = 0
    order_seed: int | None = None

    def __post_init__(self):
        if int(self.hessian_instance) != self.hessian_instance or self.hessian_instance < 0:
            raise ValueError(f"quadratic_deep hessian_instance must be an integer >= 0, got {self.hessian_instance!r}")
        if self.order_seed is not None and int(self.order_seed) != self.order_seed:
            raise ValueError(f"quadratic_deep order_seed must be an integer or None, got {self.order_seed!r}")

    def data_args(self) -> dict:
        return {"order_seed": self.order_seed}  # each fixed order is its own training split

    def load_splits(self) -> dict[str, Split]:
        train = quadratic_points(42)
        return {"train": Split(train) if self.order_seed is None else FixedOrderSplit(train, seed=self.order_seed),
                "valid": Split(quadratic_points(44)), "test": Split(quadratic_points(43))}

    def build_model(self) -> nets.Quadratic:
        return nets.Quadratic(nets.deepobs_quadratic_hessian(self.hessian_instance))

    def forward(self, model, batch, carry=None) -> Output:
        losses = model(batch[0])
        return Output(loss=losses.mean(), sums=LazySums(lambda: {"loss": losses.detach().sum()}), count=len(losses))


@functools.lru_cache(maxsize=None)
def quadratic_deep_epoch0_test_loss(instance: int) -> float:
    """The test loss at theta = 1 (before training) of Hessian draw `instance`, as DeepOBS logged it: the mean
    over the 7 full batches of 128 test points (float32 per-example losses)."""
    model = nets.Quadratic(nets.deepobs_quadratic_hessian(instance))
    with torch.no_grad():
        return float(model(quadratic_points(43)[:896]).double().mean())


QUADRATIC_MAX_INSTANCE = 63  # the search bound: the published runs used draws 0..23


def quadratic_deep_instance_of(epoch0_test_loss: float, rtol: float = 1e-6) -> int:
    """The Hessian draw whose epoch-0 test loss is `epoch0_test_loss` (within rtol; draws differ by > 1e-3)."""
    for instance in range(QUADRATIC_MAX_INSTANCE + 1):
        if abs(quadratic_deep_epoch0_test_loss(instance) - epoch0_test_loss) <= rtol * abs(epoch0_test_loss):
            return instance
    raise ValueError(f"no quadratic_deep Hessian draw 0..{QUADRATIC_MAX_INSTANCE} has epoch-0 test loss "
                     f"{epoch0_test_loss!r}")


# --- P2 / P5 --------------------------------------------------------------------------------------
@dataclass
class MNISTVAE(DeepOBSProblem):
    name: ClassVar[str] = "mnist_vae"
    source: ClassVar[str] = "mnist"

    def build_model(self) -> nets.VAE:
        return nets.VAE(n_latent=8, filters=64 if self.scale == "full" else 8)

    def forward(self, model, batch, carry=None) -> Output:
        x = batch[0].float() / 255.0
        img, mean, std_dev = model(x)
        losses = nets.vae_losses(x, img, mean, std_dev)
        return Output(loss=losses.mean(), sums=LazySums(lambda: {"loss": losses.detach().sum()}), count=len(losses))


@dataclass
class FashionMNISTVAE(MNISTVAE):
    name: ClassVar[str] = "fmnist_vae"
    source: ClassVar[str] = "fashion_mnist"


# --- P3 -------------------------------------------------------------------------------------------
@dataclass
class FashionMNIST2c2d(DeepOBSProblem):
    name: ClassVar[str] = "fmnist_2c2d"
    source: ClassVar[str] = "fashion_mnist"

    def build_model(self) -> nets.Net2c2d:
        if self.scale == "full":
            return nets.Net2c2d(10)
        return nets.Net2c2d(10, filters=(8, 16), hidden=64)


# --- P4 -------------------------------------------------------------------------------------------
@dataclass
class Cifar10_3c3d(DeepOBSProblem):
    name: ClassVar[str] = "cifar10_3c3d"
    source: ClassVar[str] = "cifar10"
    augment: ClassVar[str | None] = "cifar"
    weight_decay: float = 0.002

    def smoke_arrays(self) -> dict[str, np.ndarray]:
        return self._smoke_subset(*digits_images(32, 3))

    def build_model(self) -> nets.Net3c3d:
        if self.scale == "full":
            return nets.Net3c3d(10)
        return nets.Net3c3d(10, filters=(8, 12, 16), hidden=(32, 16))


# --- P6 -------------------------------------------------------------------------------------------
@dataclass
class Cifar100AllCNNC(DeepOBSProblem):
    name: ClassVar[str] = "cifar100_allcnnc"
    source: ClassVar[str] = "cifar100"
    augment: ClassVar[str | None] = "cifar"
    weight_decay: float = 5e-4

    def smoke_arrays(self) -> dict[str, np.ndarray]:
        return self._smoke_subset(*synthetic_images(400, 100, 16, 3, seed=6))

    def build_model(self) -> nets.AllCNNC:
        return nets.AllCNNC(100, widths=(96, 192) if self.scale == "full" else (8, 16))


# --- P7 -------------------------------------------------------------------------------------------
@dataclass
class SVHNWRN164(DeepOBSProblem):
    """WRN-16-4 on SVHN (train_32x32 only, no "extra"); validation = the first 26,032 training images
    (DeepOBS's train_eval_size default for SVHN, the size of the test set)."""

    name: ClassVar[str] = "svhn_wrn164"
    source: ClassVar[str] = "svhn"
    valid_size: ClassVar[int] = 26_032
    augment: ClassVar[str | None] = "svhn"
    weight_decay: float = 5e-4

    def smoke_arrays(self) -> dict[str, np.ndarray]:
        return self._smoke_subset(*digits_images(16, 3))

    def labels(self, y: np.ndarray) -> torch.Tensor:
        y = labels(y)
        return torch.where(y == 10, torch.zeros_like(y), y)  # the .mat files label the digit 0 as 10

    def build_model(self) -> nets.WideResNet:
        if self.scale == "full":
            return nets.WideResNet(10, num_residual_units=2, widening_factor=4)
        return nets.WideResNet(10, num_residual_units=1, widening_factor=1)


# --- P8 -------------------------------------------------------------------------------------------
def char_batches(tokens: np.ndarray, batch_size: int, seq_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepOBS tolstoi layout: the stream is cut into `batch_size` rows; batch i is columns [i*T, (i+1)*T) of
    every row, so row r of batch i+1 continues row r of batch i (the carried LSTM state makes sense).
    Returned as (num_batches*batch_size, T) tensors: rows [i*B, (i+1)*B) are batch i."""
    tokens = np.asarray(tokens).astype(np.int64)
    num_batches = (len(tokens) - 1) // (batch_size * seq_length)
    if num_batches == 0:
        raise ValueError(f"{len(tokens)} characters are too few for batch_size {batch_size} x seq_length {seq_length}")
    n = num_batches * batch_size * seq_length
    x = tokens[:n].reshape(batch_size, num_batches, seq_length).transpose(1, 0, 2).reshape(-1, seq_length)
    y = tokens[1:n + 1].reshape(batch_size, num_batches, seq_length).transpose(1, 0, 2).reshape(-1, seq_length)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def text_to_ids(text: str) -> tuple[np.ndarray, int]:
    """Characters -> ids by descending frequency (ties by first occurrence), as DeepOBS's preprocessing."""
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    first = {ch: i for i, ch in reversed(list(enumerate(text)))}
    vocab = sorted(counts, key=lambda ch: (-counts[ch], first[ch]))
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.array([index[ch] for ch in text], dtype=np.int64), len(vocab)


@dataclass
class TolstoiCharRNN(DeepOBSProblem):
    """2-layer LSTM char model on War and Peace; the hidden state is carried across the batches of an epoch
    (`init_carry` zeroes it; DeepOBS re-zeroes at every phase switch). Batches are laid out for
    `batch_size` (50, the protocol's) and must be drawn in order with that batch size."""

    name: ClassVar[str] = "tolstoi_char_rnn"
    source: ClassVar[str] = "tolstoi"
    valid_size: ClassVar[int] = 653_237  # characters: DeepOBS's train_eval_size default (the test-set size)
    batch_size: int | None = None  # None: 50 at full scale (the protocol's), 8 at smoke scale
    seq_length: int | None = None  # None: 50 at full scale, 25 at smoke scale

    def __post_init__(self):
        full = self.scale == "full"
        self.batch_size = self.batch_size or (50 if full else 8)
        self.seq_length = self.seq_length or (50 if full else 25)

    def data_args(self) -> dict:
        return {"batch_size": self.batch_size, "seq_length": self.seq_length}

    def tokens(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        if self.scale == "full":
            a = load_source("tolstoi", ("tokens_train", "tokens_test"))
            return a["tokens_train"], a["tokens_test"], self.valid_size, 83
        ids, vocab = text_to_ids(english_text()[:12_000])
        cut = int(len(ids) * 0.8)  # DeepOBS: first 80% train, last 20% test
        return ids[:cut], ids[cut:], (len(ids) - cut), vocab

    def load_splits(self) -> dict[str, Split]:
        train, test, valid_chars, _ = self.tokens()
        make = lambda t: Split(*char_batches(t, self.batch_size, self.seq_length), sequential=True)  # noqa: E731
        return {"train": make(train[valid_chars:]), "valid": make(train[:valid_chars]), "test": make(test)}

    def build_model(self) -> nets.CharRNN:
        if self.scale == "full":
            return nets.CharRNN(vocab_size=83, hidden=128, num_layers=2)
        return nets.CharRNN(vocab_size=self.tokens()[3], hidden=32, num_layers=2)

    def init_carry(self, batch_size: int, device) -> Any:
        """Zero LSTM state for the `self.batch_size` rows of the layout, whatever the loader's batch size
        (an evaluation batch of k*batch_size rows is k consecutive DeepOBS batches, run in order)."""
        hidden = 128 if self.scale == "full" else 32
        zeros = torch.zeros(self.batch_size, hidden, device=device)
        return tuple((zeros, zeros) for _ in range(2))

    def forward(self, model, batch, carry=None) -> Output:
        x, y = batch
        rows = self.batch_size
        if len(x) % rows:
            raise ValueError(f"tolstoi_char_rnn batches are laid out for batch_size {rows}; got {len(x)} rows, not a "
                             f"multiple (train with batch_size {rows}, evaluate with a multiple of it)")
        state = carry if carry is not None else self.init_carry(rows, x.device)
        logits = []
        for start in range(0, len(x), rows):  # consecutive DeepOBS batches, the state carried through them
            chunk_logits, state = model(x[start:start + rows], state)
            logits.append(chunk_logits)
        logits = torch.cat(logits)
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        per_seq = per_token.view(y.shape).mean(dim=1)  # sequence_loss, averaged across timesteps
        correct = (logits.argmax(-1) == y).float().mean(dim=1)
        new_carry = tuple((h.detach(), c.detach()) for h, c in state)
        return Output(loss=per_seq.mean(), sums={"loss": per_seq.sum().detach(), "accuracy": correct.sum().detach()},
                      count=len(y), carry=new_carry)
