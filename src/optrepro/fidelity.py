"""Fidelity: our runs against the published runs they re-run, one published run at a time (Crowded Valley).

    runs = published_raw.load_runs(problem="quadratic_deep")           # the authors' per-run curves
    spec = published_spec(runs[0])                                     # our spec for the same run
    train(spec, run_dir)                                                # (the DAG or a notebook runs it)
    compare_curves(run_curve(run_dir), runs[0].curve("test_losses"))  # {"max_rel_dev": ..., "final_ratio": ...}

A published run is matched by its optimizer and hyperparameters (mapped from the TF names of the results' folder),
its seed, its schedule, and its quadratic_deep Hessian instance (the draw of DeepOBS's module-level
RandomState(42) its process had reached; `hessian_instance`). The data order is DeepOBS's TF-1 one: a permutation
drawn from the run's seed and replayed every epoch (problem argument order_seed). Nothing here imports torch:
the instance table is written by `write_instance_table`, which imports the problem code lazily.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from optrepro.data.published_raw import DEFAULT_ROOT, PublishedRun
from optrepro.registry import unknown

PAPER = "crowded_valley"
INSTANCE_TABLE = DEFAULT_ROOT / "crowded_valley" / "hessian_instances.csv"
INSTANCE_COLUMNS = ("budget", "schedule", "problem", "optimizer", "seed", "setting", "started", "epoch0_test_loss",
                    "hessian_instance", "source")
FIRST_SEED = 42  # the study's seeds: 42 (tuning and one-shot) and 43-51 (the re-runs)
STUDY_2021_OPTIMIZERS = ("AdaBeliefOptimizer",)  # added for the ICML version, run in 2021


@dataclass(frozen=True)
class TFOptimizer:
    """How a results folder's optimizer maps to the registry: its name and {TF hyperparameter: ours}.
    TF hyperparameters mapped to None must hold the value in `expect` (they select the variant, or are inert)."""

    name: str
    hparams: Mapping[str, str | None]
    expect: Mapping[str, Any] = None  # type: ignore[assignment]


_ADAM = {"learning_rate": "lr", "beta1": "beta1", "beta2": "beta2", "epsilon": "eps", "use_locking": None}
_BOUND = {**_ADAM, "final_lr": "final_lr", "gamma": "gamma", "amsbound": None}
_MOMENTUM = {"learning_rate": "lr", "momentum": "momentum", "use_locking": None, "use_nesterov": None}
TF_OPTIMIZERS: dict[str, TFOptimizer] = {
    "GradientDescentOptimizer": TFOptimizer("sgd", {"learning_rate": "lr"}),
    "MomentumOptimizer": TFOptimizer("momentum", _MOMENTUM, {"use_nesterov": False, "use_locking": False}),
    "NAGOptimizer": TFOptimizer("nag", _MOMENTUM, {"use_nesterov": True, "use_locking": False}),
    "AdamOptimizer": TFOptimizer("adam", _ADAM, {"use_locking": False}),
    "AMSGrad": TFOptimizer("amsgrad", _ADAM, {"use_locking": False}),
    "NadamOptimizer": TFOptimizer("nadam", _ADAM),
    "RAdamOptimizer": TFOptimizer("radam", _ADAM),
    "AdaBeliefOptimizer": TFOptimizer("adabelief", _ADAM),
    "AdaBoundOptimizer": TFOptimizer("adabound", _BOUND, {"amsbound": False, "use_locking": False}),
    "AMSBoundOptimizer": TFOptimizer("amsbound", _BOUND, {"amsbound": True, "use_locking": False}),
    "AdadeltaOptimizer": TFOptimizer("adadelta", {"learning_rate": "lr", "rho": "rho", "epsilon": "eps",
                                                  "use_locking": None}, {"use_locking": False}),
    "AdagradOptimizer": TFOptimizer("adagrad", {"learning_rate": "lr",
                                                "initial_accumulator_value": "initial_accumulator_value",
                                                "use_locking": None}, {"use_locking": False}),
    "RMSPropOptimizer": TFOptimizer("rmsprop", {"learning_rate": "lr", "decay": "alpha", "momentum": "momentum",
                                                "epsilon": "eps", "centered": "centered", "use_locking": None},
                                    {"use_locking": False}),
    "LookaheadOptimizerMBGDMomentum": TFOptimizer("lookahead_momentum", {**_MOMENTUM, "alpha": "alpha", "k": "k"},
                                                  {"use_nesterov": False, "use_locking": False}),
    "LookaheadOptimizerRAdam": TFOptimizer("lookahead_radam", {**_ADAM, "alpha": "alpha", "k": "k"}),
}
# results' schedule folder -> our schedule (optrepro.schedules), epoch-wise as DeepOBS applied it
SCHEDULES: dict[str, dict[str, Any]] = {
    "none": {"name": "constant"},
    "cosine": {"name": "cosine", "unit": "epoch"},
    "cosine_wr": {"name": "cosine_wr", "unit": "epoch"},
    "ltr": {"name": "trapezoid", "unit": "epoch"},
}


def our_optimizer(folder: str, tf_hparams: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(registry name, hyperparameters) of a results optimizer folder and its logged hyperparameters."""
    if folder not in TF_OPTIMIZERS:
        raise unknown("Crowded Valley optimizer folder", folder, sorted(TF_OPTIMIZERS))
    entry = TF_OPTIMIZERS[folder]
    hparams: dict[str, Any] = {}
    for key, value in tf_hparams.items():
        if key not in entry.hparams:
            raise unknown(f"hyperparameter of {folder}", key, sorted(entry.hparams))
        ours = entry.hparams[key]
        if ours is None:
            expected = (entry.expect or {}).get(key, value)
            if value != expected:
                raise ValueError(f"{folder}: {key}={value!r} is not the variant {entry.name!r} "
                                 f"implements ({key}={expected!r})")
            continue
        hparams[ours] = int(value) if ours == "k" else value
    return entry.name, hparams


