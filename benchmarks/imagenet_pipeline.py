"""ImageNet JPEG pipeline throughput: decode + augment images/s of `JpegFileSplit` (optrepro.problems.imagenet)
with 1 and 2 threads, on generated ImageNet-like JPEGs (sizes 500x375 / 375x500 / 500x333 / 400x400 /
640x480, quality 90, about ImageNet's 110 kB average), and how much of a batch the prefetch hides behind a
simulated training step.

    python benchmarks/imagenet_pipeline.py [--images 256] [--batch 64] [--threads 1 2]

Each row decodes every image once per pass (prefetch off, so the number is the raw decode + transform rate),
best of `--passes` passes. No ImageNet is needed; real ImageNet JPEGs decode at a similar rate per pixel.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from optrepro.problems.imagenet import JpegFileSplit, JpegTransform

SIZES = [(500, 375), (375, 500), (500, 333), (400, 400), (640, 480)]


def make_jpegs(directory: Path, count: int) -> list[str]:
    rng = np.random.RandomState(0)
    paths = []
    for k in range(count):
        w, h = SIZES[k % len(SIZES)]
        coarse = rng.uniform(0, 255, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC)).astype(np.int16)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)  # texture
        path = directory / f"{k:05d}.JPEG"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def rate(split: JpegFileSplit, batch: int, training: bool, passes: int) -> tuple[float, float]:
    """Images/s of the best pass, and the process's CPU seconds per wall second in that pass (above 1: the
    threads decode in parallel; on a shared machine it is capped by what other processes leave)."""
    best, busy = float("inf"), 0.0
    for p in range(passes):
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, len(split), batch):
            index = torch.arange(first, min(first + batch, len(split)))
            split.batch(index, torch.Generator().manual_seed(p * 1000 + first) if training else None)
        wall = time.perf_counter() - start
        if wall < best:
            best, busy = wall, (time.process_time() - cpu) / wall
    return len(split) / best, busy


def hidden_fraction(paths, labels, transform, threads: int, batch: int, step_s: float) -> tuple[float, float]:
    """Mean seconds the loop waits for a batch with and without prefetch while each step takes `step_s`."""
    waits = []
    for prefetch in (0, 2):
        split = JpegFileSplit(paths, labels, transform, threads=threads, prefetch=prefetch)
        order = split.order(torch.Generator().manual_seed(0))
        total, steps = 0.0, len(paths) // batch
        for step in range(steps):
            start = time.perf_counter()
            split.batch(order[step * batch:(step + 1) * batch], torch.Generator().manual_seed(step))
            total += time.perf_counter() - start
            time.sleep(step_s)  # the GPU step: releases the GIL, as a CUDA-bound loop mostly does
        waits.append(total / steps)
        split.close()
    return waits[0], waits[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--step-s", type=float, default=0.0, help="simulated step for the prefetch row (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        size_kb = np.mean([Path(p).stat().st_size for p in paths]) / 1024
        print(f"{args.images} JPEGs, mean {size_kb:.0f} kB; batch {args.batch}")
        print("| pipeline | threads | images/s | CPU s / wall s |")
        print("|---|---:|---:|---:|")
        labels = np.zeros(len(paths), dtype=np.int64)
        rows = (("train RandomResizedCrop 224 + flip", JpegTransform(224, 256), True),
                ("train Resize 256 + RandomCrop 224 + flip (ALSALS)", JpegTransform(224, 256, "resize_random"), True),
                ("eval Resize 256 + CenterCrop 224", JpegTransform(224, 256), False),
                ("train RandomResizedCrop 300 bicubic (fuzzy B3)", JpegTransform(300, 320, interpolation="bicubic"),
                 True))
        for name, transform, training in rows:
            for threads in args.threads:
                split = JpegFileSplit(paths, labels, transform, threads=threads, prefetch=0)
                images_per_s, busy = rate(split, args.batch, training, args.passes)
                print(f"| {name} | {threads} | {images_per_s:.0f} | {busy:.2f} |", flush=True)
                split.close()
        if args.step_s > 0:
            threads = max(args.threads)
            plain, ahead = hidden_fraction(paths, labels, JpegTransform(224, 256), threads, args.batch, args.step_s)
            print(f"wait per batch with a {args.step_s} s step, {threads} threads: {plain:.3f} s without prefetch, "
                  f"{ahead:.3f} s with prefetch 2")


if __name__ == "__main__":
    main()
