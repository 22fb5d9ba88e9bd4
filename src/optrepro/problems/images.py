"""Image classification with library models: ALSALS (ResNet-34/50 CIFAR), fuzzy (EfficientNet-B3 TinyImageNet) and
NOS (search ConvNet on CIFAR-10; EfficientNetV2-S on CIFAR-100, TinyImageNet, Flowers102, Cars, Caltech101).

One class, `ImageClassification`; each problem is a subclass naming its source, model, augmentation and
normalisation. Images are decoded once into uint8 NCHW tensors; augmentation (random crop with padding,
flip, cutout) runs vectorised on the batch's device with the loop's generator; resizing (for EfficientNets)
and normalisation happen in `forward`, so evaluation batches get them too.

ImageNet-1k is the exception at full scale: its JPEG files are decoded per batch (optrepro.problems.imagenet).

Smoke scale: 16x16 images (scikit-learn digits for 10 classes, generated templates otherwise) and the same
model families at toy size (torchvision ResNet(BasicBlock, [1,1,1,1]), timm test_efficientnet, ConvNet base 8).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optrepro.problems.base import EpochSample, Output, Problem, Split, classification_output, data_root
from optrepro.problems.models.keras_nets import NOSConvNet
from optrepro.problems.models.library import timm_model, torchvision_resnet
from optrepro.problems.sources import (digits_images, fixed_permutation, labels, load_source, nhwc_to_nchw,
                                       synthetic_images)
from optrepro.problems.tf_compat import random_crop, random_cutout, random_flip

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the ALSALS authors' transform
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # timm tf_efficientnetv2_s.in1k pretrained_cfg mean and std


def encoded_images(arrays: dict[str, np.ndarray], split: str, size: int) -> np.ndarray:
    """Decode an encoded-image split (Flowers102, Cars, Caltech101): shorter side to `size`, centre crop,
    uint8 NHWC. Done once per process."""
    from PIL import Image

    from optrepro.data import decode_image

    count = len(arrays[f"offsets_{split}"]) - 1
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        image = Image.fromarray(decode_image(arrays, split, i))
        scale = size / min(image.size)
        w, h = max(size, round(image.size[0] * scale)), max(size, round(image.size[1] * scale))
        image = image.resize((w, h), Image.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        out[i] = np.asarray(image.crop((left, top, left + size, top + size)))
    return out


@dataclass
class ImageClassification(Problem):
    source: ClassVar[str] = ""
    num_classes: ClassVar[int] = 10
    train_key: ClassVar[str] = "train"
    test_key: ClassVar[str] = "test"
    valid_size: ClassVar[int] = 5000  # a fixed hold-out from the training split
    holdout: ClassVar[str] = "last"  # "last": the END of the training split; "random": a fixed permutation first
    valid_from_test: ClassVar[bool] = False  # True: valid = test (the paper reports test curves, no selection)
    crop_padding: ClassVar[int] = 4
    pad_mode: ClassVar[str] = "constant"
    flip: ClassVar[bool] = True
    cutout: ClassVar[int] = 0
    mean: ClassVar[tuple[float, ...]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = IMAGENET_STD
    image_size: int = 0  # full scale: forward resizes to this (bilinear) when > 0; smoke keeps the stored size
    label_smoothing: float = 0.0

    def data_args(self) -> dict:
        return {}

    # --- data -------------------------------------------------------------------------------------
    def full_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        keys = (f"x_{self.train_key}", f"y_{self.train_key}", f"x_{self.test_key}", f"y_{self.test_key}")
        a = load_source(self.source, keys)
        return tuple(a[k] for k in keys)

    def smoke_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self.num_classes == 10:
            x, y = digits_images(16, 3)
        else:
            x, y = synthetic_images(400, self.num_classes, 16, 3, seed=self.num_classes)
        order = fixed_permutation(len(x)).numpy()[:400]
        x, y = x[order], y[order]
        return x[:320], y[:320], x[320:], y[320:]

    def load_splits(self) -> dict[str, Split]:
        x, y, x_test, y_test = self.full_arrays() if self.scale == "full" else self.smoke_arrays()
        x, y, x_test, y_test = nhwc_to_nchw(x), labels(y), nhwc_to_nchw(x_test), labels(y_test)
        test = Split(x_test, y_test)
        if self.valid_from_test:
            return {"train": Split(x, y, transform=self.augment), "valid": test, "test": test}
        if self.holdout == "random":  # class-sorted sources (TinyImageNet): hold out a seed-free random subset
            order = fixed_permutation(len(x))
            x, y = x[order], y[order]
        cut = len(x) - (self.valid_size if self.scale == "full" else 64)
        return {"train": Split(x[:cut], y[:cut], transform=self.augment), "valid": Split(x[cut:], y[cut:]),
                "test": test}

    def augment(self, batch: tuple[torch.Tensor, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        x = batch[0].float()
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator, self.pad_mode)
        if self.flip:
            x = random_flip(x, generator)
        if self.cutout:
            x = random_cutout(x, self.cutout, generator)
        return (x,) + tuple(batch[1:])

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0  # uint8 (evaluation) or augmented float on the 0..255 scale
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        x = (x - mean) / std
        if self.scale == "full" and self.image_size and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x

    def forward(self, model, batch, carry=None) -> Output:
        x, y = batch
        logits = model(self.inputs(x))
        out = classification_output(logits, y)
        if self.label_smoothing:
            out.loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return out


# --- ALSALS (the authors' run scripts): ResNet from scratch on CIFAR, 12 epochs, micro-batch 128 x 2 ------
@dataclass
class ALSALSCifar10ResNet34(ImageClassification):
    """torchvision ResNet from scratch (ImageNet stem); RandomCrop(32, pad 4) + flip; the authors' CIFAR
    normalisation. `depth` 34 (the default, as the follow-up SaLSa table labels these runs) or 50 (the authors'
    run scripts build `resNet50`, HF ResNetModel(ResNetConfig())); 18 too. Smoke: one block per stage of the same
    block type (BasicBlock for 18/34, Bottleneck for 50). valid = test by default, as the authors ran it (they
    report test curves and select nothing); `valid_images=N` holds N training images out instead (a fixed random
    subset, independent of every run seed), for tuning."""

    name: ClassVar[str] = "alsals_cifar10_resnet34"
    source: ClassVar[str] = "cifar10"
    num_classes: ClassVar[int] = 10
    mean: ClassVar[tuple[float, ...]] = CIFAR_MEAN
    std: ClassVar[tuple[float, ...]] = CIFAR_STD
    depths: ClassVar[tuple[int, ...]] = (18, 34, 50)
    depth: int = 34
    valid_images: int = 0

    def __post_init__(self):
        if self.depth not in self.depths:
            from optrepro.registry import unknown

            raise unknown(f"ResNet depth of problem {self.name!r}", self.depth, [str(d) for d in self.depths])
        if self.valid_images < 0:
            raise ValueError(f"valid_images must be >= 0 (0: validate on the test set), got {self.valid_images}")

    def data_args(self) -> dict:
        return {"valid_images": self.valid_images}

    def load_splits(self) -> dict[str, Split]:
        x, y, x_test, y_test = self.full_arrays() if self.scale == "full" else self.smoke_arrays()
        x, y, x_test, y_test = nhwc_to_nchw(x), labels(y), nhwc_to_nchw(x_test), labels(y_test)
        test = Split(x_test, y_test)
        if not self.valid_images:
            return {"train": Split(x, y, transform=self.augment), "valid": test, "test": test}
        from optrepro.problems.imagenet import holdout_split

        kept, held = (torch.from_numpy(r) for r in holdout_split(len(x), self.valid_images))
        return {"train": Split(x[kept], y[kept], transform=self.augment), "valid": Split(x[held], y[held]),
                "test": test}

    def build_model(self) -> nn.Module:
        if self.scale == "full":
            return torchvision_resnet(self.depth, self.num_classes)
        if self.depth == 50:
            from torchvision.models import resnet

            return resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=self.num_classes)
        return torchvision_resnet(10, self.num_classes)


@dataclass
class ALSALSCifar100ResNet34(ALSALSCifar10ResNet34):
    name: ClassVar[str] = "alsals_cifar100_resnet34"
    source: ClassVar[str] = "cifar100"
    num_classes: ClassVar[int] = 100


# --- fuzzy (our protocol; the paper's could not be read): EfficientNet-B3 from scratch on TinyImageNet ----
class FuzzyTinyImageNetEfficientNetB3(ImageClassification):
    """timm efficientnet_b3 (pretrained=False) on TinyImageNet 64x64; valid = 10,000 training images (fixed),
    test = the official 10,000 validation images; crop (pad 4) + flip; ImageNet normalisation."""

    name: ClassVar[str] = "fuzzy_tinyimagenet_effb3"
    source: ClassVar[str] = "tiny_imagenet"
    num_classes: ClassVar[int] = 200
    test_key: ClassVar[str] = "val"
    valid_size: ClassVar[int] = 10_000
    holdout: ClassVar[str] = "random"

    def build_model(self) -> nn.Module:
        if self.scale == "full":
            return timm_model("efficientnet_b3", self.num_classes)
        return timm_model("test_efficientnet", self.num_classes)


# --- NOS (NeuralOptimizerSearch.py fitness functions; arXiv 2404.06679 abstract) ------------------------
@dataclass
class NOSCifar10ConvNet(ImageClassification):
    """The search's `fitness_function_init` surrogate: ConvNet(base 32), images in [0, 1], no augmentation;
    Keras CIFAR-10 train images 0..44,999 train and 45,000..49,999 validate."""

    name: ClassVar[str] = "nos_cifar10_convnet"
    source: ClassVar[str] = "cifar10"
    crop_padding: ClassVar[int] = 0
    flip: ClassVar[bool] = False
    mean: ClassVar[tuple[float, ...]] = (0.0, 0.0, 0.0)
    std: ClassVar[tuple[float, ...]] = (1.0, 1.0, 1.0)
    base: ClassVar[int] = 32
    # the search's early kills read the training accuracy after every 200-step epoch: a fixed 5,000 images
    # (evaluated as a whole pass they would cost more than the epoch's training)
    train_eval_size: ClassVar[int | None] = 5000
    # > 0: an epoch is this many examples (the search's 200 or 400 steps of 128), drawn as EpochSample does
    epoch_examples: int = 0

    def data_args(self) -> dict:
        return {"epoch_examples": self.epoch_examples} if self.epoch_examples else {}

    def splits(self) -> dict[str, Split]:
        if not self.epoch_examples:
            return super().splits()
        whole = replace(self, epoch_examples=0).splits()  # loaded once, shared by every epoch length
        return {**whole, "train": EpochSample(whole["train"], self.epoch_examples)}

    def build_model(self) -> nn.Module:
        return NOSConvNet(self.base if self.scale == "full" else 8, self.num_classes)


class NOSCifar10ConvNetEvolution(NOSCifar10ConvNet):
    """`fitness_function_evolution` surrogate: ConvNet(base 48), per-channel standardisation (training-set
    statistics), reflect-pad 4 + random crop + flip + 8x8 cutout (zeros after standardisation = the mean)."""

    name: ClassVar[str] = "nos_cifar10_convnet48"
    crop_padding: ClassVar[int] = 4
    pad_mode: ClassVar[str] = "reflect"
    flip: ClassVar[bool] = True
    cutout: ClassVar[int] = 8
    base: ClassVar[int] = 48

    def load_splits(self) -> dict[str, Split]:
        splits = super().load_splits()
        x = splits["train"].tensors[0].float() / 255.0
        mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True)
        standardize = lambda s: Split(((s.tensors[0].float() / 255.0 - mean) / std).contiguous(), s.tensors[1],  # noqa: E731
                                      transform=s.transform)
        return {k: standardize(s) for k, s in splits.items()}

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x  # standardised once in load_splits; cutout zeros must mean "the channel mean"


class NOSEfficientNetV2S(ImageClassification):
    """EfficientNetV2-S (timm tf_efficientnetv2_s: TF "same" padding, BN eps 1e-3) trained from scratch at
    `image_size` (resized in forward); crop + flip; the in1k checkpoint's normalisation (mean = std = 0.5)."""

    name: ClassVar[str] = "nos_cifar100_effv2s"
    source: ClassVar[str] = "cifar100"
    num_classes: ClassVar[int] = 100
    pretrained: ClassVar[bool] = False
    mean: ClassVar[tuple[float, ...]] = HALF
    std: ClassVar[tuple[float, ...]] = HALF
    image_size: int = 224

    def build_model(self) -> nn.Module:
        if self.scale != "full":
            return timm_model("test_efficientnet", self.num_classes)
        weights = None
        if self.pretrained:
            from optrepro.data import weights_file

            weights = weights_file("efficientnetv2_s_in1k", root=data_root())
        return timm_model("tf_efficientnetv2_s", self.num_classes, weights_file=weights)


