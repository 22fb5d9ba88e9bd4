"""CaAdam's workloads: ResNet-20 on CIFAR-10/100 and Fashion-MNIST-56, MLPs on California.

Data handling as in the authors' Keras notebooks (remigenet/CaAdam@ce14f7e results/*.ipynb):
- CIFAR-10/100: x/255 minus the per-pixel mean of the 50k training images, no augmentation.
- Fashion-MNIST: scipy.ndimage.zoom 28 -> 56 (cubic spline, order 3, on the uint8 arrays), grey replicated
  to 3 channels, /255.
- California Housing: Keras's copy (16,512 train / 4,128 test), StandardScaler fitted on the training X and y;
  losses and RMSE are in standardized-target units.
- Validation: Keras `validation_split=0.2`, i.e. the LAST 20% of the training arrays, unshuffled.
Losses: sparse categorical cross-entropy + Keras l2(1e-4) = 1e-4*sum(w^2) on the 3x3 kernels; MSE for the MLPs.
`sums["loss"]` is the data loss; `sums["reg_loss"]` adds the L2 penalty (what Keras's `evaluate` reports).

Smoke scale keeps the code path: real 8x8 digits (nearest-upsampled to 16x16, or zoomed x2 like FMNIST) and
generated 100-class images for CIFAR-100; a ResNet-8 with widths 8/16/32; scikit-learn's diabetes (10 features)
for the MLPs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from optrepro.problems.base import Output, Problem, Split, classification_output
from optrepro.problems.catalog_caadam import parse_hidden
from optrepro.problems.models.keras_nets import KerasMLP, KerasResNet
from optrepro.problems.sources import (digits_images, fixed_permutation, keras_validation_split, labels, load_source,
                                       nhwc_to_nchw, synthetic_images)
from optrepro.problems.tf_compat import l2_penalty


def keras_splits(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 validation_split: float) -> dict[str, Split]:
    cut = keras_validation_split(len(x), validation_split)
    return {"train": Split(x[:cut], y[:cut]), "valid": Split(x[cut:], y[cut:]), "test": Split(x_test, y_test)}


def zoom_images(x: np.ndarray, factor: int) -> np.ndarray:
    """scipy.ndimage.zoom(order=3) per image on uint8 (N,H,W): scipy rounds and clips to uint8, as the notebook."""
    from scipy.ndimage import zoom

    return zoom(x, (1, factor, factor), order=3)


@dataclass
class CaAdamResNet20(Problem):
    """Keras ResNet-20 (6n+2, n=3) as the CaAdam notebooks build it. Subclasses fix the dataset."""

    name: ClassVar[str] = "caadam_resnet20"
    dataset: ClassVar[str] = "cifar10"
    num_classes: ClassVar[int] = 10
    l2: float = 1e-4
    validation_split: float = 0.2

    def data_args(self) -> dict:
        return {"validation_split": self.validation_split}

    # --- data -------------------------------------------------------------------------------------
    def raw_arrays(self) -> dict[str, np.ndarray]:
        if self.scale == "full":
            source = {"cifar10": "cifar10", "cifar100": "cifar100", "fmnist": "fashion_mnist"}[self.dataset]
            return load_source(source, ("x_train", "y_train", "x_test", "y_test"))
        if self.dataset == "cifar100":
            x, y = synthetic_images(500, 100, 16, 3, seed=100)
        elif self.dataset == "fmnist":
            x, y = digits_images(8, 1)
        else:
            x, y = digits_images(16, 3)
        order = fixed_permutation(len(x)).numpy()[:500]
        x, y = x[order], y[order]
        return {"x_train": x[:400], "y_train": y[:400], "x_test": x[400:], "y_test": y[400:]}

    def load_splits(self) -> dict[str, Split]:
        a = self.raw_arrays()
        if self.dataset == "fmnist":
            # Zoom x2 (28 -> 56 at full scale), kept uint8 single-channel; forward replicates to 3 channels.
            x = torch.from_numpy(zoom_images(a["x_train"].reshape(len(a["x_train"]), *a["x_train"].shape[1:3]), 2))
            x_test = torch.from_numpy(zoom_images(a["x_test"].reshape(len(a["x_test"]), *a["x_test"].shape[1:3]), 2))
            x, x_test = x[:, None].contiguous(), x_test[:, None].contiguous()
        else:
            x = nhwc_to_nchw(a["x_train"]).float().div_(255.0)
            x_test = nhwc_to_nchw(a["x_test"]).float().div_(255.0)
            mean = x.mean(dim=0, keepdim=True)  # per-pixel mean of ALL training images (before the split)
            x, x_test = x.sub_(mean), x_test.sub_(mean)
        return keras_splits(x, labels(a["y_train"]), x_test, labels(a["y_test"]), self.validation_split)

    # --- model ------------------------------------------------------------------------------------
    def build_model(self) -> KerasResNet:
        if self.scale == "full":
            return KerasResNet(self.num_classes, in_channels=3, blocks_per_stage=3, widths=(16, 32, 64))
        return KerasResNet(self.num_classes, in_channels=3, blocks_per_stage=1, widths=(8, 16, 32))

    def forward(self, model, batch, carry=None) -> Output:
        x, y = batch
        if x.dtype == torch.uint8:  # Fashion-MNIST: /255 and grey -> 3 channels
            x = (x.float() / 255.0).expand(-1, 3, -1, -1)
        penalty = l2_penalty(model.l2_weights(), self.l2)
        out = classification_output(model(x), y, penalty)
        out.sums["reg_loss"] = out.sums["loss"] + len(y) * (penalty.detach() if torch.is_tensor(penalty) else penalty)
        return out


class CaAdamCifar10(CaAdamResNet20):
    name: ClassVar[str] = "caadam_cifar10_resnet20"
    dataset: ClassVar[str] = "cifar10"
    num_classes: ClassVar[int] = 10


class CaAdamCifar100(CaAdamResNet20):
    name: ClassVar[str] = "caadam_cifar100_resnet20"
    dataset: ClassVar[str] = "cifar100"
    num_classes: ClassVar[int] = 100


class CaAdamFashionMNIST(CaAdamResNet20):
    name: ClassVar[str] = "caadam_fmnist_resnet20"
    dataset: ClassVar[str] = "fmnist"
    num_classes: ClassVar[int] = 10


@dataclass
class CaAdamCaliforniaMLP(Problem):
    """Dense(u, relu)... Dense(1) on standardized California Housing (smoke: scikit-learn's diabetes)."""

    name: ClassVar[str] = "caadam_california_mlp"
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "mae": False}
    hidden: str = "64,32"
    validation_split: float = 0.2

    def __post_init__(self):
        self.units = parse_hidden(self.hidden)

    def data_args(self) -> dict:
        return {"validation_split": self.validation_split}

    def load_splits(self) -> dict[str, Split]:
        if self.scale == "full":
            a = load_source("california_housing", ("x_train", "y_train", "x_test", "y_test"))
            x, y, x_test, y_test = (np.asarray(a[k], dtype=np.float64) for k in ("x_train", "y_train", "x_test", "y_test"))
        else:
            from sklearn.datasets import load_diabetes

            xs, ys = load_diabetes(return_X_y=True)
            order = fixed_permutation(len(xs)).numpy()
            xs, ys = xs[order], ys[order]
            cut = int(len(xs) * 0.8)  # keras.datasets test_split=0.2
            x, y, x_test, y_test = xs[:cut], ys[:cut], xs[cut:], ys[cut:]
        # StandardScaler (population std) fitted on the whole training set, X and y alike.
        x_mean, x_std = x.mean(0), x.std(0)
        y_mean, y_std = y.mean(), y.std()
        as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        return keras_splits(as_tensor((x - x_mean) / x_std), as_tensor((y - y_mean) / y_std),
                            as_tensor((x_test - x_mean) / x_std), as_tensor((y_test - y_mean) / y_std),
                            self.validation_split)

    def build_model(self) -> KerasMLP:
        in_features = self.splits()["train"].tensors[0].shape[1]  # 8 (California) or 10 (diabetes)
        return KerasMLP(in_features, self.units)

    def forward(self, model, batch, carry=None) -> Output:
        x, y = batch
        err = model(x).squeeze(-1) - y
        se = err.square()
        return Output(loss=se.mean(), sums={"loss": se.sum().detach(), "mae": err.abs().sum().detach()}, count=len(y))
