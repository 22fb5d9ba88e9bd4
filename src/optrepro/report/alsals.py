"""What the ALSALS section computes from its runs, beyond the runs frame: the labels the plan gave shared runs,
the line searches' traces (step size, passes, backtracks) and loss curves against steps and pass units.

    runs = planned_runs(section.runs, manifests)      # one row per (run, tags the plan asked for)
    trace = optimizer_trace(run_dir, "step_size")     # [(step, value)] from the optimizer's internals
    curve = loss_curve(run_dir)                       # [(step, units, train loss)] at every evaluation
    rates = pass_rates(runs)                          # per run: passes, units, backtracks, probe bumps per step

A run's id does not depend on its tags, so two arms that ask for the same spec share one run (the tuned Adam whose
winning lr is the scripts' lr, an equal-compute Adam whose budget rounds to the task's epochs); the run directory
keeps the tags of whichever batch trained it first. `planned_runs` gives such a run one row per arm that asked
for it, from the plan's entries (deferred ones resolved from their dependency files).

The optimizer's internals are logged by the training loop as records holding the optimizer's own counters
(`step`, `forward_evals`, `backtracks`, ...; optrepro.optim.line_search). Their cumulative counters make the
traces independent of how often the loop logs them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from optrepro.io import read_jsonl

METRICS = "metrics.jsonl"
TAG_KEYS = ("experiment", "arm", "stage", "seed")


def planned_tags(manifests: Iterable[str | Path]) -> dict[str, list[dict]]:
    """run id -> the tags of every plan entry that asked for it, over the batches of the given manifests (the plan
    in force: <scale dir>/plans/current, next to the manifests' batches/)."""
    from optrepro.plan import resolve_deferred, run_id
    from optrepro.workflow import batch_entries

    out: dict[str, list[dict]] = {}
    for manifest in map(Path, manifests):
        key = json.loads(manifest.read_text()).get("batch")
        plan_root = manifest.parents[3] / "plans" / "current"
        if not key or not (plan_root / "index.json").exists():
            continue
        try:
            entries = batch_entries(plan_root, key)
        except ValueError:  # a manifest of another plan: its runs keep their stored tags
            continue
        for entry in entries:
            spec = resolve_deferred(entry) if entry.get("deferred") else entry
            tags = dict(spec.get("tags", {}))
            if tags not in out.setdefault(run_id(spec), []):
                out[run_id(spec)].append(tags)
    return out


def planned_runs(runs: pd.DataFrame, manifests: Iterable[str | Path]) -> pd.DataFrame:
    """The runs frame with one row per (run, tags the plan asked for): a run shared by two arms appears under
    both. Runs the plan does not know keep their row."""
    if runs.empty:
        return runs
    wanted = planned_tags(manifests)
    rows = []
    for _, row in runs.iterrows():
        for tags in wanted.get(row["run_id"]) or [None]:
            copy = row.copy()
            for k, v in (tags or {}).items():
                copy[f"tags.{k}"] = tuple(v) if isinstance(v, list) else v
            rows.append(copy)
    frame = pd.DataFrame(rows).reset_index(drop=True)
    keys = ["run_id"] + [f"tags.{k}" for k in TAG_KEYS if f"tags.{k}" in frame.columns]
    return frame.drop_duplicates(subset=keys).reset_index(drop=True)


def _records(run_dir: str | Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / METRICS)


def internals(run_dir: str | Path) -> list[dict]:
    """The optimizer's internals records (any record carrying the optimizer's own step counter and step size)."""
    return [r for r in _records(run_dir) if r.get("kind") != "eval" and "step_size" in r and "forward_evals" in r]


def optimizer_trace(run_dir: str | Path, key: str = "step_size") -> list[tuple[int, float]]:
    """[(optimizer step, value)] of one internal quantity, in logging order."""
    return [(int(r["step"]), float(r[key])) for r in internals(run_dir) if key in r]


def loss_curve(run_dir: str | Path, key: str = "train/loss") -> list[tuple[int, float, float]]:
    """[(steps done, pass units spent, value)] at every evaluation. Units: 1 per step for an optimizer without
    internals (one forward+backward), else steps + (forward evaluations - steps) / 3 from its counters at that
    step (the line searches take one backward per step)."""
    records = _records(run_dir)
    counters = {int(r["step"]): int(r["forward_evals"]) for r in records
                if r.get("kind") != "eval" and "forward_evals" in r and "step" in r}
    out = []
    for r in records:
        if r.get("kind") != "eval" or r.get(key) is None:
            continue
        steps = int(r["step"])
        if not counters:
            units = float(steps)
        elif steps == 0:
            units = 0.0
        elif steps in counters:
            units = steps + (counters[steps] - steps) / 3.0
        else:  # internals not logged at this step: the loop logs them at least at every epoch's end
            continue
        out.append((steps, units, float(r[key])))
    return out


def pass_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: forward and backward passes, pass units, backtracks and slope-probe bumps per optimizer step.
    Passes and units come from result.json (the closure's counts); backtracks and probe bumps from the optimizer's
    last internals record (NaN for an optimizer without them)."""
    rows = []
    for _, row in runs.iterrows():
        steps = row.get("steps")
        last = internals(row["dir"])[-1:] if isinstance(row.get("dir"), str) else []
        done = last[0]["step"] if last else None
        def per_step(value) -> float:
            return float(value) / steps if steps else float("nan")

        def per_opt_step(key: str) -> float:  # from the optimizer's own cumulative counters
            return float(last[0][key]) / done if last and done and key in last[0] else float("nan")

        rows.append({"run_id": row["run_id"], "forward_per_step": per_step(row.get("forward_passes") or 0),
                     "backward_per_step": per_step(row.get("backward_passes") or 0),
                     "units_per_step": per_step(row.get("cost_units") or 0),
                     "backtracks_per_step": per_opt_step("backtracks"),
                     "probe_bumps_per_step": per_opt_step("numerical_error")})
    return pd.DataFrame(rows, columns=["run_id", "forward_per_step", "backward_per_step", "units_per_step",
                                       "backtracks_per_step", "probe_bumps_per_step"])
