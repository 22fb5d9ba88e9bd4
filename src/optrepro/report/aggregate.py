"""Aggregation: the current plan's batch manifests -> one tidy row per run.

The caller passes the manifest paths of the current plan (Snakemake knows them); results/ is never globbed, so
a stale run left over from an older plan can never leak into a table. Diverged and failed runs are kept, with
their status, so every table can show every arm.

Columns (dotted paths, so a claim's `select` and `cell_key` can name any of them):
- run_id, status (ok | diverged | failed | missing: listed in a manifest, no result.json), batch, manifest, dir;
- the spec flattened: paper, problem, scale, problem_args.<k>, optimizer.name, optimizer.impl_version,
  optimizer.hparams.<k>, schedule.name, schedule.args.<k>, controllers (JSON text), init_seed, data_seed,
  noise_seed, epochs, batch_size, ..., tags.arm, tags.stage, ...; lists become tuples (hashable);
- seed: "init_seed-data_seed-noise_seed", the key on which arms are paired;
- final.<split>.<metric>, best.<split>.<metric> from result.json; at_best_valid.<split>.<metric> (every split's
  metrics at the evaluation with the lowest validation loss, as Keras EarlyStopping(restore_best_weights)
  restores them) with at_best_valid.epoch and at_best_valid.step; max.<split>.<metric> (maximum over the
  evaluations in metrics.jsonl) and smoothed.<split>.<metric> (mean of the last SMOOTH_WINDOW evaluations);
- steps, epochs_run, forward_passes, backward_passes, cost_units, error, wall_time_s, resumes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from optrepro.report.validation import InputError

RESULT, METRICS, FAILED = "result.json", "metrics.jsonl", "failed.json"
# "smoothed" = the mean of the last evaluations: robust to a noisy final evaluation; 5 is the window the
# report uses everywhere (a claim cannot change it, so one number means one thing in every section).
SMOOTH_WINDOW = 5
STATUSES = ("ok", "diverged", "failed", "missing")


def _float(value: Any) -> float:
    """Metrics as numbers; train.py stores a non-finite value as the string 'nan' / 'inf'."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    elif isinstance(obj, list):
        out[prefix] = tuple(_hashable(v) for v in obj)
    else:
        out[prefix] = obj


def _hashable(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_hashable(v) for v in obj)
    if isinstance(obj, dict):
        return json.dumps(obj, sort_keys=True)
    return obj


