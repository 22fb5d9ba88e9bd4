"""Input pipeline throughput: ResNet-20 (CaAdam's Keras ResNet-20, full size) trained through optrepro's
loop and loaders on generated CIFAR-shaped data, against the same model, optimizer and batch size fed from
tensors already on the device (no indexing, no copies). Target: loop >= 0.9x the pre-staged rate.

    python benchmarks/data_pipeline.py [--device cuda] [--examples 10000] [--steps 100]

The problem's own loading path runs (uint8 NHWC -> float NCHW, mean subtraction, fixed validation split,
splits moved to the device once per process); only the raw arrays are generated instead of read from data/.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optrepro import optim, problems
from optrepro.plan import make_spec
from optrepro.train import Trainer

PROBLEM = "caadam_cifar10_resnet20"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def use_generated_cifar10(examples: int) -> None:
    """Make PROBLEM load `examples` generated CIFAR-shaped training images (uint8 NHWC; 1000 test images)
    through its own loading path instead of reading data/cifar10."""
    rng = np.random.default_rng(0)
    generated = {"x_train": rng.integers(0, 256, (examples, 32, 32, 3), dtype=np.uint8),
                 "y_train": rng.integers(0, 10, examples),
                 "x_test": rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 1000)}
    type(problems.get(PROBLEM, "full")).raw_arrays = lambda self: generated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_generated_cifar10(args.examples)
    spec = make_spec(paper="bench", problem=PROBLEM, scale="full", optimizer="adam",
                     device=args.device, epochs=1, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(spec, Path(tmp), progress=False)
        order = trainer.splits["train"].order(torch.Generator().manual_seed(0))
        steps = min(args.steps, trainer.steps_per_epoch)
        for _ in range(5):  # warm-up (cuDNN autotuning off, but first calls allocate)
            trainer.train_step(order)
        sync(args.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(order)
        sync(args.device)
        loop_rate = steps * args.batch_size / (time.perf_counter() - t0)

    problem = problems.get(PROBLEM, "full")
    torch.manual_seed(0)
    model = problem.build_model().to(args.device)
    opt = optim.build("adam", model)
    x = torch.randn(args.batch_size, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch_size,), device=args.device)
    for i in range(5 + steps):
        if i == 5:
            sync(args.device)
            t0 = time.perf_counter()
        for p in model.parameters():
            p.grad = None
        problem.forward(model, (x, y)).loss.backward()
        opt.step()
    sync(args.device)
    staged_rate = steps * args.batch_size / (time.perf_counter() - t0)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print("| device | batch | steps | loop (images/s) | pre-staged tensors (images/s) | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {name} | {args.batch_size} | {steps} | {loop_rate:.0f} | {staged_rate:.0f} | {loop_rate / staged_rate:.2f} |")


if __name__ == "__main__":
    main()