def our_schedule(schedule: str) -> dict[str, Any]:
    if schedule not in SCHEDULES:
        raise unknown("Crowded Valley schedule", schedule, sorted(SCHEDULES))
    return dict(SCHEDULES[schedule])


# ------------------------------------------------------------------------------------------------ instances
def read_instance_table(path: str | Path = INSTANCE_TABLE) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["seed"] = int(row["seed"])
        row["hessian_instance"] = int(row["hessian_instance"])
        row["epoch0_test_loss"] = float(row["epoch0_test_loss"])
    return rows


def hessian_instance(run: PublishedRun | Mapping[str, Any], table: Sequence[Mapping[str, Any]] | None = None) -> int:
    """The quadratic_deep Hessian instance for re-running `run` (a PublishedRun or a dict with budget, schedule,
    problem, optimizer, setting, seed).

    What explains the published instances: DeepOBS's TF quadratic_deep draws its Hessian from one module-level
    RandomState(42), so the k-th problem a Python process builds gets draw k, k = the number of runs that process
    had run before. The study's jobs of 2019-2020 looped over seeds in increasing order within one (budget,
    schedule, optimizer, setting) (and over the random-search samples in order: a tuning sample's k is its
    position), so within a job k - seed is constant. The re-runs of seeds 43-51 for the constant schedule were
    mostly one job started at seed 43 (k = seed - 43; seed 42 came from the first sweep, alone), those for the
    other schedules one job over 42..51 (k = seed - 42); some jobs ran other runs first (RMSProp, NAG, AMSGrad:
    k = seed - 34). The jobs of 2021 (AdaBelief, and the re-runs of every tuned setting for the ICML version)
    started one process per run: k = 0. So, in order:
      1. a run whose published file is at hand: the instance its epoch-0 test loss identifies (the table
         paper/published/raw/crowded_valley/hessian_instances.csv, written by `write_instance_table`; the
         fetcher adds any other file of the results repository, so this covers every published run);
      2. otherwise the job of its cell and setting: two or more published re-runs (seeds >= 43) with one
         k - seed, the largest such job if several (seed 42 joins a job only if the job holds seed 42);
      3. otherwise the layout of its kind: 2021 runs (AdaBelief; seeds 43-51 of a tuned setting) k = 0;
         one-shot, constant schedule k = seed - 43 (seed 42: 0); one-shot, other schedules k = seed - 42.
    A tuning sample's k is its position in the search: a planner that knows it passes published_spec(instance=).
    The alternative reading, one fixed instance for every run, is problem_args.hessian_instance set by hand.
    """
    table = read_instance_table() if table is None else table
    get = (lambda k: getattr(run, k)) if isinstance(run, PublishedRun) else run.__getitem__
    key = ("budget", "schedule", "problem", "optimizer", "setting")
    mine = [r for r in table if all(r[k] == get(k) for k in key)]
    seed = int(get("seed"))
    for row in mine:
        if row["seed"] == seed:
            return row["hessian_instance"]
    jobs: dict[int, list[int]] = {}  # k - seed -> the seeds of that job
    for row in mine:
        jobs.setdefault(row["hessian_instance"] - row["seed"], []).append(row["seed"])
    jobs = {off: s for off, s in jobs.items() if len(s) >= 2}  # one run alone does not show a job
    if seed == FIRST_SEED:
        candidates = [(len(s), off) for off, s in jobs.items() if FIRST_SEED in s]
    else:
        candidates = [(len(s), off) for off, s in jobs.items() if min(s) > FIRST_SEED and seed + off >= 0]
    candidates.sort(reverse=True)
    if candidates and (len(candidates) == 1 or candidates[0][0] > candidates[1][0]):
        return seed + candidates[0][1]
    if get("optimizer") in STUDY_2021_OPTIMIZERS or get("budget") != "oneshot":
        return 0
    first = FIRST_SEED if get("schedule") != "none" or seed == FIRST_SEED else FIRST_SEED + 1
    return seed - first


