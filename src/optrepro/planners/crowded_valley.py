"""The Crowded Valley study (Schmidt, Schneider & Hennig, ICML 2021): optimizers x problems x schedules x budgets.

Per (problem, optimizer, schedule) cell of a grid, three stages:

    oneshot   the optimizer's one-shot defaults, one run per seed of `seeds.oneshot` (42-51)
    tune      the first max(budget) samples of the committed random-search sequence (optrepro.tune), seed
              `seeds.tune` (42); a budget of n is the first n of these runs, so budgets are nested prefixes
    rerun     per budget, the winner of its first n tuning runs (by final validation metric) re-run with every
              seed of `seeds.rerun` (43-51): deferred specs, resolved from the problem's selection file

and a fourth, when the config has `fidelity:`

    fidelity  each published raw run (paper/published/raw/crowded_valley) re-run on its matched Hessian instance,
              seed, schedule and data order (optrepro.fidelity.published_spec), at full size: quadratic_deep runs in
              seconds, so the smoke scale re-runs a handful of them too

The selection file of a problem (`<results>/<paper>/select/<problem>.json`) is written by the `study_select` job
of workflow/rules/study.smk, from the tune stage's runs, with torch-free code (optrepro.tune.select).
Two study versions are selectable: `v1` (arXiv v1: 14 optimizers, budgets small 25 / large 50, momentum-type
hyperparameters log-uniform) and `icml` (ICML 2021: 15 optimizers with AdaBelief, budgets 25 / 50 / 75, 1 - mu
log-uniform). The tuning spaces are the optimizer registry's, per version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from optrepro import optim
from optrepro import plan as planmod
from optrepro.planners import register_planner
from optrepro.planners.grid import device_for
from optrepro.registry import check_keys, unknown

PAPER_OPTIMIZERS = ("sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "adabelief", "adabound",
                    "amsbound", "adadelta", "adagrad", "rmsprop", "lookahead_momentum", "lookahead_radam")
VERSIONS = {
    "v1": {"budgets": {"small": 25, "large": 50}, "optimizers": tuple(o for o in PAPER_OPTIMIZERS if o != "adabelief")},
    "icml": {"budgets": {"small": 25, "medium": 50, "large": 75}, "optimizers": PAPER_OPTIMIZERS},
}
# The study's schedule folder names -> the schedule registry (DeepOBS applies the factor per epoch, 1 at epoch 0).
SCHEDULES = {"none": {"name": "constant"}, "cosine": {"name": "cosine", "unit": "epoch"},
             "cosine_wr": {"name": "cosine_wr"}, "ltr": {"name": "trapezoid"}}
# Problems scored by loss (quadratic and the VAEs); the others by accuracy (DeepOBS).
LOSS_SCORED = ("quadratic_deep", "mnist_vae", "fmnist_vae")
ONESHOT = "oneshot"
GRID_KEYS = {"problems", "optimizers", "schedules", "budgets"}


def scored_by(problem: str) -> tuple[str, bool]:
    """(metric, higher is better) of a DeepOBS problem."""
    return ("loss", False) if problem in LOSS_SCORED else ("accuracy", True)


def selection_file(results_dir: str, problem: str, paper: str = "crowded_valley") -> str:
    """Where the selection job of `paper` writes the tuning winners of a problem (rule study_select)."""
    return f"{results_dir}/{paper}/select/{problem}.json"


def _version(pconfig: Mapping[str, Any]) -> dict[str, Any]:
    version = pconfig.get("version", "icml")
    if version not in VERSIONS:
        raise unknown("Crowded Valley study version", version, VERSIONS)
    return {**VERSIONS[version], "name": version}


def budgets_of(pconfig: Mapping[str, Any]) -> dict[str, int]:
    """The version's budgets, as overridden by the config's `budgets:` (e.g. a tiny one at smoke scale)."""
    return dict(pconfig.get("budgets") or _version(pconfig)["budgets"])


def _grid_axes(grid: Mapping[str, Any], version: Mapping[str, Any], budgets: Mapping[str, int]):
    check_keys("Crowded Valley grid key", grid, GRID_KEYS)
    optimizers = version["optimizers"] if grid.get("optimizers", "all") == "all" else tuple(grid["optimizers"])
    for o in optimizers:
        if o not in version["optimizers"]:
            raise unknown(f"optimizer of the {version['name']} study", o, version["optimizers"])
    schedules = tuple(grid.get("schedules", SCHEDULES))
    for s in schedules:
        if s not in SCHEDULES:
            raise unknown("Crowded Valley schedule", s, SCHEDULES)
    wanted = tuple(grid.get("budgets", (ONESHOT, *budgets)))
    for b in wanted:
        if b != ONESHOT and b not in budgets:
            raise unknown("budget", b, (ONESHOT, *budgets))
    return tuple(grid["problems"]), optimizers, schedules, wanted


@register_planner("crowded_valley")
def crowded_valley_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    from optrepro import fidelity

    version = _version(pconfig)
    budgets = budgets_of(pconfig)
    seeds = pconfig["seeds"]
    paper = pconfig["paper"]
    entries: dict[str, Any] = {}  # by a key of what is computed: grids may overlap
    for grid in pconfig["grids"]:
        problems, optimizers, schedules, wanted = _grid_axes(grid, version, budgets)
        methods = [Method(name, name, {}, optim.registry.search_space(name, version["name"])) for name in optimizers]
        plan_study(entries, paper=paper, problems=problems, methods=methods, schedules=schedules, wanted=wanted,
                   budgets=budgets, seeds=seeds, scale=scale, global_config=global_config,
                   extra_tags={"version": version["name"]})
    for run in _fidelity_runs(pconfig.get("fidelity")):
        spec = fidelity.published_spec(run, scale="full", tags={"arm": run.optimizer, "seed": run.seed,
                                                                "schedule": run.schedule, "budget": run.budget})
        entries.setdefault(("fidelity", run.source), spec)
    return list(entries.values())


@dataclass(frozen=True)
class Method:
    """One arm of a study: its label (tags.arm), registry name, fixed hyperparameters (added to the one-shot
    defaults and to every sample) and search space {hyperparameter: distribution}."""

    label: str
    name: str
    hparams: Mapping[str, Any]
    space: Mapping[str, Mapping[str, Any]]


def plan_study(entries: dict, *, paper: str, problems, methods, schedules, wanted, budgets: Mapping[str, int],
               seeds: Mapping[str, Any], scale: str, global_config: Mapping[str, Any],
               extra_tags: Mapping[str, Any] | None = None) -> None:
    """Add the one-shot, tuning and re-run entries of every problem x method x schedule cell to `entries`
    (keyed by what they compute, so overlapping grids plan a run once). The re-runs are deferred specs resolved
    from `paper`'s selection file of the problem (`<results>/<paper>/select/<problem>.json`)."""
    from optrepro import fidelity, tune

    results_dir = f"{global_config.get('results_dir', 'results')}/{scale}"
    instances = fidelity.read_instance_table()

    def problem_args(problem, stage, name, schedule, budget, seed, sample=None):
        """quadratic_deep's Hessian draw and data order follow the rule that reproduces the published runs."""
        if problem != "quadratic_deep":
            return None
        return fidelity.study_problem_args(stage, name, schedule, budget, seed, sample, instances)

    n_tune = max((budgets[b] for b in wanted if b != ONESHOT), default=0)
    for problem in problems:
        common = dict(paper=paper, problem=problem, scale=scale, device=device_for(problem, scale, global_config))
        for method in methods:
            sampled = tune.samples(method.space, n_tune)
            for schedule in schedules:
                base_tags = {"arm": method.label, "schedule": schedule, **(extra_tags or {})}
                cell = (problem, method.label, schedule)
                if ONESHOT in wanted:
                    for seed in seeds["oneshot"]:
                        entries.setdefault(("oneshot", *cell, seed), planmod.make_spec(
                            **common, optimizer=method.name, hparams=method.hparams, schedule=SCHEDULES[schedule],
                            seed=seed, problem_args=problem_args(problem, ONESHOT, method.name, schedule, ONESHOT, seed),
                            tags={**base_tags, "stage": ONESHOT, "budget": ONESHOT, "seed": seed}))
                for i, hparams in enumerate(sampled):
                    entries.setdefault(("tune", *cell, i), planmod.make_spec(
                        **common, optimizer=method.name, hparams={**method.hparams, **hparams},
                        schedule=SCHEDULES[schedule], seed=seeds["tune"],
                        problem_args=problem_args(problem, "tune", method.name, schedule, None, seeds["tune"], i),
                        tags={**base_tags, "stage": "tune", "sample": i, "seed": seeds["tune"]}))
                for budget in (b for b in wanted if b != ONESHOT):
                    for seed in seeds["rerun"]:
                        template = dict(**common, optimizer=method.name, hparams=dict(method.hparams),
                                        schedule=SCHEDULES[schedule], seed=seed,
                                        problem_args=problem_args(problem, "rerun", method.name, schedule, budget,
                                                                  seed),
                                        tags={**base_tags, "stage": "rerun", "budget": budget, "seed": seed})
                        key = f"{paper}/{problem}/{method.label}/{schedule}/{budget}/seed{seed}"
                        entries.setdefault(("rerun", key), planmod.DeferredSpec(
                            key=key, template=template, depends_on=selection_file(results_dir, problem, paper),
                            resolver="crowded_valley.winner", tags=template["tags"]))


