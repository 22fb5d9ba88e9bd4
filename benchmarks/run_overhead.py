"""Per-run overhead inside a batch: N tiny specs (one optimizer step, three evaluations) in one process.

    python benchmarks/run_overhead.py [--runs 200]

Prints the median and 90th percentile of per-run wall time after the first run (which pays the imports and
loads the dataset once for the whole batch). Target: at most 0.1 s per tiny run.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from optrepro.plan import make_spec
from optrepro.runner import run_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    # batch_size = the whole training split: one step per run, so the time is the run's overhead.
    specs = [make_spec(paper="bench", problem="digits_mlp", scale="smoke", optimizer="adam", seed=i, epochs=1,
                       batch_size=1197) for i in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        times: list[float] = []
        t0 = time.perf_counter()
        rc = run_batch(specs, Path(tmp), threads=1, overhead_log=times)
        total = time.perf_counter() - t0
    assert rc == 0
    rest = sorted(times[1:])
    print("| runs | first run (imports, data) | median per run | p90 per run | whole batch |")
    print("|---|---|---|---|---|")
    print(f"| {args.runs} | {times[0]:.3f} s | {statistics.median(rest):.4f} s | "
          f"{rest[int(0.9 * len(rest))]:.4f} s | {total:.1f} s |")


if __name__ == "__main__":
    main()
