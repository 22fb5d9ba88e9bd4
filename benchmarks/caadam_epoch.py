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
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_pipeline import PROBLEM, use_generated_cifar10  # noqa: E402
from epoch_time import fastest_epoch  # noqa: E402

from optrepro.plan import make_spec  # noqa: E402
from optrepro.train import Trainer  # noqa: E402

ARMS = [("keras_adam", {}), *[(f"caadam_{s}", {"mode": m}) for s in ("additive", "multiplicative", "depth")
                              for m in ("reference", "described")]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--examples", type=int, default=50000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_generated_cifar10(args.examples)
    rows = []
    for name, hparams in ARMS:
        spec = make_spec(paper="bench", problem=PROBLEM, scale="full", optimizer=name,
                         hparams=hparams, device=args.device, epochs=1, batch_size=64)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(spec, Path(tmp), progress=False)
            best = fastest_epoch(trainer, args.device, args.repeats)
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