def _fidelity_runs(selection: Mapping[str, Any] | None) -> list:
    """The published runs to re-run: `optimizers` (results folder names, or all) and at most `per_optimizer` each
    (one-shot runs with the constant schedule, lowest seeds first)."""
    if not selection:
        return []
    from optrepro.data import published_raw

    check_keys("fidelity key", selection, {"optimizers", "per_optimizer"})
    runs = sorted(published_raw.load_runs(problem="quadratic_deep"),  # one-shot, constant schedule first
                  key=lambda r: (r.optimizer, r.budget != ONESHOT, r.budget, r.schedule != "none", r.schedule, r.seed))
    wanted = selection.get("optimizers", "all")
    if wanted != "all":
        present = {r.optimizer for r in runs}
        for name in wanted:
            if name not in present:
                raise unknown("optimizer folder of the published raw runs", name, present)
        runs = [r for r in runs if r.optimizer in wanted]
    limit = selection.get("per_optimizer")
    if limit is not None:
        kept, count = [], {}
        for r in runs:
            count[r.optimizer] = count.get(r.optimizer, 0) + 1
            if count[r.optimizer] <= limit:
                kept.append(r)
        runs = kept
    return runs


@planmod.register_resolver("crowded_valley.winner")
def valley_winner(template: Mapping[str, Any], selection: Mapping[str, Any]) -> dict:
    """The template filled with the winner of its (optimizer, schedule, budget) in the problem's selection file."""
    tags = template["tags"]
    key = cell_key(tags["arm"], tags["schedule"], tags["budget"])
    if key not in selection["winners"]:
        raise unknown(f"tuning cell of {template['problem']}'s selection file", key, selection["winners"])
    winner = selection["winners"][key]
    return planmod.make_spec(**{**template, "hparams": {**template.get("hparams", {}), **winner["hparams"]},
                                "tags": {**tags, "sample": winner["sample"]}})


def cell_key(arm: str, schedule: str, budget: str) -> str:
    return f"{arm}/{schedule}/{budget}"
