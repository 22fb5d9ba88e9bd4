"""Seconds per epoch of Crowded Valley's image problems at full size on generated data, through the loop the runs
use (the Crowded Valley section's device check; `python benchmarks/gpu_check.py epochs`).

    python benchmarks/epoch_time.py                                   # fmnist_2c2d and cifar10_3c3d, adam, CUDA
    python benchmarks/epoch_time.py --device cpu --problems fmnist_2c2d --examples 2000

Each problem's own loading path runs on uniformly random uint8 images of the real dataset's shape and size
(Fashion-MNIST 60,000 + 10,000 of 28x28, CIFAR-10 50,000 + 10,000 of 32x32x3; `--examples` shrinks the training
set, for a CPU) instead of reading data/. An epoch is the problem's: its batch size (128), its validation split
carved from the training images, its augmentation. The table gives the fastest of `--repeats` training epochs
(optrepro.train.Trainer.train_step, warm-up excluded), one evaluation of every split (Trainer.evaluate_all, as
after every epoch), the projected full run (epochs x (epoch + evaluation) + the evaluation before training), and
the cost per epoch the problem's registry entry declares (what run batching plans with).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_pipeline import sync  # noqa: E402

import optrepro.problems.deepobs as deepobs  # noqa: E402
from optrepro import problems  # noqa: E402
from optrepro.plan import make_spec  # noqa: E402
from optrepro.train import Trainer  # noqa: E402

# (training images, test images, image shape) of each source, as its prepared arrays hold them
SHAPES = {"fashion_mnist": (60_000, 10_000, (28, 28)), "cifar10": (50_000, 10_000, (32, 32, 3))}
PROBLEMS = ("fmnist_2c2d", "cifar10_3c3d")


def use_generated_images(problem: str, examples: int | None = None) -> None:
    """The DeepOBS problems' full-scale loader returns random images of `problem`'s source, of the real size
    unless `examples` (training images) says otherwise."""
    train, test, shape = SHAPES[type(problems.get(problem, "full")).source]
    rng = np.random.default_rng(0)
    n = examples or train
    arrays = {"x_train": rng.integers(0, 256, (n, *shape), dtype=np.uint8), "y_train": rng.integers(0, 10, n),
              "x_test": rng.integers(0, 256, (test, *shape), dtype=np.uint8), "y_test": rng.integers(0, 10, test)}
    deepobs.load_source = lambda source, keys: {k: arrays[k] for k in keys}


def fastest_epoch(trainer: Trainer, device: str, repeats: int) -> float:
    """The fastest of `repeats` training epochs in seconds (one fixed batch order), after 5 warm-up steps."""
    order = trainer.splits["train"].order(torch.Generator().manual_seed(0))
    for _ in range(5):  # warm-up: first calls allocate
        trainer.train_step(order)
    best = float("inf")
    for _ in range(repeats):
        trainer.step_in_epoch = 0
        sync(device)
        t0 = time.perf_counter()
        while trainer.step_in_epoch < trainer.steps_per_epoch:
            trainer.train_step(order)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def time_epoch(problem: str, optimizer: str, device: str, repeats: int) -> tuple[int, float, float, int]:
    """(steps per epoch, fastest training epoch in s, one evaluation of every split in s, epochs of a run)."""
    spec = make_spec(paper="bench", problem=problem, scale="full", optimizer=optimizer, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(spec, Path(tmp), progress=False)
        best = fastest_epoch(trainer, device, repeats)
        t0 = time.perf_counter()
        trainer.evaluate_all()
        evaluation = time.perf_counter() - t0
        return trainer.steps_per_epoch, best, evaluation, spec["epochs"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--examples", type=int, default=None, help="training images (default: the real count)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"{args.optimizer}, {device}, torch {torch.__version__}, generated data"
          + (f" ({args.examples} training images)" if args.examples else " of the real size"))
    print("| problem | steps / epoch | training epoch (s) | evaluation (s) | projected run (s) | registry cost / epoch (s) |")
    print("|---|---|---|---|---|---|")
    for problem in args.problems:
        use_generated_images(problem, args.examples)
        steps, epoch, evaluation, epochs = time_epoch(problem, args.optimizer, args.device, args.repeats)
        declared = problems.info(problem).cost_per_epoch_s["full"]
        print(f"| {problem} | {steps} | {epoch:.2f} | {evaluation:.2f} | {epochs * (epoch + evaluation) + evaluation:.0f}"
              f" | {declared} |")


if __name__ == "__main__":
    main()
