"""Scoring beyond the papers: time-to-target, performance profiles and ranks with intervals (torch-free).

Conventions (AlgoPerf's, adapted to a run's evaluation curve):

- A problem's **target** is the median over seeds of the best tuned baseline's final validation metric: among
  the baseline methods tuned with the small budget, the one whose median final validation metric is best.
- A run's **time to target** is the cost at the first evaluation whose validation metric reaches the target
  (>= for accuracies, <= for losses). Cost is counted three ways: optimizer steps, equal-compute pass units
  (forward+backward = 1, forward only = 1/3) and seconds. A run that diverged, or never reaches the target, takes
  infinitely long.
- A method's time on a problem is the time by which half its seeds have reached the target: the median over
  seeds for an odd count, the lower of the two middle times for an even one; infinite when more than half its
  seeds never reach it. (The plain median of an even count is infinite as soon as half the seeds never arrive.
  The baseline that sets a target reaches it with only half its seeds when their count is even, since the
  target is their median, so by the plain median that baseline never reached its own target.)
- The **performance profile** of a method is rho(tau) = the fraction of problems on which its time is at most
  tau times the best method's time on that problem; a problem no method solves counts for no method.
- **Ranks** per problem are by time (ties share the mean rank, infinite times tie last); the mean rank's interval
  comes from a bootstrap over seeds: each resample redraws every method's seeds on every problem with replacement.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

INF = math.inf


def reaches(value: float, target: float, higher_is_better: bool) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value >= target if higher_is_better else value <= target


def time_to_target(curve: Sequence[tuple[float, float]], target: float, higher_is_better: bool,
                   diverged: bool = False) -> float:
    """The cost at the first point (cost, validation metric) of `curve` that reaches the target; inf if none
    does or the run diverged."""
    if diverged:
        return INF
    for cost, value in curve:
        if reaches(value, target, higher_is_better):
            return float(cost)
    return INF


def target_of(finals: pd.DataFrame, baselines: Iterable[str], higher_is_better: bool) -> tuple[float, str]:
    """(target, method) for one problem from a frame with columns method, seed, value (final validation metric
    of the tuned runs): the median over seeds of the best baseline by that median."""
    medians = finals[finals["method"].isin(list(baselines))].groupby("method")["value"].median().dropna()
    if medians.empty:
        return math.nan, ""
    best = medians.idxmax() if higher_is_better else medians.idxmin()
    return float(medians[best]), str(best)


def method_time(times: Sequence[float]) -> float:
    """The time by which half the seeds have reached the target (the lower median); infinite when more than
    half never reach it; NaN when a seed's time is unknown."""
    if len(times) == 0:
        return INF
    times = np.asarray(times, dtype=float)
    if np.isnan(times).any():  # a time that is not known (no timing run) leaves the method's time unknown
        return math.nan
    return float(np.sort(times)[(len(times) - 1) // 2])


def performance_profile(times: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """times: rows = problems, columns = methods (inf allowed). Returns rows = taus, columns = methods:
    the fraction of problems where a method's time is within tau times the problem's best time."""
    best = times.min(axis=1)
    solvable = best < INF
    ratios = times.div(best.where(solvable), axis=0)  # a problem nobody solves: NaN ratio, never within tau
    n = len(times)
    rows = {tau: ((ratios <= tau).sum(axis=0) / n if n else ratios.sum(axis=0) * 0) for tau in taus}
    return pd.DataFrame(rows).T.rename_axis("tau")


def ranks(times: pd.DataFrame) -> pd.DataFrame:
    """Per problem (row), each method's rank by time: 1 = fastest, ties share the mean rank, inf ties last."""
    return times.rank(axis=1, method="average", ascending=True)


def bootstrap_mean_rank(per_seed: Mapping[str, Mapping[str, Sequence[float]]], n_resamples: int = 1000,
                        seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """per_seed[problem][method] = the seeds' times. Mean rank over problems per method, with a percentile
    bootstrap interval over seeds."""
    problems = sorted(per_seed)
    methods = sorted({m for p in problems for m in per_seed[p]})
    rng = np.random.default_rng(seed)

    def mean_rank(draw: Mapping[str, Mapping[str, Sequence[float]]]) -> pd.Series:
        table = pd.DataFrame({m: [method_time(draw[p].get(m, [])) for p in problems] for m in methods},
                             index=problems)
        return ranks(table).mean(axis=0)

    point = mean_rank(per_seed)
    samples = []
    for _ in range(n_resamples):
        draw = {p: {m: list(rng.choice(np.asarray(v, dtype=float), size=len(v), replace=True)) if len(v) else []
                    for m, v in per_seed[p].items()} for p in problems}
        samples.append(mean_rank(draw))
    boot = pd.DataFrame(samples)
    low, high = (1 - level) / 2, 1 - (1 - level) / 2
    return pd.DataFrame({"mean_rank": point, "low": boot.quantile(low), "high": boot.quantile(high)}).sort_values(
        "mean_rank")


# --- from runs to times ----------------------------------------------------------------------------------

def eval_curve(run_dir: str, split: str, metric: str) -> list[tuple[int, float]]:
    """(step, split/metric) at every evaluation of a run (metrics.jsonl)."""
    import json
    from pathlib import Path

    out = []
    with open(Path(run_dir) / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "eval" and f"{split}/{metric}" in record:
                value = record[f"{split}/{metric}"]
                out.append((int(record["step"]), math.nan if value is None else float(value)))
    return out


def run_times(run: Mapping, target: float, higher_is_better: bool, seconds_per_step: float) -> dict[str, float]:
    """One run's time to target in steps, pass units and seconds. Pass units at a step are the run's average
    units per step times the step (line searches vary per step; the average is what the run paid); seconds are
    the method's seconds per step from its dedicated timing run times the step."""
    from optrepro.planners.crowded_valley import scored_by

    metric, _ = scored_by(run["problem"])
    steps = time_to_target(eval_curve(run["dir"], "valid", metric), target, higher_is_better,
                           diverged=run["status"] == "diverged")
    units_per_step = float(run["cost_units"]) / max(float(run["steps"]), 1.0)
    return {"steps": steps, "units": steps * units_per_step if steps < INF else INF,
            "seconds": steps * seconds_per_step if steps < INF and math.isfinite(seconds_per_step) else INF}
