"""A short GPT-2 small run on generated tokens, ALSALS against Adam: ALSALS's step-size trace and the cost of a
step in passes and seconds (the ALSALS section's device check; `python benchmarks/gpu_check.py alsals`).

    python benchmarks/alsals_gpt2.py                                      # CUDA, fp32, batch 8 x 1024 tokens
    python benchmarks/alsals_gpt2.py --precision bf16                     # nanoGPT's bf16 autocast instead
    python benchmarks/alsals_gpt2.py --device cpu --batch-size 2 --block-size 64 --steps 3

The problem is the paper's (alsals_gpt2_owt at full scale: GPT-2 small, 124 M parameters, vocabulary 50304,
context `--block-size`), its loading path fed uniformly random token streams instead of OpenWebText. Each arm
trains its own copy of the model from the same initialisation through the loop the runs use
(optrepro.train.Trainer.train_step), with the settings of config/papers/alsals.yaml's gpt2 task: ALSALS with
c 0.3 and clipping 0.25, Adam with lr 6e-4 and beta2 0.95 (constant: a short run has no schedule to speak of),
in fp32 with TF32 off as every arm of the section runs (the step-time bound is checked there).
Steps are interleaved (one of each arm in turn, so drift hits both alike) and timed with a device
synchronisation. Prints, per arm, the median seconds per step after `--warmup`, the mean pass units per step
(forward+backward = 1, forward-only = 1/3, from the loop's counters), the ratio of seconds to Adam's and the
bound ALSALS must meet (its seconds ratio at most 1.1 x its pass units per step); then ALSALS's step size and
backtracks at every step. Random tokens make the loss flat near log(50304), so the trace shows the line search's
mechanics, not a training curve.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from data_pipeline import sync  # noqa: E402

import optrepro.problems.language as language  # noqa: E402
from optrepro.closure import StepClosure  # noqa: E402
from optrepro.plan import make_spec  # noqa: E402
from optrepro.train import Trainer  # noqa: E402

PROBLEM = "alsals_gpt2_owt"
ARMS = {"adam": {"beta2": 0.95, "lr": 6.0e-4}, "alsals": {"c": 0.3, "clip_grad": 0.25}}
VOCAB = 50257  # GPT-2's tokenizer; the model's padded vocabulary (50304) has room for it


def use_generated_tokens(tokens: int) -> None:
    """The problem's full-scale loader returns `tokens` uniform random GPT-2 token ids for train, a tenth for val."""
    rng = np.random.default_rng(0)
    streams = {"train": rng.integers(0, VOCAB, tokens, dtype=np.uint16),
               "val": rng.integers(0, VOCAB, max(tokens // 10, 4096), dtype=np.uint16)}
    language.load_source = lambda source, keys: {k: streams[k] for k in keys}


def units(forward: int, backward: int) -> float:
    return backward + (forward - backward) / 3


def forward_only_share(trainer: Trainer, order: torch.Tensor, device: str, repeats: int) -> float:
    """Median seconds of a forward-only pass over a forward+backward on the same batch (interleaved), as the
    loop's closure runs them."""
    trainer.step_in_epoch = 0  # the run's first batch (training has used them all)
    closure = StepClosure(trainer.model, trainer.forward, trainer.micro_batches(order), params=trainer.params)
    times = {True: [], False: []}
    for _ in range(repeats):
        for backward in (True, False):
            sync(device)
            t0 = time.perf_counter()
            with torch.enable_grad() if backward else torch.no_grad():
                closure(backward=backward)
            sync(device)
            times[backward].append(time.perf_counter() - t0)
    return statistics.median(times[False]) / statistics.median(times[True])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    total = args.warmup + args.steps
    windows = total * args.batch_size
    use_generated_tokens((windows + 2) * args.block_size)
    trainers, seconds, costs, trace = {}, {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, hparams in ARMS.items():
            spec = make_spec(paper="bench", problem=PROBLEM, scale="full", optimizer=name, hparams=hparams,
                             device=args.device, precision=args.precision, epochs=1, batch_size=args.batch_size,
                             grad_accum=1, problem_args={"block_size": args.block_size, "train_windows": windows})
            trainers[name] = Trainer(spec, Path(tmp) / name, progress=False)
            seconds[name], costs[name] = [], []
        orders = {name: t.splits["train"].order(torch.Generator().manual_seed(0)) for name, t in trainers.items()}
        for step in range(total):
            for name, trainer in trainers.items():
                before = (trainer.forward_passes, trainer.backward_passes)
                sync(args.device)
                t0 = time.perf_counter()
                trainer.train_step(orders[name])
                sync(args.device)
                if step >= args.warmup:
                    seconds[name].append(time.perf_counter() - t0)
                    costs[name].append(units(trainer.forward_passes - before[0],
                                             trainer.backward_passes - before[1]))
                if name == "alsals":
                    s = trainer.optimizer.internals()
                    loss = float(trainer.pending_losses[-1])
                    trace.append((step + 1, s["step_size"], s["last_backtracks"], loss))
        forward_share = forward_only_share(trainers["adam"], orders["adam"], args.device, args.steps)
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    adam = statistics.median(seconds["adam"])
    print(f"GPT-2 small ({sum(p.numel() for p in trainers['adam'].model.parameters()) / 1e6:.0f} M parameters) on "
          f"generated tokens, batch {args.batch_size} x {args.block_size} tokens, {args.precision}, {device}, "
          f"torch {torch.__version__}; medians over {args.steps} steps after {args.warmup} warm-up steps")
    print("| arm | s / step | ratio to adam | pass units / step | bound (1.1 x units) | within |")
    print("|---|---|---|---|---|---|")
    for name in ARMS:
        med, cost = statistics.median(seconds[name]), statistics.mean(costs[name])
        bound = 1.1 * cost
        print(f"| {name} | {med:.4f} | {med / adam:.2f} | {cost:.2f} | {bound:.2f} | "
              f"{'yes' if med / adam <= bound else 'NO'} |")
    extra_forward = 3 * (statistics.mean(costs["alsals"]) - 1)  # forward-only passes per ALSALS step
    print(f"\nA forward-only pass (no_grad) takes {forward_share:.2f} of a forward+backward here (the pass unit "
          f"counts 1/3). In measured seconds, ALSALS's {extra_forward:.2f} forward-only passes per step predict "
          f"{1 + extra_forward * forward_share:.2f} x Adam's step; the rest of its {statistics.median(seconds['alsals']) / adam:.2f} "
          f"is the line search's own work (direction, dot products, trial points, host reads of the loss).")
    print("\nALSALS step-size trace (step, step size, backtracks this step, first loss of the step):")
    print("| step | step size | backtracks | loss |")
    print("|---|---|---|---|")
    for step, eta, backtracks, loss in trace:
        print(f"| {step} | {eta:.4g} | {backtracks:.0f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
