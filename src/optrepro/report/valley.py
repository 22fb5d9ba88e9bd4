"""The Crowded Valley analysis: the study's runs as (problem, optimizer, schedule, budget, seed) rows, scored as
DeepOBS scores them, and the summaries the paper draws from them (torch-free).

`valley_frame(runs)` turns the runs frame of the crowded_valley paper into one row per run of a *setting*:

- budget "oneshot": the one-shot runs (seeds 42-51);
- budget b (small, medium, large): the winner of the first b tuning runs, i.e. its seed-42 tuning run plus its
  re-runs with seeds 43-51. `selected_by_seed` is True for the seed the winner was selected on (42), so a table
  can show the 9 independent seeds beside all 10.

`value` is the final test metric of the problem's scoring (loss for quadratic_deep and the VAEs, accuracy for
the others), and a diverged run's value is its epoch-0 value, as DeepOBS pads a diverged run's remaining epochs.
The frame's `tags.arm` is "<optimizer>:<budget>", so the verdict engine compares settings directly (e.g. a claim
with arms adam:small vs adam:oneshot).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from optrepro.planners.crowded_valley import ONESHOT, scored_by


def _epoch0(run_dir: str) -> dict:
    with open(Path(run_dir) / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "eval":
                return record
    return {}


def deepobs_value(row: pd.Series, split: str, metric: str) -> float:
    """The run's final split/metric, or its epoch-0 value if it diverged (DeepOBS's padding)."""
    if row["status"] == "diverged":
        return float(_epoch0(row["dir"]).get(f"{split}/{metric}", math.nan))
    return float(row.get(f"final.{split}.{metric}", math.nan))


def valley_frame(runs: pd.DataFrame, method_column: str = "optimizer.name") -> pd.DataFrame:
    """The study's runs as settings (see the module docstring). `method_column` names a run's method: the
    optimizer for the study, the arm label where one optimizer runs in several variants (the arena)."""
    columns = ["problem", "optimizer", "schedule", "budget", "seed", "selected_by_seed", "status", "value",
               "valid_value", "higher_is_better", "run_id", "tags.arm", "dir"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    usable = runs[runs["status"].isin(["ok", "diverged"])]
    rows = []
    tune = usable[usable["tags.stage"] == "tune"]
    tune_by_cell = {(r["problem"], r[method_column], r["tags.schedule"], int(r["tags.sample"])): r
                    for _, r in tune.iterrows()}

    def add(r, budget, selected):
        metric, higher = scored_by(r["problem"])
        rows.append({"problem": r["problem"], "optimizer": r[method_column], "schedule": r["tags.schedule"],
                     "budget": budget, "seed": r["seed"], "selected_by_seed": selected, "status": r["status"],
                     "value": deepobs_value(r, "test", metric), "valid_value": deepobs_value(r, "valid", metric),
                     "higher_is_better": higher, "run_id": r["run_id"], "tags.arm": f"{r[method_column]}:{budget}",
                     "dir": r["dir"]})

    for _, r in usable[usable["tags.stage"] == ONESHOT].iterrows():
        add(r, ONESHOT, False)
    winners = set()
    for _, r in usable[usable["tags.stage"] == "rerun"].iterrows():
        add(r, r["tags.budget"], False)
        winners.add((r["problem"], r[method_column], r["tags.schedule"], r["tags.budget"], int(r["tags.sample"])))
    for problem, optimizer, schedule, budget, sample in sorted(winners):
        r = tune_by_cell.get((problem, optimizer, schedule, sample))
        if r is not None:
            add(r, budget, True)
    return pd.DataFrame(rows, columns=columns)


def performance(frame: pd.DataFrame) -> pd.DataFrame:
    """Per problem, schedule, budget and optimizer: mean and sd of the final test value over all seeds, and
    over the independent seeds only (the re-runs, not the seed the winner was selected on), with n and the
    number of diverged runs."""
    keys = ["problem", "schedule", "budget", "optimizer"]
    if frame.empty:
        return pd.DataFrame(columns=keys + ["mean", "sd", "n", "diverged", "mean_independent", "n_independent"])
    grouped = frame.groupby(keys)
    out = grouped["value"].agg(["mean", "std", "count"]).rename(columns={"std": "sd", "count": "n"})
    out["diverged"] = grouped["status"].apply(lambda s: int((s == "diverged").sum()))
    independent = frame[~frame["selected_by_seed"]].groupby(keys)["value"]
    out["mean_independent"] = independent.mean()
    out["n_independent"] = independent.count()
    return out.reset_index()


def ranking(perf: pd.DataFrame, problem: str, schedule: str, budget: str, higher_is_better: bool) -> list[str]:
    """Optimizers of one cell, best first (by mean final test value)."""
    cell = perf[(perf["problem"] == problem) & (perf["schedule"] == schedule) & (perf["budget"] == budget)]
    return list(cell.sort_values("mean", ascending=not higher_is_better)["optimizer"])


def kendall_tau(ours: dict[str, float], theirs: dict[str, float]) -> tuple[float, int]:
    """Kendall's tau-b between two scorings of the same optimizers (over the optimizers both have), and n."""
    from scipy.stats import kendalltau

    common = sorted(set(ours) & set(theirs))
    if len(common) < 2:
        return math.nan, len(common)
    tau = kendalltau([ours[k] for k in common], [theirs[k] for k in common]).statistic
    return float(tau), len(common)


def switch_gain(perf: pd.DataFrame, problem: str, schedule: str = "none", budget: str = "small") -> pd.DataFrame:
    """The study's heat map for one problem: entry (row i, column j) = mean test value of optimizer j tuned with
    `budget` minus that of optimizer i one-shot, signed so that positive is better. The diagonal is the gain
    from tuning one optimizer; off the diagonal, the gain from switching optimizers."""
    _, higher = scored_by(problem)
    cell = perf[(perf["problem"] == problem) & (perf["schedule"] == schedule)]
    oneshot = cell[cell["budget"] == ONESHOT].set_index("optimizer")["mean"]
    tuned = cell[cell["budget"] == budget].set_index("optimizer")["mean"]
    sign = 1.0 if higher else -1.0
    matrix = pd.DataFrame({j: sign * (tuned[j] - oneshot) for j in tuned.index}, index=oneshot.index)
    return matrix.astype(float)


def improvement_over_adam(perf: pd.DataFrame, problem: str) -> pd.DataFrame:
    """Each setting's mean relative to one-shot Adam with the same schedule: for losses
    (ref - x) / ref, for accuracies x - ref (percentage points as a fraction); positive is better."""
    _, higher = scored_by(problem)
    cell = perf[perf["problem"] == problem].copy()
    refs = cell[(cell["optimizer"] == "adam") & (cell["budget"] == ONESHOT)].set_index("schedule")["mean"]
    ref = cell["schedule"].map(refs)
    cell["improvement"] = np.where(higher, cell["mean"] - ref, (ref - cell["mean"]) / ref.abs())
    return cell
