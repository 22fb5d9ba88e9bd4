"""Random search as in "Descending through a Crowded Valley", and the selection of a tuning winner (torch-free).

The sample sequence. Every optimizer draws its i-th configuration from the same committed uniform numbers:
`valley_uniforms.json` holds, per hyperparameter name, a list of numbers in [0, 1). The i-th value of `lr` is
mapped through the inverse CDF of the optimizer's distribution for `lr`, so every optimizer with the same
learning-rate distribution tries the same learning rates in the same order, and a numpy or scipy upgrade cannot
change the sequence. A budget of n tuning runs is the first n samples, so the budgets are nested prefixes (the
study's small / medium / large budgets share their first 25 runs).

The selection. A tuning winner is the sample with the best *final validation* metric (accuracy, or loss for the
problems scored by loss), never a test metric. A diverged run is scored as DeepOBS scores it: its remaining epochs
are padded with its epoch-0 values, so its final value is its epoch-0 value. Ties, including a cell where every
tuning run diverged, go to the lowest sample index; the selection file says how many runs diverged and flags a
cell where all did (`all_diverged`), so the report can show it.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

UNIFORMS = Path(__file__).resolve().parent / "data" / "valley_uniforms.json"


@lru_cache(maxsize=1)
def uniforms() -> dict[str, list[float]]:
    data = json.loads(UNIFORMS.read_text())
    return data["uniform"]


def inverse_cdf(distribution: Mapping[str, Any], u: float) -> float | int | Any:
    """The value of `distribution` (a search-space entry of the optimizer registry) at quantile u in [0, 1)."""
    kind = distribution["type"]
    if kind == "uniform":
        return distribution["low"] + u * (distribution["high"] - distribution["low"])
    if kind == "log_uniform":
        low, high = math.log(distribution["low"]), math.log(distribution["high"])
        return math.exp(low + u * (high - low))
    if kind == "one_minus_log_uniform":  # 1 - x, x log-uniform: momenta near 1
        low, high = math.log(distribution["low"]), math.log(distribution["high"])
        return 1.0 - math.exp(low + u * (high - low))
    if kind == "int_uniform":  # low..high, both ends included
        return int(distribution["low"] + math.floor(u * (distribution["high"] - distribution["low"] + 1)))
    if kind == "choice":
        values = distribution["values"]
        return values[min(int(u * len(values)), len(values) - 1)]
    from optrepro.registry import unknown

    raise unknown("distribution type", kind, ("uniform", "log_uniform", "one_minus_log_uniform", "int_uniform",
                                              "choice"))


def samples(space: Mapping[str, Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first n configurations of the committed sequence for a search space {hyperparameter: distribution}."""
    table = uniforms()
    missing = sorted(set(space) - set(table))
    if missing:
        from optrepro.registry import unknown

        raise unknown("hyperparameter of the committed sample sequence", missing[0], table)
    available = min(len(table[name]) for name in space) if space else n
    if n > available:
        raise ValueError(f"a budget of {n} runs exceeds the {available} committed samples in {UNIFORMS.name}")
    return [{name: inverse_cdf(dist, table[name][i]) for name, dist in sorted(space.items())} for i in range(n)]


# --- selection --------------------------------------------------------------------------------------------

def deepobs_final(result: Mapping[str, Any], split: str, metric: str, epoch0: Mapping[str, Any] | None) -> float:
    """A run's final value of split/metric as DeepOBS reports it: a diverged run's epoch-0 value."""
    det = result["deterministic"]
    if det["status"] == "diverged":
        return float(epoch0.get(f"{split}/{metric}", math.nan)) if epoch0 else math.nan
    value = det.get("final", {}).get(split, {}).get(metric)
    return float(value) if value is not None else math.nan


def select(candidates: Iterable[Mapping[str, Any]], higher_is_better: bool) -> dict[str, Any]:
    """The winner among tuning runs given as {"sample": i, "hparams": {...}, "value": final valid metric,
    "status": ...}. Best value wins; NaN never wins over a number; ties go to the lowest sample index."""
    ranked = sorted(candidates, key=lambda c: c["sample"])
    if not ranked:
        raise ValueError("no tuning run to select from")
    sign = -1.0 if higher_is_better else 1.0

    def key(c):
        value = c["value"]
        return (math.isnan(value), sign * value if not math.isnan(value) else 0.0, c["sample"])

    best = min(ranked, key=key)
    diverged = sum(c["status"] == "diverged" for c in ranked)
    return {"sample": best["sample"], "hparams": dict(best["hparams"]), "value": best["value"],
            "run_id": best.get("run_id"), "candidates": len(ranked), "diverged": diverged,
            "all_diverged": diverged == len(ranked)}