class NOSTinyImageNetEfficientNetV2S(NOSEfficientNetV2S):
    name: ClassVar[str] = "nos_tinyimagenet_effv2s"
    source: ClassVar[str] = "tiny_imagenet"
    num_classes: ClassVar[int] = 200
    test_key: ClassVar[str] = "val"
    valid_size: ClassVar[int] = 10_000
    holdout: ClassVar[str] = "random"


class NOSFineTune(NOSEfficientNetV2S):
    """Fine-tuning from the ImageNet-1k EfficientNetV2-S checkpoint (local weights source) on an encoded-JPEG
    dataset decoded once at 256 (shorter side, centre crop); random crop (pad 16) + flip; forward resizes."""

    pretrained: ClassVar[bool] = True
    crop_padding: ClassVar[int] = 16
    stored_size: ClassVar[int] = 256

    def full_arrays(self):
        a = load_source(self.source, (f"offsets_{self.train_key}", f"y_{self.train_key}"))
        if self.train_key == self.test_key:  # Caltech101: one split; a fixed 80/20 cut (our choice)
            x, y = encoded_images(a, "all", self.stored_size), np.asarray(a["y_all"])
            order = fixed_permutation(len(x)).numpy()
            cut = int(0.8 * len(x))
            return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
        return (encoded_images(a, self.train_key, self.stored_size), a[f"y_{self.train_key}"],
                encoded_images(a, self.test_key, self.stored_size), a[f"y_{self.test_key}"])


