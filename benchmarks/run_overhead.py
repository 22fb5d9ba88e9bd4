"""Start-up costs: per run inside a batch, and of a fresh process before its first step.

    python benchmarks/run_overhead.py [--runs 200]            # N tiny specs in one run_batch call
    python benchmarks/run_overhead.py --fresh 5               # fresh processes: the loop vs a bare torch loop

Inside a batch: N tiny digits-MLP specs (one optimizer step, three evaluations each) in one process; prints the
median and 90th percentile of per-run wall time after the first run (which pays the imports and loads the
dataset once for the whole batch). Target: at most 0.1 s per tiny run.

Fresh processes (interleaved, `--fresh` of each per problem): each child times `import torch`, then the time
from the end of that import to its first optimizer step. "loop" runs one spec (full scale, one epoch, sgd)
through `optrepro.runner.run_batch`, as `optrepro run` does; "bare" builds the same problem's data and model
and a torch.optim.SGD and steps, as a user's script would. Target: the loop's first step within 0.5 s of
`import torch`. A torch.optim optimizer's first construction imports torch._dynamo (torch's own lazy
import, through Optimizer.add_param_group): the bare rows show what that costs any torch program, and the
third child imports it up front, timed apart, so that its first step shows the loop's own start-up.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOP_CHILD = r"""
import json, sys, tempfile, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
dynamo = 0.0
if sys.argv[2:] == ["dynamo-first"]:  # torch's lazy import done up front, timed apart: the loop's own cost remains
    import torch._dynamo
    dynamo = time.perf_counter() - t1
    t1 = time.perf_counter()
from optrepro import train
first = []
step = train.Trainer.train_step
def timed(self, order):
    if not first:
        first.append(time.perf_counter())
    return step(self, order)
train.Trainer.train_step = timed
from optrepro.plan import make_spec
from optrepro.runner import run_batch
spec = make_spec(paper="bench", problem=sys.argv[1], scale="full", optimizer="sgd", seed=0, epochs=1)
with tempfile.TemporaryDirectory() as tmp:
    assert run_batch([spec], tmp, threads=1) == 0
print(json.dumps({"import_torch": t1 - t0 - dynamo, "dynamo": dynamo, "first_step": first[0] - t1}))
"""

BARE_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
torch.set_num_threads(1)
from optrepro import problems
problem = problems.get(sys.argv[1], "full")
x, *rest = problem.splits()["train"].tensors
torch.manual_seed(0)
model = problem.build_model()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
index = torch.randperm(len(x))[:64]
out = problem.forward(model, (x[index], *(t[index] for t in rest)))
opt.zero_grad()
out.loss.backward()
first = time.perf_counter()
opt.step()
print(json.dumps({"import_torch": t1 - t0, "dynamo": 0.0, "first_step": first - t1}))
"""


def batch_overhead(runs: int) -> None:
    from optrepro.plan import make_spec
    from optrepro.runner import run_batch

    # batch_size = the whole training split: one step per run, so the time is the run's overhead.
    specs = [make_spec(paper="bench", problem="digits_mlp", scale="smoke", optimizer="adam", seed=i, epochs=1,
                       batch_size=1197) for i in range(runs)]
    with tempfile.TemporaryDirectory() as tmp:
        times: list[float] = []
        t0 = time.perf_counter()
        rc = run_batch(specs, Path(tmp), threads=1, overhead_log=times)
        total = time.perf_counter() - t0
    assert rc == 0
    rest = sorted(times[1:])
    print("| runs | first run (imports, data) | median per run | p90 per run | whole batch |")
    print("|---|---|---|---|---|")
    print(f"| {runs} | {times[0]:.3f} s | {statistics.median(rest):.4f} s | "
          f"{rest[int(0.9 * len(rest))]:.4f} s | {total:.1f} s |")


CHILDREN = {"loop": (LOOP_CHILD,), "bare": (BARE_CHILD,), "loop, torch._dynamo imported first": (LOOP_CHILD, "dynamo-first")}


def fresh_processes(repeats: int, names: list[str]) -> None:
    print("| problem | child | import torch s | import torch._dynamo s | first step after those imports, s: median "
          "| range |")
    print("|---|---|---:|---:|---:|---|")
    for name in names:
        seen: dict[str, list[dict]] = {child: [] for child in CHILDREN}
        for _ in range(repeats):
            for child, (code, *extra) in CHILDREN.items():
                out = subprocess.run([sys.executable, "-c", code, name, *extra], capture_output=True, text=True,
                                     check=True)
                seen[child].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for child, rows in seen.items():
            first = [r["first_step"] for r in rows]
            dynamo = statistics.median(r["dynamo"] for r in rows)
            print(f"| {name} | {child} | {statistics.median(r['import_torch'] for r in rows):.2f} | "
                  f"{f'{dynamo:.2f}' if dynamo else 'in the first step'} | {statistics.median(first):.2f} | "
                  f"{min(first):.2f}-{max(first):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--fresh", type=int, default=0, metavar="N",
                        help="time N fresh processes of each kind per problem instead of the batch")
    parser.add_argument("--problems", nargs="+", default=["quadratic_deep", "digits_mlp"])
    args = parser.parse_args()
    if args.fresh:
        fresh_processes(args.fresh, args.problems)
    else:
        batch_overhead(args.runs)


if __name__ == "__main__":
    main()