# --- the selection job ------------------------------------------------------------------------------------

def _first_eval(run_dir: Path) -> dict[str, Any] | None:
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "eval":
                return record
    return None


def tuning_candidates(manifests: Iterable[Path | str], problem: str, split: str, metric: str,
                      requests: Mapping[str, Any] | None = None) -> list[dict]:
    """One candidate per tuning run of `problem` listed in the manifests, with its cell (the arm: the optimizer,
    or a labelled variant of it) and final value.

    `requests` (the plan's papers/<paper>.json) gives the labels the selecting paper gave its runs: a run that
    another paper asked for first carries that paper's tags in its spec.json. Without it the spec's tags are
    read."""
    out, seen = [], set()
    for manifest in manifests:
        for entry in json.loads(Path(manifest).read_text())["runs"]:
            if entry["run_id"] in seen:
                continue
            seen.add(entry["run_id"])
            run_dir = Path(entry["dir"])
            spec = json.loads((run_dir / "spec.json").read_text())
            labels = [spec["tags"]] if requests is None else requests.get(entry["run_id"], [])
            labels = [t for t in labels if t.get("stage") == "tune"]
            if spec["problem"] != problem or not labels:
                continue
            result = json.loads((run_dir / "result.json").read_text())
            value = deepobs_final(result, split, metric, _first_eval(run_dir))
            for tags in labels:
                out.append({"optimizer": tags["arm"], "schedule": tags["schedule"], "sample": int(tags["sample"]),
                            "hparams": spec["optimizer"]["hparams"], "run_id": entry["run_id"],
                            "status": result["deterministic"]["status"], "value": value})
    return out


def select_winners(candidates: list[dict], budgets: Mapping[str, int], higher_is_better: bool) -> dict[str, dict]:
    """Per optimizer/schedule/budget: the winner among its first `budgets[budget]` samples."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for c in candidates:
        cells.setdefault((c["optimizer"], c["schedule"]), []).append(c)
    winners = {}
    for (optimizer, schedule), runs in sorted(cells.items()):
        for budget, n in budgets.items():
            prefix = [c for c in runs if c["sample"] < n]
            if len(prefix) < n:
                raise ValueError(f"{optimizer}/{schedule}: budget {budget} needs samples 0..{n - 1}, the tuning "
                                 f"stage has {len(prefix)} of them")
            winners[f"{optimizer}/{schedule}/{budget}"] = select(prefix, higher_is_better)
    return winners


def _cmd_select(args) -> int:
    from optrepro.io import atomic_write_json
    from optrepro.planners.crowded_valley import budgets_of, scored_by
    from optrepro.workflow import paper_config, plan_manifests, plan_requests

    metric, higher = scored_by(args.problem)
    pconfig = paper_config(Path(args.config_dir), args.paper, args.scale)
    budgets = budgets_of({"version": pconfig.get("version", pconfig.get("study", "icml")),
                          "budgets": pconfig.get("budgets")})
    manifests = plan_manifests(Path(args.plan), args.paper, stage="tune", problem=args.problem)
    requests = plan_requests(Path(args.plan), args.paper)
    winners = select_winners(tuning_candidates(manifests, args.problem, "valid", metric, requests), budgets, higher)
    atomic_write_json(Path(args.output), {"problem": args.problem, "metric": f"final valid {metric}",
                                          "higher_is_better": higher, "budgets": budgets, "winners": winners})
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("select-winners", help="pick each tuning cell's winner by final validation metric "
                                              "(Crowded Valley protocol); torch-free")
    p.add_argument("--plan", required=True, help="the plan directory (results/<scale>/plans/current)")
    p.add_argument("--paper", required=True, help="the paper whose tuning runs (and config's budgets) to use")
    p.add_argument("--scale", required=True, choices=("full", "smoke"))
    p.add_argument("--config-dir", default="config")
    p.add_argument("--problem", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=_cmd_select)