class NOSFlowers102(NOSFineTune):
    name: ClassVar[str] = "nos_flowers102_effv2s"
    source: ClassVar[str] = "flowers102"
    num_classes: ClassVar[int] = 102
    valid_size: ClassVar[int] = 1020  # Flowers102 publishes train (1020) + val (1020): see load_splits

    def full_arrays(self):
        a = load_source(self.source, ("offsets_train", "offsets_val", "offsets_test"))
        size = self.stored_size
        x = np.concatenate([encoded_images(a, "train", size), encoded_images(a, "val", size)])
        y = np.concatenate([a["y_train"], a["y_val"]])
        return x, y, encoded_images(a, "test", size), a["y_test"]  # the last 1020 (= official val) validate


class NOSStanfordCars(NOSFineTune):
    name: ClassVar[str] = "nos_cars_effv2s"
    source: ClassVar[str] = "stanford_cars"
    num_classes: ClassVar[int] = 196
    valid_size: ClassVar[int] = 1000
    holdout: ClassVar[str] = "random"


class NOSCaltech101(NOSFineTune):
    name: ClassVar[str] = "nos_caltech101_effv2s"
    source: ClassVar[str] = "caltech101"
    num_classes: ClassVar[int] = 101
    train_key: ClassVar[str] = "all"
    test_key: ClassVar[str] = "all"
    valid_size: ClassVar[int] = 500


