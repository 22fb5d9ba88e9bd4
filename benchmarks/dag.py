"""Plan speed: a synthetic plan of N runs, timed through planning and `snakemake -n`, with peak memory.

    python benchmarks/dag.py [--runs 60000] [--batch-target-s 60]

The synthetic paper is the core digits grid with many seeds and learning rates at full scale (digits' full
cost estimate, 1.5 s per run, so batches hold about batch_target_s / 1.5 runs). Three timings, each in a fresh
process: `optrepro plan` (builds and caches the plan), `snakemake -n` with the plan cached (what every job and
every re-run pays), and `snakemake -n` right after a code change would force a re-plan (cache removed).
Peak memory is the child's maximum resident set size.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run the biggest last or read it per child
    return elapsed, max(peak, before) / 1024 / 1024


def workdir(tmp: Path, runs: int, target_s: float) -> Path:
    for sub in ("config", "paper"):
        shutil.copytree(ROOT / sub, tmp / sub, ignore=shutil.ignore_patterns("build", "tables", "figures"))
    lrs = [10 ** (-4 + 3 * i / 19) for i in range(20)]
    seeds = runs // (2 * len(lrs))
    arms = [{"label": f"{name}-{i}", "name": name, "hparams": {"lr": lr}}
            for name in ("adam", "sgd") for i, lr in enumerate(lrs)]
    paper = {"planner": "grid", "experiments": [{"name": "synthetic", "problem": "digits_mlp", "seeds": seeds,
                                                 "optimizers": arms}]}
    (tmp / "config" / "papers" / "core.yaml").write_text(yaml.safe_dump(paper))
    config = yaml.safe_load((tmp / "config" / "config.yaml").read_text())
    config.update(scale="full", papers=["core"], batch_target_s={"full": target_s, "smoke": 60})
    (tmp / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60000)
    parser.add_argument("--batch-target-s", type=float, default=60.0)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        wd = workdir(Path(tmp), args.runs, args.batch_target_s)
        snake = [str(bindir / "snakemake"), "-n", "--cores", "all", "-s", str(ROOT / "Snakefile"), "--quiet", "all"]
        plan_s, plan_gb = timed([str(bindir / "optrepro"), "plan", "--config", "config/config.yaml",
                                 "--schema-dir", str(ROOT / "workflow" / "schemas")], wd)
        index = next((wd / "results" / "full" / "plans").glob("*/index.json"))
        import json

        n_batches = len(json.loads(index.read_text()))
        cached_s, cached_gb = timed(snake, wd)
        shutil.rmtree(wd / "results" / "full" / "plans")
        replan_s, replan_gb = timed(snake, wd)
    print("| runs | batch jobs | `optrepro plan` | `snakemake -n` (plan cached) | `snakemake -n` (re-plan) | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.runs} | {n_batches} | {plan_s:.1f} s | {cached_s:.1f} s | {replan_s:.1f} s | "
          f"{max(plan_gb, cached_gb, replan_gb):.2f} GB |")


if __name__ == "__main__":
    main()
