"""The training loop's throughput against a plain torch loop doing the same run, in one process, one thread.

    python benchmarks/loop_vs_bare.py [--repeats 5] [--problems quadratic_deep digits_mlp] [--optimizer sgd]

For each problem at full scale (its registry defaults: quadratic_deep 100 epochs of 7 steps, digits_mlp 30
epochs of 18 steps; one evaluation of every split before training and after every epoch), `optrepro.train.train`
runs the spec, and the bare loop below does what a user would write for the same run: the same model (built after
seeding with init_seed), the same data tensors and batch order (torch.randperm per epoch from the loop's
per-epoch seed), zero_grad / backward / step with the same torch optimizer, and evaluation under torch.no_grad
summing the losses on the device in the loop's evaluation batches. The two are timed in interleaved repeats
(after one warm-up each) and must end at the same test loss, which checks that they did the same work.
Prints, per problem, the best time of each and the throughput ratio bare / loop (target: >= 0.8), with the range
of the per-repeat ratios.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from optrepro import optim
from optrepro.plan import make_spec
from optrepro.runner import configure_torch
from optrepro.train import derived_seed, load_result, train

# the loss of a batch as a user would write it for each problem: per-example losses
PER_EXAMPLE = {
    "quadratic_deep": lambda model, x, y: model(x),
    "digits_mlp": lambda model, x, y: F.cross_entropy(model(x), y, reduction="none"),
}


def bare_run(problem, spec) -> float:
    """The run as a plain torch loop; returns the final test loss."""
    torch.manual_seed(spec["init_seed"])
    model = problem.build_model()
    opt = optim.build(spec["optimizer"]["name"], model.parameters(), **spec["optimizer"]["hparams"])
    splits = {name: split.tensors for name, split in problem.splits().items()}
    x, *rest = splits["train"]
    y = rest[0] if rest else None
    per_example = PER_EXAMPLE[spec["problem"]]
    bs, n = spec["batch_size"], len(x)
    eval_bs = bs if problem.drop_last_eval else bs * max(1, 256 // bs)

    @torch.no_grad()
    def evaluate(tensors) -> float:
        model.eval()
        total, count = torch.zeros((), dtype=torch.float64), 0
        for start in range(0, len(tensors[0]), eval_bs):
            stop = min(start + eval_bs, len(tensors[0]))
            if problem.drop_last_eval and stop - start != eval_bs:
                break
            xb, yb = tensors[0][start:stop], (tensors[1][start:stop] if len(tensors) > 1 else None)
            total += per_example(model, xb, yb).sum().double()
            count += stop - start
        model.train()
        return float(total) / count

    losses = [evaluate(t) for t in splits.values()]
    for epoch in range(spec["epochs"]):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(spec["data_seed"], epoch)))
        for step in range(n // bs):
            index = order[step * bs:(step + 1) * bs]
            opt.zero_grad()
            loss = per_example(model, x[index], None if y is None else y[index]).mean()
            loss.backward()
            opt.step()
        losses = [evaluate(t) for t in splits.values()]
    return losses[-1]


def loop_run(spec, root: Path) -> float:
    with tempfile.TemporaryDirectory(dir=root) as run_dir:
        train(spec, Path(run_dir) / "run")
        return load_result(Path(run_dir) / "run")["deterministic"]["final"]["test"]["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--problems", nargs="+", default=list(PER_EXAMPLE), choices=list(PER_EXAMPLE))
    parser.add_argument("--optimizer", default="sgd", help="a registry name that needs no closure (default sgd)")
    args = parser.parse_args()
    configure_torch(threads=1)
    from optrepro import problems

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, optimizer {args.optimizer}, "
          f"{args.repeats} interleaved repeats after a warm-up\n")
    print("| problem | steps | evaluations | loop s (best) | bare s (best) | bare / loop (best times) | per-repeat range |")
    print("|---|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.problems:
            spec = make_spec(paper="bench", problem=name, scale="full", optimizer=args.optimizer, seed=0)
            problem = problems.get(name, "full", **spec["problem_args"])
            loop_loss, bare_loss = loop_run(spec, Path(tmp)), bare_run(problem, spec)  # warm-up, and the check
            if abs(loop_loss - bare_loss) > 1e-4 * max(1.0, abs(bare_loss)):
                raise SystemExit(f"{name}: the loop ended at test loss {loop_loss}, the bare loop at {bare_loss}: "
                                 f"they did not do the same run")
            loop_times, bare_times = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                loop_run(spec, Path(tmp))
                loop_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                bare_run(problem, spec)
                bare_times.append(time.perf_counter() - t0)
            ratios = [b / lo for b, lo in zip(bare_times, loop_times)]
            steps = spec["epochs"] * (len(problem.splits()["train"]) // spec["batch_size"])
            print(f"| {name} | {steps} | {spec['epochs'] + 1} | {min(loop_times):.3f} | {min(bare_times):.3f} | "
                  f"**{min(bare_times) / min(loop_times):.2f}** | {min(ratios):.2f}-{max(ratios):.2f} "
                  f"(median {statistics.median(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
