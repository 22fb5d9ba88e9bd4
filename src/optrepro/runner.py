"""Batches: many run specs in one process (starting Python with torch costs seconds; a smoke run, milliseconds).

Each run gets a fresh model, seeds and optimizer; datasets are cached across the batch. A run directory is
written under a per-run file lock, so two jobs never train the same run at once; a complete run (its
result.json exists) is skipped; a failing run is recorded in failed.json and the others still run; the
manifest is written last, only when every run is complete, so Snakemake's retry trains only what is missing.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

from optrepro.io import atomic_write_json
from optrepro.plan import check_spec, resolve_deferred, run_id

FAILED = "failed.json"


def configure_torch(threads: int | None) -> None:
    # cuBLAS reads this before CUDA initialises; harmless on torch versions that no longer need it.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    torch.backends.cudnn.benchmark = False
    deterministic_algorithms()


def deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True), without importing torch's compiler stack.

    The public function also sets the inductor config's `deterministic`, and importing that config imports
    torch._inductor and torch._dynamo: 1.2-1.5 s of start-up on the development CPU, for runs that never
    compile. So the ATen flag is set directly here; optim/_compiled.py calls the public function before it
    compiles (inductor is imported then anyway), which brings inductor's flag in line. tests/test_train.py
    checks both: the flag is on, and torch._inductor is not imported."""
    import torch

    if "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def run_one(spec: Mapping[str, Any], results_dir: Path, **train_kwargs) -> dict[str, Any]:
    """Train `spec` under results_dir/runs/<run_id> unless it is complete; return its manifest entry."""
    from filelock import FileLock

    from optrepro.io import atomic_write_json as write
    from optrepro.train import SPEC, load_result, train

    check_spec(spec)
    rid = run_id(spec)
    run_dir = Path(results_dir) / "runs" / rid
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir / ".lock")):
        result = load_result(run_dir)
        if result is None:
            write(run_dir / SPEC, dict(spec))
            (run_dir / FAILED).unlink(missing_ok=True)
            result = train(spec, run_dir, **train_kwargs)
    return {"run_id": rid, "status": result["deterministic"]["status"], "dir": str(run_dir)}


def run_batch(entries: Iterable[Mapping[str, Any]], results_dir: Path, *, manifest: Path | None = None,
              batch_name: str = "", scale: str = "", threads: int | None = None,
              overhead_log: list | None = None, **train_kwargs) -> int:
    """Run every entry (spec or deferred spec); return 0 when all are complete, 1 when any failed.

    SIGTERM/SIGUSR1 stop the batch within one step or evaluation batch (optrepro.train.Interrupted): the run in
    progress writes a checkpoint, finished runs keep their results, and no further run starts."""
    from optrepro.stopping import Interrupted, StopSignals

    configure_torch(threads)
    runs, failures = [], 0
    with StopSignals() as signals:
        for entry in entries:
            if signals.received is not None:  # arrived between runs, or after a run's last check
                raise Interrupted(f"signal {signals.received}: the batch stops before its next run")
            t0 = time.perf_counter()
            try:
                spec = resolve_deferred(entry) if entry.get("deferred") else entry
                done = run_one(spec, results_dir, **train_kwargs)
                if entry.get("deferred"):  # two deferred requests can resolve to one run: the key says which
                    done["key"] = entry["key"]
                runs.append(done)
            except Interrupted:
                raise
            except Exception as exc:  # a crashing spec must not take the batch down with it
                failures += 1
                key = entry.get("key") if entry.get("deferred") else run_id(entry)
                run_dir = Path(results_dir) / "runs" / key
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(run_dir / FAILED, {"run_id": key, "status": "failed", "error": repr(exc),
                                                     "traceback": traceback.format_exc()})
                print(f"optrepro: run {key} failed: {exc!r}", flush=True)
                runs.append({"run_id": key, "status": "failed", "dir": str(run_dir)})
            if overhead_log is not None:
                overhead_log.append(time.perf_counter() - t0)
        if signals.received is not None:  # the last run finished: its result stays, the manifest waits
            raise Interrupted(f"signal {signals.received}: the batch stopped after its last run")
    if manifest is not None and failures == 0:
        atomic_write_json(Path(manifest), {"batch": batch_name, "scale": scale, "runs": runs})
    statuses = collections.Counter(r["status"] for r in runs)
    print(f"optrepro: {len(runs)} runs under {Path(results_dir) / 'runs'}: "
          + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())), flush=True)
    return 1 if failures else 0


def load_entries(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Specs from JSON files holding one spec, a list of specs, or {"specs": [...]}."""
    entries: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and "specs" in data:
            data = data["specs"]
        entries.extend(data if isinstance(data, list) else [data])
    return entries
