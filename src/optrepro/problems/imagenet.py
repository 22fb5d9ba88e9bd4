"""Full-scale ImageNet-1k: a Split over JPEG files, decoded and augmented per batch by a thread pool.

`load_arrays("imagenet")` gives a file index (paths and labels), not pixels: 1.28 M decoded images do not fit
in memory, so `JpegFileSplit` decodes each batch when the training loop asks for it:

    split.order(generator)          -> a permutation (remembered, to know which batch comes next)
    split.batch(index, generator)   -> (uint8 images [n, 3, S, S], int64 labels [n]), augmented
    split.batch(index)              -> the same with the evaluation transform (no randomness)

Determinism: every random number of a batch (crop scale, aspect ratio and position, flip) is drawn from the
loop's generator in the calling thread, in one call, before any image is touched; worker threads only turn
those numbers into pixels given each image's size. A batch is a function of (index, generator seed) alone,
whatever the thread timing, the number of threads, or whether it was prefetched.

Prefetch: after serving a batch, the split queues the decoding of the next `prefetch` batches it predicts: the
next slices of the same length of the last order it handed out (training), or the next contiguous ranges
(evaluation). Decoding does not depend on the generator, so a prediction is keyed on the exact index alone and
augmented when the batch is asked for, with the generator given then; evaluation predictions have no randomness
and are finished completely in the background. A batch that was not predicted is decoded there and then, with
the same result. PIL releases the GIL while it decodes and resamples, so the threads run in parallel.

Transforms follow torchvision (PIL backend): RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) or
Resize(resize) + RandomCrop(size) for training, then a horizontal flip with probability 1/2; Resize(resize) +
CenterCrop(size) for evaluation. Resize-then-crop is one PIL `resize(..., box=...)` call, which computes the
same filter taps as resizing the whole image and cropping afterwards (equal to torchvision's output up to +-1 in
about 0.1 % of the pixels, float rounding), at a fraction of the cost; RandomResizedCrop crops first, as torchvision.
"""
from __future__ import annotations

import math
import os
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from optrepro.problems.base import Split
from optrepro.registry import unknown

TRAIN_CROPS = ("random_resized", "resize_random")  # RandomResizedCrop | Resize + RandomCrop
INTERPOLATIONS = ("bilinear", "bicubic")
ATTEMPTS = 10  # torchvision RandomResizedCrop tries 10 (scale, ratio) draws before its central fallback


class ImageDecodeError(OSError):
    """An image file that PIL cannot read (corrupt, truncated, missing); the message names the file."""


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resized_shape(width: int, height: int, shorter: int) -> tuple[int, int]:
    """torchvision Resize(int): the shorter side becomes `shorter`, the longer is scaled and truncated."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


@dataclass(frozen=True)
class JpegTransform:
    """What happens to one decoded image: the training augmentation and the evaluation transform."""

    size: int = 224  # output side (the crop)
    resize: int = 256  # shorter side before the evaluation centre crop, and before "resize_random"'s random crop
    train_crop: str = "random_resized"
    interpolation: str = "bilinear"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def __post_init__(self):
        if self.train_crop not in TRAIN_CROPS:
            raise unknown("train_crop", self.train_crop, TRAIN_CROPS)
        if self.interpolation not in INTERPOLATIONS:
            raise unknown("interpolation", self.interpolation, INTERPOLATIONS)
        if not 0 < self.size <= self.resize:
            raise ValueError(f"need 0 < size <= resize, got size={self.size}, resize={self.resize}")

    @property
    def draws_per_image(self) -> int:
        """Uniform numbers per image: (scale, log-ratio, row, column) per attempt, or (row, column); + flip."""
        return (4 * ATTEMPTS if self.train_crop == "random_resized" else 2) + 1

    def draw(self, count: int, generator: torch.Generator) -> np.ndarray:
        """All random numbers of a batch, [count, draws_per_image] uniforms in [0, 1), from `generator`."""
        return torch.rand(count, self.draws_per_image, generator=generator, dtype=torch.float64).numpy()

    def train_box(self, width: int, height: int, u: np.ndarray) -> tuple[float, float, float, float]:
        """The source region (left, top, right, bottom) that becomes the training crop, from uniforms `u`."""
        if self.train_crop == "resize_random":
            new_w, new_h = resized_shape(width, height, self.resize)
            top = min(int(u[0] * (new_h - self.size + 1)), new_h - self.size)
            left = min(int(u[1] * (new_w - self.size + 1)), new_w - self.size)
            return _scaled_box(left, top, self.size, width / new_w, height / new_h)
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for attempt in range(ATTEMPTS):
            s, r, ui, uj = u[4 * attempt:4 * attempt + 4]
            target = area * (self.scale[0] + s * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + r * (log_hi - log_lo))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = min(int(ui * (height - h + 1)), height - h)
                left = min(int(uj * (width - w + 1)), width - w)
                return left, top, left + w, top + h
        # torchvision's fallback: the central crop with the aspect ratio clamped to `ratio`
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def eval_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Resize(resize) + CenterCrop(size) as a source region."""
        new_w, new_h = resized_shape(width, height, self.resize)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return _scaled_box(left, top, self.size, width / new_w, height / new_h)

    def apply(self, image, u: np.ndarray | None) -> np.ndarray:
        """A decoded RGB PIL image -> uint8 [3, size, size]; `u` None: the evaluation transform."""
        from PIL import Image

        resample = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
        size = (self.size, self.size)
        if u is not None and self.train_crop == "random_resized":
            # torchvision crops first, so the filter sees only the crop (edge pixels are clamped to it)
            pixels = np.asarray(image.crop(self.train_box(*image.size, u)).resize(size, resample))
        else:  # Resize + crop: the crop of the resized image, computed directly (same filter taps)
            box = self.eval_box(*image.size) if u is None else self.train_box(*image.size, u)
            pixels = np.asarray(image.resize(size, resample, box=box))
        if u is not None and self.flip and u[-1] < 0.5:
            pixels = pixels[:, ::-1]
        return pixels.transpose(2, 0, 1)


