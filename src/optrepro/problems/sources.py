"""Where problems get their arrays: verified full-scale sources (optrepro.data) and offline smoke stand-ins.

Full scale calls `optrepro.data.load_arrays(source, root)` (imported lazily, so smoke never needs it) and
checks the keys it needs. Smoke scale uses real data bundled offline where it exists (scikit-learn's digits
and diabetes, their English DESCR texts) and small generated data of the right shape otherwise; everything
is drawn from fixed seeds, independent of every run seed.
"""
from __future__ import annotations

import numpy as np
import torch

from optrepro.problems.base import data_root


def load_source(source: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays of a verified data source, with a clear error when a key the problem needs is missing."""
    from optrepro.data import load_arrays  # lazy: the data package is only needed at full scale

    arrays = load_arrays(source, root=data_root())
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise KeyError(f"data source {source!r} lacks arrays {missing}; it has {sorted(arrays)}")
    return arrays


def nhwc_to_nchw(x: np.ndarray) -> torch.Tensor:
    """uint8 images NHWC (or NHW for grey) -> contiguous uint8 tensor NCHW (decoded once, kept compact)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y).reshape(-1).astype(np.int64))


def keras_validation_split(n: int, fraction: float) -> int:
    """Keras `validation_split`: the LAST `fraction` of the arrays, unshuffled. Returns the split index."""
    return int(n * (1.0 - fraction))


# --- smoke stand-ins ------------------------------------------------------------------------------
def digits_images(size: int = 8, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits as uint8 NHWC images 0..255, nearest-upsampled to `size` (real data)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    img = np.round(x.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    if size != 8:
        index = (np.arange(size) * 8) // size
        img = img[:, index][:, :, index]
    img = np.repeat(img[..., None], channels, axis=-1)
    return img, y.astype(np.int64)


def synthetic_images(n: int, classes: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable generated images: one random smooth template per class plus noise, uint8 NHWC."""
    rng = np.random.RandomState(seed)
    coarse = rng.uniform(0, 255, (classes, 4, 4, channels))
    index = (np.arange(size) * 4) // size
    templates = coarse[:, index][:, :, index]
    y = rng.randint(0, classes, n)
    x = templates[y] + rng.normal(0, 40, (n, size, size, channels))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def english_text() -> str:
    """A few kB of real English text available offline: scikit-learn's dataset descriptions."""
    from sklearn import datasets

    loaders = (datasets.load_digits, datasets.load_diabetes, datasets.load_iris, datasets.load_wine,
               datasets.load_breast_cancer, datasets.load_linnerud)
    return "\n".join(loader().DESCR for loader in loaders)


def fixed_permutation(n: int, seed: int = 0) -> torch.Tensor:
    """A permutation independent of every run seed (fixed data splits)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
