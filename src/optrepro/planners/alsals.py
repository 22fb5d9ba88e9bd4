"""The ALSALS planner: tasks x arms x seeds, an Adam learning-rate sweep with its winner re-run, and an Adam arm
given ALSALS's measured compute (config/papers/alsals.yaml explains the format).

Three kinds of arm:

- plain: `{optimizer, hparams, schedule}`, one run per seed (stage `main`);
- tuned (`tune:`): the learning rate is swept with `tune.seeds` on the task's tuning problem arguments (a
  validation split carved from the training data; stage `tune`, arm `<arm>_sweep`); the winner is re-run with
  every seed on the task's own problem arguments (stage `tuned`), a deferred spec resolved from
  `<results>/<scale>/alsals/<task>/<arm>_lr.json`, which `select_lr` writes (rule `alsals_select_lr`);
- equal compute (`equal_compute: {like, units_of}`): the tuned arm `like` (same optimizer, hyperparameters and
  schedule, its winning learning rate) trained for the pass units the arm `units_of` measured on the task, a
  deferred spec resolved from `<results>/<scale>/alsals/<task>/<arm>_budget.json`, which `compute_budget` writes
  (rule `alsals_budget`) once the `units_of` runs and the sweep are done. Its stage is `tuned` too (every run that
  uses the sweep's winner): a batch holding both kinds waits for both files, and one job fewer starts.

The unit is docs/replication.md's: a forward+backward pass over one step's batch counts 1, a forward pass alone
1/3 (result.json's `cost_units`). The training loop stops only at epoch ends, so the budget is rounded to whole
epochs; the budget file records the exact ratio, and the section prints it.

    python -m optrepro.planners.alsals select-lr --experiment mrpc --arm adam --split valid --metric loss \\
        --output results/smoke/alsals/mrpc/adam_lr.json <tuning manifests>
    python -m optrepro.planners.alsals budget --experiment mrpc --units-of alsals \\
        --lr results/smoke/alsals/mrpc/adam_lr.json --output results/smoke/alsals/mrpc/adam_equal_compute_budget.json \\
        <main manifests>

Nothing here imports torch: the planner runs at parse time in every Snakemake job.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from optrepro import plan as planmod
from optrepro.planners import register_planner
from optrepro.planners.grid import device_for, seed_list
from optrepro.registry import check_keys, unknown

PAPER = "alsals"
TASK_KEYS = {"name", "problem", "problem_args", "seeds", "epochs", "batch_size", "grad_accum", "eval_every",
             "arms", "hparams", "schedules", "tune"}
ARM_KEYS = {"optimizer", "hparams", "schedule", "tune", "equal_compute"}
TUNE_KEYS = {"lr", "with_lr_of", "seeds", "select"}
TASK_TUNE_KEYS = {"problem_args", "extra_lr"}
SWEEP_SUFFIX = "_sweep"


@dataclass(frozen=True)
class TaskStages:
    """What workflow/rules/alsals.smk needs to know about one task's own stages."""

    task: str
    problem: str
    lr_files: Mapping[str, str]  # tuned arm -> the file its winner is written to
    budget_files: Mapping[str, tuple[str, str, str]]  # equal-compute arm -> (file, tuned arm, units_of arm)
    select: Mapping[str, Mapping[str, str]]  # tuned arm -> {"split", "metric"}


def results_root(scale: str, global_config: Mapping[str, Any]) -> str:
    return f"{global_config.get('results_dir', 'results')}/{scale}/{PAPER}"


def lr_file(task: str, arm: str, scale: str, global_config: Mapping[str, Any]) -> str:
    return f"{results_root(scale, global_config)}/{task}/{arm}_lr.json"


def budget_file(task: str, arm: str, scale: str, global_config: Mapping[str, Any]) -> str:
    return f"{results_root(scale, global_config)}/{task}/{arm}_budget.json"


# --- the config ---------------------------------------------------------------------------------------