def flatten_spec(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    out: dict[str, Any] = {}
    controllers = spec.pop("controllers", None)
    _flatten("", spec, out)
    if controllers is not None:
        out["controllers"] = json.dumps(controllers, sort_keys=True)
    out["seed"] = f"{spec.get('init_seed')}-{spec.get('data_seed')}-{spec.get('noise_seed')}"
    return out


def curve_statistics(path: Path, window: int = SMOOTH_WINDOW) -> dict[str, float]:
    """max.<split>.<metric> and smoothed.<split>.<metric> over the evaluation records of metrics.jsonl."""
    series: dict[str, list[float]] = {}
    if not path.exists():
        return {}
    with open(path) as f:
        for line in f:
            if '"eval"' not in line:  # optimizer-internal records can be many; skip them unparsed
                continue
            record = json.loads(line)
            if record.get("kind") != "eval":
                continue
            for key, value in record.items():
                if "/" in key:
                    series.setdefault(key, []).append(_float(value))
    out: dict[str, float] = {}
    for key, values in series.items():
        split, _, metric = key.partition("/")
        finite = [v for v in values if math.isfinite(v)]
        out[f"max.{split}.{metric}"] = max(finite) if finite else math.nan
        last = values[-window:]
        out[f"smoothed.{split}.{metric}"] = sum(last) / len(last) if all(map(math.isfinite, last)) else math.nan
    return out


def _resolve_dir(entry: dict[str, Any], manifest: Path, root: Path) -> Path:
    """A manifest's `dir` is absolute or relative to the working directory of the batch (the repository root,
    `root`); if the results tree was moved (a bundle import), fall back to <scale dir>/runs/<run_id>, the
    manifest being <scale dir>/batches/<paper>/<problem>/<name>.json."""
    path = Path(entry.get("dir", ""))
    path = path if path.is_absolute() else root / path
    if entry.get("dir") and path.exists():
        return path
    return manifest.parents[3] / "runs" / entry["run_id"]


def load_run(run_dir: Path, listed_status: str | None = None, curves: bool = True) -> dict[str, Any]:
    """One row from a run directory; a run without result.json is `failed` (failed.json) or `missing`."""
    result_path = run_dir / RESULT
    if not result_path.exists():
        row: dict[str, Any] = {"run_id": run_dir.name, "status": "missing", "error": None}
        if (run_dir / FAILED).exists():
            failed = json.loads((run_dir / FAILED).read_text())
            row.update(status="failed", error=failed.get("error"))
        elif listed_status == "failed":
            row["status"] = "failed"
        spec_path = run_dir / "spec.json"
        if spec_path.exists():
            row.update(flatten_spec(json.loads(spec_path.read_text())))
        return row
    result = json.loads(result_path.read_text())
    det, vol = result["deterministic"], result.get("volatile", {})
    row = {"run_id": result["run_id"], "status": det["status"]}
    row.update(flatten_spec(result["spec"]))
    for which in ("final", "best", "at_best_valid"):
        for split, metrics in (det.get(which) or {}).items():
            if not isinstance(metrics, dict):  # at_best_valid's epoch and step
                row[f"{which}.{split}"] = metrics
                continue
            for metric, value in metrics.items():
                row[f"{which}.{split}.{metric}"] = _float(value)
    if curves:
        row.update(curve_statistics(run_dir / METRICS))
    row.update(steps=det.get("steps"), epochs_run=det.get("epochs"), forward_passes=det.get("forward_passes"),
               backward_passes=det.get("backward_passes"), cost_units=_float(det.get("cost_units")),
               error=det.get("error"), wall_time_s=_float(vol.get("wall_time_s")), resumes=vol.get("resumes"))
    return row


def collect_runs(manifests: Iterable[Path | str], root: Path | str = ".", curves: bool = True) -> pd.DataFrame:
    """One row per run request listed in the given batch manifests: per run, plus once per deferred request
    that resolved to it (`request_key`: the deferred spec's key, else the run id). A run listed twice under the
    same request appears once."""
    root = Path(root)
    rows, seen, loaded = [], set(), {}
    for manifest in map(Path, manifests):
        if not manifest.exists():
            raise InputError(f"batch manifest {manifest} does not exist (run the batch, or pass the current "
                             f"plan's manifests only)")
        data = json.loads(manifest.read_text())
        for entry in data.get("runs", []):
            request_key = entry.get("key", entry["run_id"])
            if (entry["run_id"], request_key) in seen:
                continue
            seen.add((entry["run_id"], request_key))
            run_dir = _resolve_dir(entry, manifest, root)
            if entry["run_id"] not in loaded:
                loaded[entry["run_id"]] = load_run(run_dir, entry.get("status"), curves=curves)
            row = dict(loaded[entry["run_id"]])
            row.update(batch=data.get("batch", ""), manifest=str(manifest), dir=str(run_dir),
                       request_key=request_key)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "status", "seed"])
    first = [c for c in ("run_id", "status", "paper", "problem", "scale", "optimizer.name", "tags.arm", "seed")
             if c in frame.columns]
    return frame[first + sorted(c for c in frame.columns if c not in first)].reset_index(drop=True)


def own_runs(runs: pd.DataFrame, paper: str, requests: dict[str, Any] | None) -> pd.DataFrame:
    """The rows of `paper`'s runs, one per label the paper gave each, with its own tags.

    A run asked for by several papers is trained once, in the batch of the first paper that asked, and carries
    that paper's tags in its spec.json. The frame of a paper's manifests can therefore hold other papers' runs
    (a shared batch) and its own runs under another paper's labels; and one paper can ask for one run under
    several labels (a published run that is also a one-shot seed; the winners of two budgets that coincide).
    `requests` is the plan's {request key: [tag sets]} of this paper (papers/<paper>.json; the key is the run
    id, or a deferred spec's key): a row is kept when the paper asked for its request key or when its batch
    belongs to the paper, and a requested row is repeated once per tag set, its `tags.*` columns replaced by
    that set. A deferred request's set is laid over the spec's tags, since its resolver adds tags of its own
    (the winner's sample). Without `requests` the frame is returned as it is."""
    if requests is None or runs.empty:
        return runs
    keys = runs["request_key"] if "request_key" in runs.columns else runs["run_id"]
    owned = runs["batch"].astype(str).str.split("/").str[0] == paper
    asked = keys.isin(list(requests))
    runs, keys = runs[owned | asked], keys[owned | asked]
    tag_columns = [c for c in runs.columns if c.startswith("tags.")]
    rows = []
    for (_, row), key in zip(runs.iterrows(), keys):
        labels = requests.get(key)
        if labels is None:
            rows.append(row.to_dict())
            continue
        for tags in labels:
            flat: dict[str, Any] = {}
            _flatten("tags", tags, flat)
            out = row.to_dict()
            if key == row["run_id"]:
                out.update({column: None for column in tag_columns})
            out.update(flat)
            rows.append(out)
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*runs.columns, *(c for r in rows for c in r)])))
