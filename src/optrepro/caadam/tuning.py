"""The learning-rate sweep's winners: for one cell, each swept arm's learning rate with the lowest mean (over the
sweep's seeds) validation loss, written to the selection file its re-runs are resolved from.

The validation loss of a run is the lowest value, after training started, of the metric its EarlyStopping
monitors (valid/reg_loss for the ResNets, whose Keras val_loss includes the L2 penalty; valid/loss for the MLPs):
the loss of the weights EarlyStopping(restore_best_weights) keeps. A run without a finite value (diverged
before its first evaluation) scores +inf, so a grid point where any seed has none cannot win; ties go to the
smaller learning rate. Never the test split.

    python -m optrepro.caadam.tuning --scale smoke --cell california_mlp_64_32 MANIFEST...

(workflow/rules/caadam.smk runs it once per swept cell, with that cell's problem's tune manifests).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping

from optrepro.caadam import design
from optrepro.io import atomic_write_json
from optrepro.plan import run_id

CRITERION = ("lowest mean over the sweep's seeds of the minimum, after training started, of the validation loss "
             "that EarlyStopping monitors")


def finite_or_nan(x: Any) -> float:
    """A metric as a float; missing, non-numeric ("nan" strings of a diverged run) and non-finite -> NaN."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def eval_records(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation records of a run's metrics.jsonl (optimizer-internal records are skipped unparsed)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        for line in f:
            if '"eval"' in line:
                record = json.loads(line)
                if record.get("kind") == "eval":
                    records.append(record)
    return records


def best_monitored(run_dir: Path, monitor: str) -> float:
    """The lowest value of `monitor` after training started (+inf without a finite one): the validation loss
    of the weights EarlyStopping(restore_best_weights) keeps, up to its min_delta."""
    values = [finite_or_nan(r.get(monitor)) for r in eval_records(run_dir) if r.get("epoch", 0) >= 1]
    values = [v for v in values if not math.isnan(v)]
    return min(values) if values else math.inf


def monitor_of(cell: design.Cell) -> str:
    """The metric the cell's EarlyStopping monitors (the selection criterion)."""
    for c in cell.callbacks:
        if c["name"] == "early_stopping":
            return c.get("monitor", "valid/loss")
    return "valid/loss"


def run_dirs(manifests) -> dict[str, Path]:
    """run id -> run directory, from batch manifests ({"runs": [{"run_id", "dir"}, ...]})."""
    out = {}
    for manifest in manifests:
        for entry in json.loads(Path(manifest).read_text()).get("runs", []):
            out[entry["run_id"]] = Path(entry["dir"])
    return out


def select(d: design.Design, cell_name: str, dirs: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """arm -> selection record {"hparams": {"lr": winner}, "lr_factor", "grid": [...], ...} for one cell.

    `dirs` maps run ids to run directories (run_dirs of the cell's tune manifests); which run is which grid
    point comes from the plan (the run ids of design.tune_specs), not from result.json's tags."""
    cell = d.cell(cell_name)
    if not cell.sweep:
        raise ValueError(f"cell {cell_name!r} runs no sweep (sweep: false in config/papers/{d.paper}.yaml)")
    monitor = monitor_of(cell)
    planned: dict[tuple[str, float], list[str]] = {}
    lrs: dict[tuple[str, float], float] = {}
    for spec in design.tune_specs(d):
        tags = spec["tags"]
        if tags["cell"] == cell_name:
            planned.setdefault((tags["arm"], tags["lr_factor"]), []).append(run_id(spec))
            lrs[(tags["arm"], tags["lr_factor"])] = spec["optimizer"]["hparams"]["lr"]
    out = {}
    for arm in d.tuned_arms(cell):
        grid = []
        for factor in d.sweep_factors:
            ids = planned[(arm, factor)]
            missing = [i for i in ids if i not in dirs]
            if missing:
                raise ValueError(f"cell {cell_name!r}, arm {arm!r}, lr x {factor}: tuning run {missing[0]} is in no "
                                 f"given manifest (pass the cell's tune manifests)")
            scores = [best_monitored(dirs[i], monitor) for i in ids]
            mean = sum(scores) / len(scores) if all(math.isfinite(s) for s in scores) else math.inf
            lr = float(lrs[(arm, factor)])
            grid.append({"lr_factor": factor, "lr": lr, "mean_valid_loss": mean if math.isfinite(mean) else None,
                         "seeds": len(ids), "runs": ids})
        finite = [g for g in grid if g["mean_valid_loss"] is not None]
        if finite:
            best = min(finite, key=lambda g: (g["mean_valid_loss"], g["lr"]))
            note = None
        else:  # every grid point lost a seed: keep the published lr, say so
            best = next(g for g in grid if g["lr_factor"] == 1.0) if 1.0 in d.sweep_factors else grid[0]
            note = "no grid point has a finite validation loss on every seed; the unswept lr is kept"
        out[arm] = {"paper": d.paper, "scale": d.scale, "cell": cell_name, "arm": arm, "monitor": monitor,
                    "criterion": CRITERION, "hparams": {"lr": best["lr"]}, "lr_factor": best["lr_factor"],
                    "note": note, "grid": grid}
    return out


def write_selections(d: design.Design, cell_name: str, selections: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    paths = []
    for arm, record in selections.items():
        path = Path(design.selection_path(d, cell_name, arm))
        atomic_write_json(path, dict(record))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    import yaml

    from optrepro.workflow import paper_config

    parser = argparse.ArgumentParser(prog="python -m optrepro.caadam.tuning", description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="*", help="the tune manifests of the cell's problem")
    parser.add_argument("--cell", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--paper", default="caadam")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    config["scale"] = args.scale
    pconfig = {**paper_config(Path(args.config).parent, args.paper, args.scale), "paper": args.paper}
    d = design.design(pconfig, args.scale, config)
    for path in write_selections(d, args.cell, select(d, args.cell, run_dirs(args.manifests))):
        record = json.loads(path.read_text())
        print(f"{args.cell} {record['arm']}: lr {record['hparams']['lr']:.4g} (x{record['lr_factor']:g}) -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