def study_problem_args(stage: str, optimizer: str, schedule: str, budget: str, seed: int, sample: int | None = None,
                       table: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """quadratic_deep's problem arguments for a run of our study grid (the crowded_valley planner), by the same
    rule that reproduces the published runs: a one-shot run takes the instance of the published one-shot run of
    its optimizer, schedule and seed (`hessian_instance`, through the published setting), a tuning run its
    position in the search (sample index), a re-run of a tuned setting a fresh process (draw 0, as the 2021 jobs
    that re-ran the tuned settings). Every run replays the TF-1 data order of its seed."""
    table = read_instance_table() if table is None else table
    # a method the study did not run (the arena's) has no published run: the layout rule of its kind applies
    tf_name = next((tf for tf, o in TF_OPTIMIZERS.items() if o.name == optimizer), optimizer)
    if stage == "tune":
        instance = int(sample)
    elif stage == "oneshot":
        settings = sorted({r["setting"] for r in table if (r["budget"], r["schedule"], r["optimizer"])
                           == ("oneshot", schedule, tf_name)})
        instance = hessian_instance({"budget": "oneshot", "schedule": schedule, "problem": "quadratic_deep",
                                     "optimizer": tf_name, "setting": settings[0] if settings else "", "seed": seed},
                                    table)
    else:
        instance = 0
    return {"hessian_instance": instance, "order_seed": int(seed)}


def write_instance_table(runs: Iterable[PublishedRun], path: str | Path = INSTANCE_TABLE) -> Path:
    """Identify every quadratic_deep run's Hessian instance from its epoch-0 test loss and write the table."""
    from optrepro.problems.deepobs import quadratic_deep_instance_of

    rows = []
    for run in runs:
        if run.problem != "quadratic_deep":
            continue
        loss = run.curve("test_losses")[0]
        rows.append({"budget": run.budget, "schedule": run.schedule, "problem": run.problem,
                     "optimizer": run.optimizer, "seed": run.seed, "setting": run.setting, "started": run.started,
                     "epoch0_test_loss": repr(loss), "hessian_instance": quadratic_deep_instance_of(loss),
                     "source": run.source})
    rows.sort(key=lambda r: (r["budget"], r["schedule"], r["optimizer"], r["started"], r["seed"]))
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INSTANCE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------ specs
def published_spec(run: PublishedRun, *, scale: str = "full", instance: int | None = None,
                   order_seed: int | None | str = "seed", hparams: Mapping[str, Any] | None = None,
                   table: Sequence[Mapping[str, Any]] | None = None, tags: Mapping[str, Any] | None = None,
                   **make_spec_args: Any) -> dict[str, Any]:
    """Our spec for re-running a published run: same optimizer and hyperparameters, seed, schedule, epochs,
    batch size, Hessian instance (`hessian_instance` unless `instance` is given) and TF-1 data order
    (order_seed="seed": the run's seed; None: reshuffle every epoch, the ablation). `hparams` overrides
    hyperparameters (an ablation's reading, e.g. {"rectify": False})."""
    from optrepro.plan import make_spec

    if run.problem != "quadratic_deep":
        raise ValueError(f"fidelity specs exist for quadratic_deep only, not {run.problem!r}")
    name, ours = our_optimizer(run.optimizer, run.hyperparams)
    ours.update(hparams or {})
    problem_args = {"hessian_instance": hessian_instance(run, table) if instance is None else int(instance),
                    "order_seed": run.seed if order_seed == "seed" else order_seed}
    return make_spec(paper=PAPER, problem=run.problem, scale=scale, optimizer=name, hparams=ours,
                     schedule=our_schedule(run.schedule), seed=run.seed, epochs=run.num_epochs,
                     batch_size=run.batch_size, problem_args=problem_args,
                     tags={"stage": "fidelity", "published": run.source, **(tags or {})}, **make_spec_args)


# ------------------------------------------------------------------------------------------------ comparing
def run_curve(run: str | Path | Mapping[str, Any], metric: str = "test/loss") -> list[float | None]:
    """`metric` per epoch (index = epoch) from a run directory's metrics.jsonl, or a runs-frame row (its `dir`)."""
    run_dir = Path(run["dir"]) if isinstance(run, Mapping) else Path(run)
    values: dict[int, float] = {}
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "eval" and metric in record:
                values[int(record["epoch"])] = float(record[metric])
    if not values:
        raise ValueError(f"{run_dir}/metrics.jsonl has no evaluation of {metric!r}")
    return [values.get(e) for e in range(max(values) + 1)]


def compare_curves(ours: Sequence[float | None], published: Sequence[float | None]) -> dict[str, Any]:
    """Largest per-epoch relative deviation |ours - published| / |published| over the epochs both have, the
    epoch where it occurs, and the final ratio ours / published (at the last epoch of the published curve)."""
    pairs = [(e, a, b) for e, (a, b) in enumerate(zip(ours, published)) if a is not None and b is not None]
    if not pairs:
        raise ValueError("the curves share no epoch")
    if len(ours) < len(published) or ours[len(published) - 1] is None or published[-1] is None:
        raise ValueError(f"our curve ({len(ours)} entries) does not reach the published final epoch "
                         f"{len(published) - 1}")
    devs = [(abs(a - b) / abs(b) if b else (0.0 if a == b else math.inf), e) for e, a, b in pairs]
    worst, at = max(devs)
    final_ours, final_published = float(ours[len(published) - 1]), float(published[-1])
    return {"max_rel_dev": worst, "max_dev_epoch": at, "final_ratio": final_ours / final_published,
            "final_ours": final_ours, "final_published": final_published, "epochs_compared": len(pairs)}


def compare_run(run: str | Path | Mapping[str, Any], published: PublishedRun,
                metric: str = "test/loss", curve: str = "test_losses") -> dict[str, Any]:
    """One row of a fidelity table: the published run's identity and `compare_curves` of its curve."""
    row = {"optimizer": published.optimizer, "budget": published.budget, "schedule": published.schedule,
           "seed": published.seed, "source": published.source}
    return {**row, **compare_curves(run_curve(run, metric), published.curve(curve))}
