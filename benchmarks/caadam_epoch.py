"""Seconds per epoch of CaAdam's ResNet-20 (full size, batch 64) on generated CIFAR-shaped data, through the loop
the runs use (optrepro.train.Trainer.train_step), for Keras's Adam and each CaAdam strategy in both modes; ratios
to Adam measured in the same process.

    python benchmarks/caadam_epoch.py [--device cuda] [--examples 50000] [--repeats 2]

An epoch is the problem's: the first 80 % of the generated training images (Keras's validation_split), batch 64,
the last partial batch dropped; evaluation is not included. The problem's own loading path runs on generated
uint8 arrays instead of data/cifar10 (as benchmarks/data_pipeline.py). The fastest of `repeats` epochs counts.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optrepro import problems
from optrepro.plan import make_spec
from optrepro.train import Trainer

ARMS = [("keras_adam", {}), *[(f"caadam_{s}", {"mode": m}) for s in ("additive", "multiplicative", "depth")
                              for m in ("reference", "described")]]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--examples", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    generated = {"x_train": rng.integers(0, 256, (args.examples, 32, 32, 3), dtype=np.uint8),
                 "y_train": rng.integers(0, 10, args.examples),
                 "x_test": rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 1000)}
    cls = type(problems.get("caadam_cifar10_resnet20", "full"))
    cls.raw_arrays = lambda self: generated  # generated data instead of data/cifar10, same loading path
    rows = []
    for name, hparams in ARMS:
        spec = make_spec(paper="bench", problem="caadam_cifar10_resnet20", scale="full", optimizer=name,
                         hparams=hparams, device=args.device, epochs=1, batch_size=64)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(spec, Path(tmp), progress=False)
            order = trainer.splits["train"].order(torch.Generator().manual_seed(0))
            for _ in range(5):  # warm-up: first calls allocate
                trainer.train_step(order)
            best = float("inf")
            for _ in range(args.repeats):
                trainer.step_in_epoch = 0
                sync(args.device)
                t0 = time.perf_counter()
                while trainer.step_in_epoch < trainer.steps_per_epoch:
                    trainer.train_step(order)
                sync(args.device)
                best = min(best, time.perf_counter() - t0)
        rows.append((name, hparams.get("mode", "-"), trainer.steps_per_epoch, best))
    adam = rows[0][3]
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"ResNet-20 (CIFAR-10 shape), batch 64, {rows[0][2]} steps per epoch, {device}, torch {torch.__version__}")
    print("| optimizer | mode | s / epoch | ratio to keras_adam |")
    print("|---|---|---|---|")
    for name, mode, _, seconds in rows:
        print(f"| {name} | {mode} | {seconds:.2f} | {seconds / adam:.2f} |")


if __name__ == "__main__":
    main()
