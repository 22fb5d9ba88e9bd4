"""Cost per step of the optimizers that evaluate the loss more than once (line searches, the fuzzy method).

    python benchmarks/closure_cost.py                          # sls adasls adamsls alsals fuzzy_second_order
    python benchmarks/closure_cost.py sls alsals --steps 100   # a subset
    python benchmarks/closure_cost.py --torch-closure          # hand the optimizers torch's closure() form

Each optimizer trains the digits MLP (problem "digits_mlp", smoke scale: 64-64-10, real data) with batch 128 for
`--steps` steps, as src/optrepro/train.py drives it: a StepClosure per step (one micro-batch, replayed noise),
`optimizer.step(closure)`, registry defaults with `total_steps` filled in from the run length. The closure's
counters give the passes; the cost unit is docs/replication.md's "Equal compute" one: forward+backward = 1,
forward-only = 1/3. Prints a markdown table per optimizer: mean / median / max units per step, the same over the
first 10% of steps (line searches backtrack most at the start), forward and backward passes per step, and
seconds per step (closure included), also as a ratio to torch's Adam (one forward+backward and a fused Adam
step, timed in the same process, interleaved). With --torch-closure the optimizers get torch's zero-argument
form (`lambda: closure()`), which back-propagates at every trial point: the counters show what that costs.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from optrepro import optim, problems
from optrepro.closure import NoiseRNG, StepClosure

DEFAULT_NAMES = ("sls", "adasls", "adamsls", "alsals", "fuzzy_second_order")


def cost_units(forward_passes: int, backward_passes: int) -> float:
    """forward+backward = 1, forward-only = 1/3 (every backward pass has its forward)."""
    return backward_passes + (forward_passes - backward_passes) / 3


class Run:
    """One optimizer on a fresh copy of the problem's model (same init for every optimizer)."""

    def __init__(self, name: str, problem, steps: int, batch_size: int, seed: int, torch_closure: bool = False):
        self.torch_closure = torch_closure
        self.name, self.problem = name, problem
        torch.manual_seed(seed)
        self.model = problem.build_model()
        self.model.train()
        self.trial_batchnorm, self.noise = "frozen", NoiseRNG("cpu")
        if name == "torch_adam":
            self.optimizer, self.closure_based = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True), False
        else:
            info = optim.info(name)  # unknown names fail here, with the valid choices
            hparams = info.fill_run_length({}, steps)
            self.optimizer = optim.build(name, self.model, **hparams)
            self.closure_based = info.requires_closure
            self.trial_batchnorm = info.trial_batchnorm_for(hparams)
        self.train = problem.splits()["train"]
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size
        self.step_index = 0
        self.units: list[float] = []
        self.forward: list[int] = []
        self.backward: list[int] = []
        self.seconds: list[float] = []

    def step(self) -> None:
        index = torch.randint(len(self.train), (self.batch_size,), generator=self.generator)
        batch = self.train.batch(index)
        start = time.perf_counter()
        closure = StepClosure(self.model, self.problem.forward, [batch], trial_batchnorm=self.trial_batchnorm,
                              noise=self.noise if self.closure_based else None)
        if self.closure_based:
            self.optimizer.step((lambda: closure()) if self.torch_closure else closure)
        else:
            closure()
            self.optimizer.step()
        self.seconds.append(time.perf_counter() - start)
        self.forward.append(closure.forward_passes)
        self.backward.append(closure.backward_passes)
        self.units.append(cost_units(closure.forward_passes, closure.backward_passes))
        self.step_index += 1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(DEFAULT_NAMES), help="registered optimizer names")
    parser.add_argument("--steps", type=int, default=300, help="steps per optimizer (default 300)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64, help="digits MLP width (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--torch-closure", action="store_true",
                        help="hand the optimizers torch's zero-argument closure form instead of closure(backward)")
    args = parser.parse_args(argv)
    for name in args.names:
        optim.info(name)  # refuse unknown names before any compute
    torch.set_num_threads(args.threads)
    problem = problems.get("digits_mlp", "smoke", hidden=args.hidden)
    runs = [Run(name, problem, args.steps, args.batch_size, args.seed, args.torch_closure)
            for name in ["torch_adam", *args.names]]
    for _ in range(args.steps):  # interleaved step by step, so load from other processes hits all alike
        for run in runs:
            run.step()

    adam_seconds = statistics.median(runs[0].seconds)
    head = max(1, args.steps // 10)
    print(f"digits_mlp (smoke, hidden {args.hidden}), batch {args.batch_size}, {args.steps} steps, seed {args.seed}, "
          f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}\n")
    print("units: forward+backward = 1, forward-only = 1/3; seconds: median per step, closure included; "
          f"torch Adam (fused) = one forward+backward + its step, {adam_seconds * 1e3:.2f} ms\n")
    print(f"| optimizer | units/step mean | median | max | mean, first {head} steps | forward/step | "
          f"backward/step | ms/step | / torch Adam step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        seconds = statistics.median(run.seconds)
        print(f"| {run.name} | {statistics.mean(run.units):.3f} | {statistics.median(run.units):.3f} | "
              f"{max(run.units):.3f} | {statistics.mean(run.units[:head]):.3f} | "
              f"{statistics.mean(run.forward):.2f} | {statistics.mean(run.backward):.2f} | "
              f"{seconds * 1e3:.2f} | {seconds / adam_seconds:.2f} |")


if __name__ == "__main__":
    main()