def _scaled_box(left: int, top: int, size: int, sx: float, sy: float) -> tuple[float, float, float, float]:
    """A crop of the resized image (integer pixels) mapped back to source coordinates."""
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def decode(path: str):
    """The image at `path` as an RGB PIL image (greyscale and CMYK JPEGs are converted)."""
    from PIL import Image

    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot decode image {path}: {type(error).__name__}: {error}") from error
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass
class _Pending:
    """Work queued for a predicted batch: decoded images (training) or finished pixels in `out` (evaluation)."""

    futures: list[Future]
    out: np.ndarray | None = None  # set when finished (the evaluation transform, no randomness)


class JpegFileSplit(Split):
    """A Split whose examples are image files. `tensors` holds the label tensor only, on the CPU (the loop
    places index tensors on `tensors[0].device`); `to(device)` gives a split whose batches land on `device`."""

    def __init__(self, paths, labels, pipeline: JpegTransform, *, threads: int | None = None, prefetch: int = 2,
                 device: torch.device | str | None = None):
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        paths = np.asarray(paths)
        if len(paths) != len(labels):
            raise ValueError(f"a JpegFileSplit needs one label per path: {len(paths)} paths, {len(labels)} labels")
        if len(paths) == 0:
            raise ValueError("a JpegFileSplit needs at least one image")
        super().__init__(labels)
        self.paths = paths
        self.labels = labels
        self.pipeline = pipeline
        self.threads = threads or available_cpus()
        self.prefetch = prefetch
        self.device = torch.device(device) if device is not None else None
        self.hits = self.misses = 0  # batches served from the prefetch / decoded on demand
        self._pool: ThreadPoolExecutor | None = None
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()
        self._order: np.ndarray | None = None
        self._position: np.ndarray | None = None

    def to(self, device) -> "JpegFileSplit":
        return JpegFileSplit(self.paths, self.labels, self.pipeline, threads=self.threads, prefetch=self.prefetch,
                             device=device)

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jpeg")
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def close(self) -> None:
        """Drop queued work and stop the threads (a later batch starts them again)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def order(self, generator: torch.Generator) -> torch.Tensor:
        order = super().order(generator)
        self._order = order.numpy()
        self._position = np.empty_like(self._order)
        self._position[self._order] = np.arange(len(self._order))
        return order

    # --- batches ----------------------------------------------------------------------------------
    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        return self.batch(torch.arange(start, stop))

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        index = index.detach().cpu().reshape(-1).to(torch.int64)
        rows = index.numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"batch index out of range for a split of {len(self)} images: "
                             f"min {rows.min()}, max {rows.max()}")
        draws = self.pipeline.draw(len(rows), generator) if generator is not None else None
        pending = self._pending.pop(rows.tobytes(), None)
        if pending is not None and pending.out is not None and draws is None:
            self.hits += 1
            jobs, out = pending.futures, pending.out
        else:
            out = self._buffer(len(rows))
            if pending is not None and pending.out is None:
                self.hits += 1
                jobs = [self.pool.submit(self._finish, decoded, None if draws is None else draws[k], out, k)
                        for k, decoded in enumerate(pending.futures)]
            else:  # not predicted (or predicted for evaluation but asked with a generator): decode now
                self.misses += 1
                if pending is not None:
                    _cancel(pending)
                jobs = [self.pool.submit(self._load, int(row), None if draws is None else draws[k], out, k)
                        for k, row in enumerate(rows)]
        self._queue_next(rows)  # after this batch's jobs: the pool is first-in first-out
        for job in jobs:
            job.result()  # re-raises ImageDecodeError naming the file
        images, labels = torch.from_numpy(out), self.labels[index]
        if self.device is not None and self.device.type == "cuda":  # pinned: the copy overlaps the next decode
            images = images.pin_memory().to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        elif self.device is not None:
            images, labels = images.to(self.device), labels.to(self.device)
        return images, labels

    def _buffer(self, count: int) -> np.ndarray:
        return np.empty((count, 3, self.pipeline.size, self.pipeline.size), dtype=np.uint8)

    def _load(self, row: int, u: np.ndarray | None, out: np.ndarray, k: int) -> None:
        out[k] = self.pipeline.apply(decode(str(self.paths[row])), u)

    def _finish(self, decoded: Future, u: np.ndarray | None, out: np.ndarray, k: int) -> None:
        # Waiting inside a worker is safe: `decoded` was submitted before this job, so with a first-in
        # first-out pool some worker has already started it.
        out[k] = self.pipeline.apply(decoded.result(), u)

    # --- prefetch ---------------------------------------------------------------------------------
    def _predict(self, rows: np.ndarray) -> list[tuple[np.ndarray, bool]]:
        """The next batches after `rows`: [(rows, is_evaluation)], at most `prefetch` of them."""
        n = len(rows)
        if n == 0 or self.prefetch <= 0:
            return []
        if self._order is not None:
            start = int(self._position[rows[0]])
            if np.array_equal(self._order[start:start + n], rows):  # a slice of the training order
                ahead = []
                for k in range(1, self.prefetch + 1):
                    if start + (k + 1) * n > len(self._order):  # the loop drops the partial last batch
                        break
                    ahead.append((self._order[start + k * n:start + (k + 1) * n], False))
                return ahead
        if rows[-1] - rows[0] == n - 1 and np.all(np.diff(rows) == 1):  # evaluation: contiguous ranges
            ahead = []
            for k in range(1, self.prefetch + 1):
                first = int(rows[0]) + k * n
                if first >= len(self):
                    break
                ahead.append((np.arange(first, min(first + n, len(self))), True))
            return ahead
        return []

    def _queue_next(self, rows: np.ndarray) -> None:
        for ahead, evaluation in self._predict(rows):
            key = ahead.tobytes()
            if key in self._pending:
                self._pending.move_to_end(key)  # still wanted: not stale
                continue
            if evaluation:
                out = self._buffer(len(ahead))
                futures = [self.pool.submit(self._load, int(row), None, out, k) for k, row in enumerate(ahead)]
                self._pending[key] = _Pending(futures, out)
            else:
                paths = self.paths[ahead]
                self._pending[key] = _Pending([self.pool.submit(decode, str(p)) for p in paths])
        while len(self._pending) > self.prefetch:  # stale predictions (the loop went elsewhere)
            _cancel(self._pending.popitem(last=False)[1])


def _cancel(pending: _Pending) -> None:
    for future in pending.futures:
        future.cancel()


def holdout_split(count: int, valid_images: int, seed: int = 0, what: str = "valid_images"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training index kept for training and held out for validation: a fixed random subset
    (independent of every run seed), both sorted so that evaluation reads folders in order (and other sources
    keep their file order). `what` names the problem argument in the error."""
    if not 0 < valid_images < count:
        raise ValueError(f"{what} must be between 1 and {count - 1} (the training examples), got {valid_images}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(order[:count - valid_images]), np.sort(order[count - valid_images:])


def imagenet_splits(pipeline: JpegTransform, valid_images: int, *, threads: int | None = None,
                    prefetch: int = 2) -> dict[str, JpegFileSplit]:
    """Train/valid/test from the verified ImageNet index: test = ImageNet's validation set (50,000 images);
    valid = `valid_images` training images held out by a fixed permutation, or the test set when 0."""
    from optrepro.problems.sources import load_source

    index = load_source("imagenet", ("train_paths", "train_labels", "val_paths", "val_labels"))
    paths, labels = index["train_paths"], index["train_labels"]
    make = lambda p, y: JpegFileSplit(p, y, pipeline, threads=threads, prefetch=prefetch)  # noqa: E731
    test = make(index["val_paths"], index["val_labels"])
    if valid_images == 0:
        return {"train": make(paths, labels), "valid": test, "test": test}
    train_rows, valid_rows = holdout_split(len(paths), valid_images)
    return {"train": make(paths[train_rows], labels[train_rows]), "valid": make(paths[valid_rows], labels[valid_rows]),
            "test": test}
