"""What the CaAdam section computes from its runs (workflow/notebooks/caadam.py only calls these).

- `tag_by_plan`: one row per planned run, tagged by the plan. A run that two arms ask for (the same spec, e.g. a
  winner of the sweep at the published lr) is trained once and its result.json carries the tags of whichever
  asked first; here it appears once per arm that planned it, with that arm's tags.
- `add_run_statistics`: per run, from result.json and metrics.jsonl: the notebooks' statistics (the test metric
  of the weights EarlyStopping restores, epochs_to_converge = len(history)), the test metric at the lowest
  validation loss (`at_best_valid`, filled from metrics.jsonl where result.json predates it), RMSE = sqrt(MSE)
  for the MLPs, and what convergence needs (epochs to the best evaluation, the monitored curve, time per epoch).
- tables: results beside the published values, convergence three ways, the LR-matched controls, the sweep.
- `multiplier_rows`: CaAdam's factors per strategy and mode, computed from the full-size models (imports torch).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from optrepro.caadam import design
from optrepro.caadam.tuning import eval_records, finite_or_nan, monitor_of
from optrepro.plan import resolve_deferred, run_id
from optrepro.report import stats
from optrepro.report.tables import DASH

MLP_PROBLEM = "caadam_california_mlp"
SPLITS = ("train", "valid", "test")
PREFIXES = ("final", "at_best_valid", "restored")
EPOCHS = "final.train.epochs_to_converge"  # the notebooks' epochs_to_converge = len(history) (a claim column)


def metric_of(problem: str) -> str:
    """The notebooks' headline metric: test accuracy for the ResNets, test RMSE for the MLPs."""
    return "rmse" if problem == MLP_PROBLEM else "accuracy"


def higher_is_better(metric: str) -> bool:
    return metric == "accuracy"


# --- one row per planned run ---------------------------------------------------------------------------------