# --- ImageNet (ALSALS and fuzzy protocols): JPEG files decoded per batch ---------------------------------
@dataclass
class ImageNetProblem(ImageClassification):
    """ImageNet-1k (ALSALS ResNet-50, fuzzy EfficientNet-B3). Full scale streams the verified file index through
    `optrepro.problems.imagenet.JpegFileSplit` (decode + augment per batch in a thread pool, prefetching the next
    batches): `train_crop` "random_resized" (RandomResizedCrop) or "resize_random" (Resize + RandomCrop), flip;
    evaluation Resize + CenterCrop. `image_size` 0 means the class's `crop_size`; the evaluation resize keeps the
    class's crop/resize ratio. Test = ImageNet's validation set; valid = `valid_images` training images held out
    by a fixed permutation, or the test set when 0. Smoke scale runs the same model family on generated 16x16
    images (1000 classes) from tensors, as every other image problem (its augmentation: crop pad 4 + flip)."""

    num_classes: ClassVar[int] = 1000
    source: ClassVar[str] = "imagenet"
    # Train metrics on the first 50,000 training images (the size of the validation set): evaluating all
    # 1.28 M every epoch would double the data cost.
    train_eval_size: ClassVar[int | None] = 50_000
    crop_size: ClassVar[int] = 224
    eval_resize: ClassVar[int] = 256
    interpolation: ClassVar[str] = "bilinear"
    train_crop: str = "random_resized"
    valid_images: int = 0

    def __post_init__(self):
        self.pipeline()  # refuses an unknown train_crop or a bad image_size at every scale, before any data
        if self.valid_images < 0:
            raise ValueError(f"valid_images must be >= 0 (0: validate on the test set), got {self.valid_images}")

    def data_args(self) -> dict:
        return {"image_size": self.image_size, "train_crop": self.train_crop, "valid_images": self.valid_images}

    def pipeline(self):
        from optrepro.problems.imagenet import JpegTransform

        size = self.image_size or self.crop_size
        return JpegTransform(size=size, resize=int(round(size * self.eval_resize / self.crop_size)),
                             train_crop=self.train_crop, interpolation=self.interpolation)

    def load_splits(self) -> dict[str, Split]:
        if self.scale != "full":
            return super().load_splits()
        from optrepro.problems.imagenet import imagenet_splits

        return imagenet_splits(self.pipeline(), self.valid_images)


