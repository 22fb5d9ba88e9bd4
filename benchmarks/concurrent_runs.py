"""Runs per hour of cifar10_3c3d on one GPU with 1, 2, 4 and 8 runs at once: what the `gpu_slots` resource buys
(the reliability issue's device check; `python benchmarks/gpu_check.py concurrency`).

    python benchmarks/concurrent_runs.py                           # CUDA, 1 2 4 8 at once, 2-epoch runs
    python benchmarks/concurrent_runs.py --device cpu --concurrent 1 2 --epochs 1 --examples 12000

At each level, K worker processes each import torch, build the generated data (benchmarks/epoch_time.py: random
images of CIFAR-10's real size), report ready and wait; all start together and each trains one run of `--epochs`
epochs through optrepro.runner.run_one (the path of every run in a batch job: data to the device, model, the
evaluations, metrics and result files), then reports its finishing time. Imports and data generation are not
timed: a batch job pays them once for many runs. Each worker gets cpu_count / K threads, as Snakemake's cores
would be shared. Prints per level the wall time from the common start to the last finish, the runs and epochs
per hour, and the projected full-length runs (the problem's 100 epochs) per hour: the epoch rate / 100, which
leaves out the per-run start-up that a full run amortises over more epochs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBLEM = "cifar10_3c3d"


def worker(args) -> None:
    torch_threads = max(1, (os.cpu_count() or 1) // args.level)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from epoch_time import use_generated_images

    from optrepro.plan import make_spec
    from optrepro.runner import run_one

    torch.set_num_threads(torch_threads)
    use_generated_images(PROBLEM, args.examples)
    spec = make_spec(paper="bench", problem=PROBLEM, scale="full", optimizer="adam", device=args.device,
                     epochs=args.epochs, seed=args.index)
    work = Path(args.work)
    (work / f"ready.{args.index}").touch()
    while not (work / "go").exists():
        time.sleep(0.01)
    result = run_one(spec, work / f"out.{args.index}")
    (work / f"done.{args.index}").write_text(json.dumps({"finished": time.time(), "status": result["status"]}))


def level(k: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--index", str(i), "--level", str(k),
                                   "--work", tmp, "--device", args.device, "--epochs", str(args.epochs)]
                                  + (["--examples", str(args.examples)] if args.examples else []))
                 for i in range(k)]
        deadline = time.monotonic() + 600
        while sum((work / f"ready.{i}").exists() for i in range(k)) < k:
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a worker of level {k} failed before the start")
            time.sleep(0.05)
        go = time.time()
        (work / "go").touch()
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"workers of level {k} exited with {codes}")
        done = [json.loads((work / f"done.{i}").read_text()) for i in range(k)]
    wall = max(d["finished"] for d in done) - go
    return {"k": k, "wall": wall, "status": sorted({d["status"] for d in done})}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrent", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=None, help="training images (default: the real count)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--level", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    import torch

    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"{PROBLEM}, adam, {args.epochs}-epoch runs on generated data"
          + (f" ({args.examples} training images)" if args.examples else " of CIFAR-10's size")
          + f", {device}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    print("| runs at once | wall (s) | runs / hour | epochs / hour | projected 100-epoch runs / hour | speed-up | status |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for k in args.concurrent:
        r = level(k, args)
        per_hour = k * 3600 / r["wall"]
        base = base or per_hour / k
        print(f"| {k} | {r['wall']:.1f} | {per_hour:.0f} | {per_hour * args.epochs:.0f} | "
              f"{per_hour * args.epochs / 100:.1f} | {per_hour / base:.2f} | {', '.join(r['status'])} |", flush=True)


if __name__ == "__main__":
    main()