def planned_runs(d: design.Design) -> list[tuple[str | None, dict[str, Any]]]:
    """(run id, tags) of every planned run; a winner's re-run is resolved from its selection file (None while
    the file does not exist)."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    for spec in [*design.main_specs(d), *design.tune_specs(d)]:
        out.append((run_id(spec), dict(spec["tags"])))
    for deferred in design.tuned_specs(d):
        if Path(deferred.depends_on).exists():
            spec = resolve_deferred(deferred.to_json())
            out.append((run_id(spec), dict(spec["tags"])))
        else:
            out.append((None, dict(deferred.tags)))
    return out


def tag_by_plan(runs: pd.DataFrame, d: design.Design) -> pd.DataFrame:
    """`runs` (Section.runs: one row per run of the paper's manifests) as one row per planned run, with the
    plan's tags. A planned run absent from the manifests gets status `missing`."""
    tag_columns = [c for c in runs.columns if c.startswith("tags.")]
    by_id = runs.drop(columns=tag_columns).set_index("run_id", drop=False) if len(runs) else None
    rows = []
    for rid, tags in planned_runs(d):
        if by_id is not None and rid in by_id.index:
            row = by_id.loc[rid].to_dict()
        else:
            row = {"run_id": rid, "status": "missing", "scale": d.scale}
        row.update({f"tags.{k}": v for k, v in tags.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def scale_summary(d: design.Design) -> str:
    """What the plan runs at this scale, cell by cell (the smoke block of config/papers/caadam.yaml keeps every
    arm on one cell only)."""
    every = set(d.arms)
    groups: dict[str, list[str]] = {}
    for cell in d.cells:
        arms = "every arm" if set(cell.arms) == every else ", ".join(d.arms[a].label for a in cell.arms)
        protocols = "both protocols" if len(cell.protocols) == 2 else f"protocol {cell.protocols[0]}"
        what = f"{arms} in {protocols}" + (" with the sweep" if d.tuned_arms(cell) else "")
        groups.setdefault(what, []).append(cell.name)
    runs = f"{len(d.seeds)} run{'s' if len(d.seeds) != 1 else ''} per arm and protocol"
    parts = [f"{what} on {', '.join(cells)}" for what, cells in groups.items()]
    return f"At {d.scale} scale: {runs}; " + "; ".join(parts) + "."


# --- per-run statistics -----------------------------------------------------------------------------------------

def _metrics_at(record: Mapping[str, Any] | None, prefix: str) -> dict[str, float]:
    out = {}
    if record is None:
        return out
    for key, value in record.items():
        if "/" in key:
            split, _, metric = key.partition("/")
            out[f"{prefix}.{split}.{metric}"] = finite_or_nan(value)
    out[f"{prefix}.epoch"] = record.get("epoch")
    return out


def run_statistics(run_dir: Path, monitor: str) -> dict[str, Any]:
    """The per-run columns the section adds (see the module docstring)."""
    records = eval_records(run_dir)
    trained = [r for r in records if r.get("epoch", 0) >= 1]
    row: dict[str, Any] = {}
    # at_best_valid: the first evaluation with the lowest valid/loss after training started (the loop's
    # definition, optrepro.train; result.json carries it once the loop records it)
    losses = [(finite_or_nan(r.get("valid/loss")), i) for i, r in enumerate(trained)]
    losses = [(v, i) for v, i in losses if not math.isnan(v)]
    row.update(_metrics_at(trained[min(losses)[1]] if losses else None, "fill.at_best_valid"))
    # restored: the evaluation EarlyStopping keeps (its best_epoch: the monitor, with min_delta)
    result_path = Path(run_dir) / "result.json"
    best_epoch = None
    if result_path.exists():
        for c in json.loads(result_path.read_text())["deterministic"].get("controllers", []):
            if "stopped_epoch" in c and c.get("best_epoch", -1) >= 1:
                best_epoch = c["best_epoch"]
    restored = next((r for r in trained if r.get("epoch") == best_epoch), None)
    row.update(_metrics_at(restored, "restored"))
    row["monitor_curve"] = tuple((r["epoch"], finite_or_nan(r.get(monitor))) for r in trained)
    return row


def add_run_statistics(frame: pd.DataFrame, d: design.Design) -> pd.DataFrame:
    """`frame` with the columns of run_statistics (read once per distinct run), at_best_valid.* filled where
    result.json lacks it, RMSE columns for the MLPs, epochs_to_converge and the time per epoch."""
    monitors = {c.name: monitor_of(c) for c in d.cells}
    cache: dict[str, dict[str, Any]] = {}
    rows = []
    for _, run in frame.iterrows():
        key = run.get("dir")
        stats_row: dict[str, Any] = {}
        if isinstance(key, str) and run.get("status") in ("ok", "diverged"):
            if key not in cache:
                cache[key] = run_statistics(Path(key), monitors[run["tags.cell"]])
            stats_row = cache[key]
        rows.append(stats_row)
    extra = pd.DataFrame(rows, index=frame.index)
    out = pd.concat([frame, extra.drop(columns=[c for c in extra.columns if c.startswith("fill.")])], axis=1)
    for column in [c for c in extra.columns if c.startswith("fill.")]:
        target = column.removeprefix("fill.")
        out[target] = out[target].fillna(extra[column]) if target in out.columns else extra[column]
    for prefix in PREFIXES:
        for split in SPLITS:
            loss = f"{prefix}.{split}.loss"
            if loss in out.columns:
                rmse = np.sqrt(pd.to_numeric(out[loss], errors="coerce"))
                out[f"{prefix}.{split}.rmse"] = rmse.where(out["problem"] == MLP_PROBLEM)
    epochs = pd.to_numeric(out.get("epochs_run"), errors="coerce")
    out[EPOCHS] = epochs
    out["epoch_time_s"] = pd.to_numeric(out.get("wall_time_s"), errors="coerce") / epochs.where(epochs > 0)
    return out


# --- tables ----------------------------------------------------------------------------------------------------

def _usable(rows: pd.DataFrame, column: str) -> pd.Series:
    if column not in rows.columns or rows.empty:
        return pd.Series(dtype=float)
    ok = rows["status"].isin(["ok", "diverged"])
    values = pd.to_numeric(rows.loc[ok, column], errors="coerce")
    return values[values.notna()]


def mean_sd(values: Iterable[float], factor: float = 1.0, digits: int = 2, n: bool = True) -> str:
    values = [float(v) * factor for v in values]
    if not values:
        return DASH
    text = f"{np.mean(values):.{digits}f}"
    if len(values) > 1:
        text += f" ± {np.std(values, ddof=1):.{digits}f}"
    return text + (f" ({len(values)})" if n else "")


def _fmt(metric: str) -> tuple[float, int]:
    """(factor, digits) of a metric in tables: accuracy in %, RMSE and epochs as they are."""
    return {"accuracy": (100.0, 2), "rmse": (1.0, 4), "epochs_to_converge": (1.0, 1)}.get(metric, (1.0, 3))


def main_runs(frame: pd.DataFrame, protocol: str, stage: str = "main") -> pd.DataFrame:
    return frame[(frame["tags.protocol"] == protocol) & (frame["tags.stage"] == stage)]


def _status_counts(rows: pd.DataFrame) -> str:
    counts = rows["status"].value_counts().to_dict() if len(rows) else {}
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"


def published_rows(d: design.Design, frame: pd.DataFrame, published: pd.DataFrame, scale: str,
                   metric_group: str) -> pd.DataFrame:
    """Per cell and arm (every arm, diverged runs included): the published mean ± sd and its source key beside
    ours in each protocol, for the notebooks' headline metric ("accuracy": the ResNet cells, "rmse": the MLP
    cells) at the restored weights (at_best_valid), and our runs by status. At smoke scale our values stay
    empty: a published number never gets a smoke neighbour."""
    from optrepro.report.published import source_keys

    keys = source_keys(published) if len(published) else {}
    rows = []
    for cell in d.cells:
        metric = metric_of(cell.problem)
        if metric != metric_group:
            continue
        factor, digits = _fmt(metric)
        for arm_name in cell.arms:
            arm = d.arms[arm_name]
            pub = None
            if arm.published and len(published):
                hit = published[(published["cell"] == cell.name) & (published["arm"] == arm.published)
                                & (published["metric"] == metric) & (published["split"] == "test")]
                pub = hit.iloc[0] if len(hit) else None
            row = {"cell": cell.name, "arm": arm.label, "published": DASH, "source": DASH}
            if pub is not None:
                row["published"] = f"{pub['value'] * factor:.{digits}f}" + (
                    f" ± {pub['sd'] * factor:.{digits}f}" if pd.notna(pub["sd"]) else "")
                row["source"] = keys[(pub["paper"], pub["source"])]
            mine_all = frame[(frame["tags.stage"] == "main") & (frame["tags.cell"] == cell.name)
                             & (frame["tags.arm"] == arm_name)]
            for protocol in design.PROTOCOLS:
                mine = mine_all[mine_all["tags.protocol"] == protocol]
                values = _usable(mine, f"at_best_valid.test.{metric}")
                row[protocol.replace("_", "-")] = (mean_sd(values, factor, digits) if scale != "smoke" and len(values)
                                                   else DASH)
            row["runs"] = _status_counts(mine_all)
            rows.append(row)
    return pd.DataFrame(rows, columns=["cell", "arm", "published", "source", "as-run", "redrawn", "runs"])


def targets(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(cell, protocol) -> the validation-loss target of time-to-target: the median over Adam's runs of their
    lowest monitored validation loss."""
    out = {}
    main = frame[(frame["tags.stage"] == "main") & (frame["tags.arm"] == "adam")]
    for (cell, protocol), rows in main.groupby(["tags.cell", "tags.protocol"]):
        best = [min((v for _, v in curve if not math.isnan(v)), default=math.inf)
                for curve in rows.get("monitor_curve", pd.Series(dtype=object)).dropna()]
        best = [b for b in best if math.isfinite(b)]
        if best:
            out[(cell, protocol)] = float(np.median(best))
    return out


def epochs_to_target(curve: Iterable[tuple[int, float]], target: float) -> float:
    """The first epoch whose monitored validation loss is at or below `target`; NaN if none is."""
    for epoch, value in curve:
        if not math.isnan(value) and value <= target:
            return float(epoch)
    return math.nan


def convergence_rows(d: design.Design, frame: pd.DataFrame, published: pd.DataFrame, scale: str,
                     protocol: str = "redrawn") -> pd.DataFrame:
    """Per cell and arm: the notebooks' epoch count (len(history), the patience window included) beside the
    published one, epochs to the best evaluation, and epochs and seconds to Adam's median best validation
    loss (runs reaching it / runs). Seconds are epochs x the run's mean time per epoch (evaluation included)."""
    goal = targets(frame)
    rows = []
    for cell in d.cells:
        mine_cell = main_runs(frame, protocol)
        mine_cell = mine_cell[mine_cell["tags.cell"] == cell.name]
        for arm_name in cell.arms:
            arm = d.arms[arm_name]
            mine = mine_cell[(mine_cell["tags.arm"] == arm_name) & mine_cell["status"].isin(["ok", "diverged"])]
            pub = None
            if arm.published and len(published):
                hit = published[(published["cell"] == cell.name) & (published["arm"] == arm.published)
                                & (published["metric"] == "epochs_to_converge")]
                pub = hit.iloc[0] if len(hit) else None
            to_target, seconds = [], []
            target = goal.get((cell.name, protocol))
            for _, run in mine.iterrows():
                curve = run.get("monitor_curve")
                e = epochs_to_target(curve, target) if target is not None and isinstance(curve, tuple) else math.nan
                to_target.append(e)
                seconds.append(e * run.get("epoch_time_s", math.nan))
            reached = [e for e in to_target if not math.isnan(e)]
            secs = [s for s in seconds if not math.isnan(s)]
            rows.append({
                "cell": cell.name, "arm": arm.label,
                "published": f"{pub['value']:.1f} ± {pub['sd']:.1f}" if pub is not None else DASH,
                "epochs": mean_sd(_usable(mine, EPOCHS), 1.0, 1) if scale != "smoke" else DASH,
                "to best": mean_sd(_usable(mine, "at_best_valid.epoch"), 1.0, 1, n=False),
                "to target": (f"{np.median(reached):.0f} ({len(reached)}/{len(to_target)})" if reached
                              else f"-- (0/{len(to_target)})"),
                "seconds": f"{np.median(secs):.1f}" if secs else DASH,
            })
    return pd.DataFrame(rows, columns=["cell", "arm", "published", "epochs", "to best", "to target", "seconds"])


def paired(frame: pd.DataFrame, cell: str, method: str, baseline: str, column: str,
           protocol: str = "redrawn", stage_method: str = "main", stage_baseline: str = "main"):
    """The paired comparison (optrepro.report.stats) of two arms of a cell on their shared seeds; None with
    fewer than 2 pairs."""
    def values(arm: str, stage: str) -> pd.Series:
        rows = main_runs(frame, protocol, stage)
        rows = rows[(rows["tags.cell"] == cell) & (rows["tags.arm"] == arm) & rows["status"].isin(["ok", "diverged"])]
        v = pd.to_numeric(rows.set_index("seed")[column], errors="coerce") if column in rows.columns else pd.Series(dtype=float)
        return v[v.notna() & np.isfinite(v)]

    m, b = values(method, stage_method), values(baseline, stage_baseline)
    common = m.index.intersection(b.index)
    if len(common) < 2:
        return None
    return stats.paired_comparison(m.loc[common].values, b.loc[common].values)


def _effect(comparison, factor: float, digits: int) -> str:
    if comparison is None:
        return DASH
    low, high = comparison.interval(0.95)
    return f"{comparison.estimate * factor:+.{digits}f} [{low * factor:+.{digits}f}, {high * factor:+.{digits}f}]"


def reading(comparison, delta_star: float, sign: int) -> str:
    """What a CaAdam-minus-control difference says: "tie" when its 90 % interval lies within ±delta_star
    (TOST at 5 %), "CaAdam better"/"control better" when the 95 % interval excludes 0, else "inconclusive"."""
    if comparison is None:
        return DASH
    if comparison.p_equivalence(delta_star) < 0.05:
        return "tie"
    low, high = comparison.interval(0.95)
    if low > 0 or high < 0:
        return "CaAdam better" if sign * comparison.estimate > 0 else "control better"
    return "inconclusive"


def control_rows(d: design.Design, frame: pd.DataFrame, delta_star: Mapping[str, float]) -> pd.DataFrame:
    """Per cell and connection strategy: the kernel factor S, and the paired effects (redrawn protocol, 95 %
    interval) of CaAdam (reference) minus Adam, CaAdam minus Adam at lr x S, and the reading of the latter."""
    from optrepro.optim.caadam_rules import reference_multipliers

    rows = []
    for cell in d.cells:
        metric = metric_of(cell.problem)
        factor, digits = _fmt(metric)
        sign = 1 if higher_is_better(metric) else -1
        column = f"at_best_valid.test.{metric}"
        for strategy, method in (("additive", "add_ref"), ("multiplicative", "mul_ref")):
            control = next((a.name for a in d.arms.values() if a.lr_of == f"caadam_{strategy}"), None)
            if method not in cell.arms or control is None or control not in cell.arms:
                continue
            kernel, one_d = reference_multipliers(design.kernel_counts(cell.problem, cell.problem_args, d.scale),
                                                  strategy)
            vs_control = paired(frame, cell.name, method, control, column)
            rows.append({"cell": cell.name, "strategy": strategy[:3], "S kernel / 1-D": f"{kernel:.4f} / {one_d:.4f}",
                         "CaAdam - Adam": _effect(paired(frame, cell.name, method, "adam", column), factor, digits),
                         "CaAdam - control": _effect(vs_control, factor, digits),
                         "reading": reading(vs_control, delta_star[metric], sign)})
    return pd.DataFrame(rows, columns=["cell", "strategy", "S kernel / 1-D", "CaAdam - Adam", "CaAdam - control",
                                       "reading"])


def selections(d: design.Design) -> dict[tuple[str, str], dict[str, Any]]:
    """(cell, arm) -> the selection record the tuning wrote (present once the sweep ran)."""
    out = {}
    for cell in d.swept_cells():
        for arm in d.tuned_arms(cell):
            path = Path(design.selection_path(d, cell.name, arm))
            if path.exists():
                out[(cell.name, arm)] = json.loads(path.read_text())
    return out


def sweep_rows(d: design.Design, frame: pd.DataFrame, scale: str) -> pd.DataFrame:
    """Per swept cell and arm: the winning lr (x the published 1e-3 or the control's lr), the tuned arm's test
    metric, and its paired effect against tuned Adam and against the same arm untuned."""
    chosen = selections(d)
    rows = []
    for cell in d.swept_cells():
        metric = metric_of(cell.problem)
        factor, digits = _fmt(metric)
        column = f"at_best_valid.test.{metric}"
        for arm in d.tuned_arms(cell):
            record = chosen.get((cell.name, arm))
            tuned = main_runs(frame, "redrawn", "tuned")
            tuned = tuned[(tuned["tags.cell"] == cell.name) & (tuned["tags.arm"] == arm)]
            values = _usable(tuned, column)
            rows.append({
                "cell": cell.name, "arm": d.arms[arm].label,
                "lr x": f"{record['lr_factor']:g}" if record else DASH,
                "tuned": mean_sd(values, factor, digits) if len(values) else DASH,
                "tuned - tuned Adam": (DASH if arm == "adam" else _effect(
                    paired(frame, cell.name, arm, "adam", column, stage_method="tuned", stage_baseline="tuned"),
                    factor, digits)),
                "tuned - untuned": _effect(paired(frame, cell.name, arm, arm, column, stage_method="tuned"),
                                           factor, digits),
            })
    return pd.DataFrame(rows, columns=["cell", "arm", "lr x", "tuned", "tuned - tuned Adam", "tuned - untuned"])


def _signed_counts(comparisons: Iterable, sign: int) -> tuple[int, int, int]:
    """(better, worse, neither) by the 95 % interval of each comparison, in the direction `sign`."""
    better = worse = neither = 0
    for c in comparisons:
        low, high = c.interval(0.95)
        if low > 0 or high < 0:  # the interval excludes 0
            better, worse = (better + 1, worse) if sign * c.estimate > 0 else (better, worse + 1)
        else:
            neither += 1
    return better, worse, neither


def register_effects(d: design.Design, frame: pd.DataFrame) -> dict[str, str]:
    """The effect of each ablation the register names, in words, from the full-scale runs."""
    effects = {}
    better = worse = neither = 0
    for cell in d.cells:
        metric = metric_of(cell.problem)
        sign = 1 if higher_is_better(metric) else -1
        column = f"at_best_valid.test.{metric}"
        found = [c for c in (paired(frame, cell.name, f"{s}_desc", f"{s}_ref", column) for s in ("add", "mul", "depth")
                             if f"{s}_desc" in cell.arms and f"{s}_ref" in cell.arms) if c is not None]
        b, w, n = _signed_counts(found, sign)
        better, worse, neither = better + b, worse + w, neither + n
    effects["caadam-keras-name-collision"] = (
        f"described vs reference mode, test metric, protocol redrawn, over cells x strategies: described better in "
        f"{better}, worse in {worse}, no difference shown in {neither} (95 % intervals)")
    ratios = []
    for cell in d.cells:
        metric = f"at_best_valid.test.{metric_of(cell.problem)}"
        sds = []
        for protocol in design.PROTOCOLS:
            rows = main_runs(frame, protocol)
            values = _usable(rows[(rows["tags.cell"] == cell.name) & (rows["tags.arm"] == "adam")], metric)
            sds.append(float(values.std(ddof=1)) if len(values) > 1 else math.nan)
        if all(math.isfinite(s) and s > 0 for s in sds):
            ratios.append(sds[1] / sds[0])
    effects["caadam-shared-initialization"] = (
        f"sd of Adam's test metric, redrawn / as-run: median {np.median(ratios):.2f} over {len(ratios)} cells"
        if ratios else "no cell with both protocols")
    main = frame[frame["tags.stage"] == "main"].drop_duplicates("run_id")
    both = main[main["restored.epoch"].notna() & main["at_best_valid.epoch"].notna()] \
        if {"restored.epoch", "at_best_valid.epoch"} <= set(main.columns) else main.iloc[0:0]
    differ = both[both["restored.epoch"] != both["at_best_valid.epoch"]]
    effects["caadam-val-loss-monitor"] = (
        f"the restored epoch differs from the lowest-valid/loss epoch in {len(differ)} of {len(both)} runs")
    return effects


# --- multipliers, from the models -----------------------------------------------------------------------------

def models() -> list[tuple[str, Any]]:
    """(name, full-size model) of every CaAdam cell: ResNet-20 with 10 and 100 classes (CIFAR-10 and
    Fashion-MNIST-56 share the first: FMNIST is replicated to 3 channels) and the six MLPs on 8 inputs."""
    from optrepro.problems.models.keras_nets import KerasMLP, KerasResNet
    from optrepro.problems.catalog_caadam import parse_hidden

    out = [("ResNet-20, 10 classes", KerasResNet(10)), ("ResNet-20, 100 classes", KerasResNet(100))]
    for hidden in ("64,32", "128,64,32", "128,128,64", "256,128,64,32", "128,128,128,128,128", "1024,256,64,16"):
        units = parse_hidden(hidden)
        out.append((f"MLP [{', '.join(map(str, units))}]" if len(set(units)) > 1 or len(units) < 5
                    else f"MLP [{units[0]}x{len(units)}]", KerasMLP(8, units)))
    return out


def factor_ranges(model, strategy: str, mode: str) -> dict[str, tuple[float, float]]:
    """{"kernel": (min, max), "1-D": (min, max)} of CaAdam's factors on `model` (torch)."""
    from optrepro.optim.caadam import caadam_factors

    factors = caadam_factors(model, strategy, mode)
    shapes = dict(model.named_parameters())
    out = {}
    for kind, keep in (("kernel", lambda p: p.ndim > 1), ("1-D", lambda p: p.ndim <= 1)):
        values = [v for name, v in factors.items() if keep(shapes[name])]
        out[kind] = (min(values), max(values))
    return out


def multiplier_rows() -> pd.DataFrame:
    """CaAdam's learning-rate multipliers on the full-size models, per model and mode: the kernels' and the 1-D
    tensors' factors of the connection strategies (one value each in reference mode, a range in described
    mode) and depth's range over all tensors."""
    def span(lo_hi: tuple[float, float]) -> str:
        lo, hi = lo_hi
        return f"{lo:.4f}" if abs(hi - lo) < 5e-5 else f"{lo:.3f}-{hi:.3f}"

    rows = []
    for name, model in models():
        for mode, short in (("reference", "ref"), ("described", "desc")):
            row = {"model": name, "mode": short}
            for strategy, key in (("additive", "Add"), ("multiplicative", "Mul")):
                r = factor_ranges(model, strategy, mode)
                row[f"{key} kernel"] = span(r["kernel"])
                row[f"{key} 1-D"] = span(r["1-D"])
            r = factor_ranges(model, "depth", mode)
            row["Depth"] = span((min(r["kernel"][0], r["1-D"][0]), max(r["kernel"][1], r["1-D"][1])))
            rows.append(row)
    return pd.DataFrame(rows)


def described_layer_rows(model, strategies: Iterable[str] = ("additive", "multiplicative")) -> pd.DataFrame:
    """Described mode on one model, per distinct kernel count: the kernels with that count, c, and S per
    strategy (the paper's per-layer rule: a layer's own connection count against the model's min/median/max)."""
    from optrepro.optim.caadam import caadam_factors

    factors = {s: caadam_factors(model, s, "described") for s in strategies}
    kernels = [(name, p.numel()) for name, p in model.named_parameters() if p.ndim > 1]
    rows = []
    for c in sorted({n for _, n in kernels}):
        names = [name.removesuffix(".weight") for name, n in kernels if n == c]
        row = {"kernels": ", ".join(names) if len(names) <= 2 else f"{names[0]} and {len(names) - 1} more",
               "c": c}
        first = next(name for name, n in kernels if n == c)
        for s in strategies:
            row[f"S {s[:3]}"] = round(factors[s][first], 4)
        rows.append(row)
    return pd.DataFrame(rows)