def _arms(pconfig: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    arms = dict(pconfig.get("arms") or {})
    for name, arm in arms.items():
        check_keys(f"key of arm {name!r} in paper {PAPER!r}", arm, ARM_KEYS)
        kinds = [k for k in ("tune", "equal_compute") if k in arm]
        if len(kinds) > 1:
            raise ValueError(f"arm {name!r}: `tune` and `equal_compute` exclude each other")
        if "equal_compute" in arm:
            check_keys(f"key of arm {name!r}'s equal_compute", arm["equal_compute"], {"like", "units_of"})
            like = arm["equal_compute"].get("like")
            if like not in arms or "tune" not in arms[like]:
                raise unknown(f"tuned arm for arm {name!r}'s equal_compute.like",
                              like, [a for a in arms if "tune" in arms[a]])
            if arm["equal_compute"].get("units_of") not in arms:
                raise unknown(f"arm for arm {name!r}'s equal_compute.units_of", arm["equal_compute"].get("units_of"),
                              list(arms))
        elif "optimizer" not in arm:
            raise ValueError(f"arm {name!r} names no optimizer")
        if "tune" in arm:
            check_keys(f"key of arm {name!r}'s tune", arm["tune"], TUNE_KEYS)
            check_keys(f"key of arm {name!r}'s tune.select", arm["tune"].get("select", {}), {"split", "metric"})
    return arms


def _tasks(pconfig: Mapping[str, Any], arms: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    tasks = list(pconfig.get("tasks") or [])
    names = [t.get("name") for t in tasks]
    for task in tasks:
        check_keys(f"key of task {task.get('name')!r} in paper {PAPER!r}", task, TASK_KEYS)
        if names.count(task["name"]) > 1:
            raise ValueError(f"task {task['name']!r} appears twice in paper {PAPER!r}")
        for arm in task["arms"]:
            if arm not in arms:
                raise unknown(f"arm of task {task['name']!r}", arm, list(arms))
        for what in ("hparams", "schedules"):  # settings of arms the task does not run are allowed (shared)
            for arm in task.get(what, {}) or {}:
                if arm not in arms:
                    raise unknown(f"arm in {what} of task {task['name']!r}", arm, list(arms))
        check_keys(f"key of task {task['name']!r}'s tune", task.get("tune", {}) or {}, TASK_TUNE_KEYS)
        for arm in task["arms"]:
            spec = arms[arm]
            needs = [arm] if "tune" in spec else []
            if "equal_compute" in spec:
                needs = [spec["equal_compute"]["like"], spec["equal_compute"]["units_of"]]
                for other in needs:
                    if other not in task["arms"]:
                        raise ValueError(f"task {task['name']!r}: arm {arm!r} needs arm {other!r}, which the task "
                                         f"does not run")
                needs = needs[:1]
            if needs and "problem_args" not in (task.get("tune") or {}):
                raise ValueError(f"task {task['name']!r}: arm {needs[0]!r} is tuned, so the task needs "
                                 f"tune.problem_args (a validation split carved from the training data)")
    return tasks


def _arm_settings(task: Mapping[str, Any], name: str, arm: Mapping[str, Any]) -> tuple[str, dict, dict | None]:
    """(optimizer, hyperparameters, schedule) of a plain or tuned arm on a task: the arm's, then the task's."""
    hparams = {**(arm.get("hparams") or {}), **((task.get("hparams") or {}).get(name) or {})}
    schedule = (task.get("schedules") or {}).get(name) or arm.get("schedule")
    return arm["optimizer"], hparams, dict(schedule) if schedule else None


def lr_grid(task: Mapping[str, Any], name: str, arm: Mapping[str, Any]) -> list[float]:
    """The sweep: the arm's grid, the task's extra values and the lr of `with_lr_of` (the scripts' value)."""
    values = [float(v) for v in arm["tune"].get("lr", [])]
    values += [float(v) for v in (task.get("tune") or {}).get("extra_lr", [])]
    other = arm["tune"].get("with_lr_of")
    if other is not None and other in task["arms"]:
        lr = ((task.get("hparams") or {}).get(other) or {}).get("lr")
        if lr is not None:
            values.append(float(lr))
    grid = sorted(set(values))
    if not grid:
        raise ValueError(f"task {task['name']!r}: arm {name!r} has an empty learning-rate grid")
    return grid


# --- the planner --------------------------------------------------------------------------------------

@register_planner("alsals")
def alsals_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    arms = _arms(pconfig)
    precision = pconfig.get("precision", "fp32")
    out: list = []
    for task in _tasks(pconfig, arms):
        # None (the problem's default) is left out: a deferred template is plain data the plan sizes by epochs
        common = {k: v for k, v in dict(
            paper=PAPER, problem=task["problem"], scale=scale, epochs=task.get("epochs"),
            batch_size=task.get("batch_size"), grad_accum=task.get("grad_accum"), eval_every=task.get("eval_every"),
            device=device_for(task["problem"], scale, global_config), precision=precision).items() if v is not None}
        seeds = seed_list(task.get("seeds", 1))
        args = dict(task.get("problem_args") or {})

        def tags(arm: str, seed: int, stage: str, **extra) -> dict:
            return {"experiment": task["name"], "arm": arm, "seed": seed, "stage": stage, **extra}

        for name in task["arms"]:
            arm = arms[name]
            if "equal_compute" in arm:
                like = arm["equal_compute"]["like"]
                optimizer, hparams, schedule = _arm_settings(task, like, arms[like])
                hparams.update((task.get("hparams") or {}).get(name) or {})
                depends = budget_file(task["name"], name, scale, global_config)
                for seed in seeds:
                    template = dict(common, optimizer=optimizer, hparams=hparams, schedule=schedule, seed=seed,
                                    problem_args=args)
                    planmod.make_spec(**template)  # refuses bad names now, not at run time
                    out.append(planmod.DeferredSpec(
                        key=f"{PAPER}/{task['name']}/{name}/seed{seed}", template=template, depends_on=depends,
                        resolver=EQUAL_COMPUTE_RESOLVER, tags=tags(name, seed, "tuned")))
                continue
            optimizer, hparams, schedule = _arm_settings(task, name, arm)
            if "tune" not in arm:
                out.extend(planmod.make_spec(**common, optimizer=optimizer, hparams=hparams, schedule=schedule,
                                             seed=seed, problem_args=args, tags=tags(name, seed, "main"))
                           for seed in seeds)
                continue
            tune_args = dict(task["tune"]["problem_args"])
            for lr in lr_grid(task, name, arm):
                out.extend(planmod.make_spec(**common, optimizer=optimizer, hparams={**hparams, "lr": lr},
                                             schedule=schedule, seed=seed, problem_args=tune_args,
                                             tags=tags(name + SWEEP_SUFFIX, seed, "tune", lr=lr))
                           for seed in seed_list(arm["tune"].get("seeds", [0])))
            depends = lr_file(task["name"], name, scale, global_config)
            for seed in seeds:
                template = dict(common, optimizer=optimizer, hparams=hparams, schedule=schedule, seed=seed,
                                problem_args=args)
                planmod.make_spec(**template)
                out.append(planmod.DeferredSpec(
                    key=f"{PAPER}/{task['name']}/{name}/seed{seed}", template=template, depends_on=depends,
                    resolver="hparams_from", tags=tags(name, seed, "tuned")))
    return out


def task_stages(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> dict[str, TaskStages]:
    """Per task with a tuned or equal-compute arm: the files its own rules write (workflow/rules/alsals.smk)."""
    arms = _arms(pconfig)
    stages = {}
    for task in _tasks(pconfig, arms):
        tuned = [a for a in task["arms"] if "tune" in arms[a]]
        equal = [a for a in task["arms"] if "equal_compute" in arms[a]]
        if not tuned and not equal:
            continue
        stages[task["name"]] = TaskStages(
            task=task["name"], problem=task["problem"],
            lr_files={a: lr_file(task["name"], a, scale, global_config) for a in tuned},
            budget_files={a: (budget_file(task["name"], a, scale, global_config), arms[a]["equal_compute"]["like"],
                              arms[a]["equal_compute"]["units_of"]) for a in equal},
            select={a: {"split": "valid", "metric": "loss", **arms[a]["tune"].get("select", {})} for a in tuned})
    return stages


# --- the stages' own jobs: the sweep's winner, the equal-compute budget ---------------------------------

def _runs(manifests: Sequence[str | Path], experiment: str, arm: str):
    from optrepro.report.aggregate import collect_runs

    runs = collect_runs([str(m) for m in manifests])
    if runs.empty:
        return runs
    return runs[(runs["tags.experiment"] == experiment) & (runs["tags.arm"] == arm)]


def select_lr(manifests: Sequence[str | Path], experiment: str, arm: str, split: str = "valid",
              metric: str = "loss") -> dict[str, Any]:
    """The sweep's winner: the lr whose runs have the lowest mean final `split` `metric` (a diverged run's
    non-finite value counts as worse than any finite one; ties go to the smaller lr)."""
    runs = _runs(manifests, experiment, arm + SWEEP_SUFFIX)
    column = f"final.{split}.{metric}"
    if runs.empty:
        raise ValueError(f"no sweep run of arm {arm!r} on task {experiment!r} in the given manifests")
    if column not in runs.columns:
        raise ValueError(f"the sweep runs of {arm!r} on {experiment!r} have no {column!r}")
    candidates = []
    for lr, group in runs.groupby("optimizer.hparams.lr"):
        values = [float(v) for v in group[column]]
        finite = all(math.isfinite(v) for v in values)
        candidates.append({"lr": float(lr), "value": sum(values) / len(values) if finite else math.inf,
                           "runs": sorted(group["run_id"]), "status": sorted(set(group["status"]))})
    candidates.sort(key=lambda c: (c["value"], c["lr"]))
    best = candidates[0]
    if not math.isfinite(best["value"]):
        raise ValueError(f"every sweep run of {arm!r} on {experiment!r} diverged or has no finite {column!r}")
    return {"task": experiment, "arm": arm, "criterion": f"lowest mean final {split} {metric}",
            "hparams": {"lr": best["lr"]},
            "candidates": [{**c, "value": c["value"] if math.isfinite(c["value"]) else None} for c in candidates]}


def compute_budget(lr_choice: Mapping[str, Any], manifests: Sequence[str | Path], experiment: str,
                   units_of: str) -> dict[str, Any]:
    """The equal-compute run's length: the mean pass units of the `units_of` runs on the task, over Adam's one unit
    per step, in whole epochs (at least one). Steps per epoch come from a completed `units_of` run (same data,
    batch and problem arguments)."""
    runs = _runs(manifests, experiment, units_of)
    runs = runs[runs["status"].isin(("ok", "diverged"))] if not runs.empty else runs
    if runs.empty:
        raise ValueError(f"no finished run of arm {units_of!r} on task {experiment!r} in the given manifests")
    units = [float(u) for u in runs["cost_units"]]
    mean_units = sum(units) / len(units)
    complete = runs[(runs["status"] == "ok") & (runs["epochs_run"] > 0)]
    if complete.empty:
        raise ValueError(f"no run of arm {units_of!r} on task {experiment!r} completed an epoch: steps per epoch "
                         f"are unknown")
    steps_per_epoch = int(complete["steps"].iloc[0]) // int(complete["epochs_run"].iloc[0])
    epochs = max(1, round(mean_units / steps_per_epoch))
    return {"task": experiment, "units_of": units_of, "units": units, "mean_units": mean_units,
            "steps_per_epoch": steps_per_epoch, "epochs": epochs, "units_given": epochs * steps_per_epoch,
            "ratio": epochs * steps_per_epoch / mean_units, "hparams": dict(lr_choice["hparams"]),
            "lr_from": lr_choice.get("arm")}


EQUAL_COMPUTE_RESOLVER = "alsals.equal_compute"


@planmod.register_resolver(EQUAL_COMPUTE_RESOLVER)
def resolve_equal_compute(template: Mapping[str, Any], budget: Mapping[str, Any]) -> dict:
    """The tuned arm's spec with its winning hyperparameters and the budget's epochs."""
    t = dict(template)
    return planmod.make_spec(**{**t, "hparams": {**(t.get("hparams") or {}), **budget["hparams"]},
                                "epochs": int(budget["epochs"])})


# --- CLI (the rules of workflow/rules/alsals.smk) -------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    from optrepro.io import atomic_write_json

    parser = argparse.ArgumentParser(prog="python -m optrepro.planners.alsals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sel = sub.add_parser("select-lr", help="the learning-rate sweep's winner of one arm on one task")
    sel.add_argument("--experiment", required=True)
    sel.add_argument("--arm", required=True)
    sel.add_argument("--split", default="valid")
    sel.add_argument("--metric", default="loss")
    sel.add_argument("--output", required=True)
    sel.add_argument("manifests", nargs="+")
    bud = sub.add_parser("budget", help="the equal-compute budget of one task")
    bud.add_argument("--experiment", required=True)
    bud.add_argument("--units-of", required=True)
    bud.add_argument("--lr", required=True, help="the tuned arm's winner (select-lr's output)")
    bud.add_argument("--output", required=True)
    bud.add_argument("manifests", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "select-lr":
        result = select_lr(args.manifests, args.experiment, args.arm, args.split, args.metric)
    else:
        choice = json.loads(Path(args.lr).read_text())
        result = compute_budget(choice, args.manifests, args.experiment, args.units_of)
    atomic_write_json(Path(args.output), result)
    print(json.dumps({k: v for k, v in result.items() if k != "candidates"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