@dataclass
class ALSALSImageNetResNet50(ImageNetProblem):
    """The ALSALS authors' data.py (getImageNet): Resize 256 + RandomCrop 224 + flip; Resize 256 + CenterCrop 224
    for test; ImageNet normalisation; valid = test, as the ALSALS CIFAR problems (no selection)."""

    name: ClassVar[str] = "alsals_imagenet_resnet50"
    train_crop: str = "resize_random"

    def build_model(self) -> nn.Module:
        return torchvision_resnet(50 if self.scale == "full" else 10, self.num_classes)


@dataclass
class FuzzyImageNetEfficientNetB3(ImageNetProblem):
    """Our protocol (the paper's could not be read): EfficientNet-B3's 300 px, torchvision's B3 evaluation transform
    (Resize 320 bicubic + CenterCrop 300), RandomResizedCrop(300) + flip, valid = 10,000 training images."""

    name: ClassVar[str] = "fuzzy_imagenet_effb3"
    crop_size: ClassVar[int] = 300
    eval_resize: ClassVar[int] = 320
    interpolation: ClassVar[str] = "bicubic"
    valid_images: int = 10_000

    def build_model(self) -> nn.Module:
        return timm_model("efficientnet_b3" if self.scale == "full" else "test_efficientnet", self.num_classes)
