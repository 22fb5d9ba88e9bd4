"""The cross-paper arena: the papers' own optimizers added to the Crowded Valley protocol (torch-free).

Every method of config/papers/arena.yaml (label, registry name, fixed hyperparameters, search space) and every
baseline of the Crowded Valley study (its optimizers, with their study search spaces) is planned with the study's
stages (optrepro.planners.crowded_valley.plan_study): one-shot runs, tuning runs drawn from the one committed
sample sequence, and each budget's winner re-run with more seeds. A baseline run is the same spec as the study's,
so it is the same run: the arena reuses the Crowded Valley runs it shares (run ids leave out the paper).

How an outer schedule meets a method follows its registry declaration (OptimizerInfo.lr_schedule), by the
config's `schedule_policy`: `group_lr` methods take every schedule; `refused` ones (line searches and the fuzzy
controller own their step size) run the constant schedule only, and their other cells are not run.

Two more stages: `timing` (one dedicated run per method and problem, seed `seeds.timing`, in batches of their
own, for the wall-time profiles) and `control` (the negative control: uniform Adam at CaAdam's kernel factor,
`control.factors` per problem, beside CaAdam in reference mode).
"""
from __future__ import annotations

from typing import Any, Mapping

from optrepro import optim
from optrepro import fidelity
from optrepro import plan as planmod
from optrepro.planners import register_planner
from optrepro.planners.crowded_valley import (ONESHOT, SCHEDULES, VERSIONS, Method, budgets_of, plan_study)
from optrepro.planners.grid import device_for
from optrepro.registry import check_keys, unknown

POLICIES = ("all", "constant_only")
METHOD_KEYS = {"label", "name", "hparams", "space", "source"}


def methods_of(pconfig: Mapping[str, Any]) -> list[Method]:
    """The baselines (the study version's optimizers, its search spaces) and the config's methods."""
    version = pconfig.get("study", "icml")
    if version not in VERSIONS:
        raise unknown("Crowded Valley study version", version, VERSIONS)
    baselines = VERSIONS[version]["optimizers"] if pconfig.get("baselines", "all") == "all" else pconfig["baselines"]
    out = [Method(name, name, {}, optim.registry.search_space(name, version)) for name in baselines]
    for m in pconfig.get("methods", []):
        check_keys("arena method key", m, METHOD_KEYS)
        optim.info(m["name"])  # an unknown optimizer is refused with the valid names
        out.append(Method(m.get("label", m["name"]), m["name"], dict(m.get("hparams") or {}), dict(m["space"])))
    labels = [m.label for m in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"config/papers/arena.yaml: the method label {dupes[0]!r} is used twice; give it a `label`")
    return out


def schedules_for(method: Method, schedules: list[str], policy: Mapping[str, str]) -> list[str]:
    """The schedules a method runs: all of them, or the constant one only for methods whose declaration the
    policy maps to constant_only (a method that owns its step size cannot be scheduled)."""
    declared = optim.info(method.name).lr_schedule
    rule = policy.get(declared, "all")
    if rule not in POLICIES:
        raise unknown(f"schedule policy for lr_schedule {declared!r}", rule, POLICIES)
    return [s for s in schedules if rule == "all" or s == "none"]


@register_planner("arena")
def arena_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    paper = pconfig["paper"]
    budgets = budgets_of({"version": pconfig.get("study", "icml"), "budgets": pconfig.get("budgets")})
    wanted = [ONESHOT, *budgets]
    seeds = pconfig["seeds"]
    schedules = list(pconfig["schedules"])
    for s in schedules:
        if s not in SCHEDULES:
            raise unknown("Crowded Valley schedule", s, SCHEDULES)
    policy = pconfig.get("schedule_policy", {})
    entries: dict[Any, Any] = {}
    methods = methods_of(pconfig)
    for method in methods:
        plan_study(entries, paper=paper, problems=pconfig["problems"], methods=[method],
                   schedules=schedules_for(method, schedules, policy), wanted=wanted, budgets=budgets, seeds=seeds,
                   scale=scale, global_config=global_config)
        for problem in pconfig["problems"]:  # dedicated timing runs: content of their own (seed), stage of their own
            entries.setdefault(("timing", problem, method.label), planmod.make_spec(
                paper=paper, problem=problem, scale=scale, device=device_for(problem, scale, global_config),
                optimizer=method.name, hparams=method.hparams, schedule=SCHEDULES["none"], seed=seeds["timing"],
                tags={"arm": method.label, "stage": "timing", "schedule": "none", "seed": seeds["timing"]}))
    control = pconfig.get("control")
    if control:
        check_keys("arena control key", control, {"method", "factors"})
        by_label = {m.label: m for m in methods}
        if control["method"] not in by_label:
            raise unknown("arena control method", control["method"], sorted(by_label))
        for problem, factor in control["factors"].items():
            if problem not in pconfig["problems"]:
                continue
            for seed in seeds["oneshot"]:
                entries.setdefault(("control", problem, seed), control_spec(
                    by_label[control["method"]], float(factor), paper=paper, problem=problem, scale=scale, seed=seed,
                    device=device_for(problem, scale, global_config)))
    return list(entries.values())


def control_spec(method: Method, factor: float, *, paper: str, problem: str, scale: str, seed: int,
                 device: str) -> dict:
    """The negative control of `method` (CaAdam in reference mode) at one seed: Adam with the method's one-shot
    moments, epsilon convention (TF-1 semantics: epsilon added to sqrt(v) without bias correction, as Keras' and
    CaAdam's eps-hat) and learning rate times the kernel `factor`, on the same problem arguments (quadratic_deep's
    Hessian draw and data order) as the method's one-shot run of that seed. Where the factor is 1 and the
    parameter is one tensor, the two runs compute the same thing."""
    hp = optim.resolve_hparams(method.name, dict(method.hparams))
    beta1, beta2 = hp["betas"]
    hparams = {"lr": hp["lr"] * factor, "beta1": beta1, "beta2": beta2, "eps": hp["eps"],
               "weight_decay": hp.get("weight_decay", 0.0), "semantics": "tf1" if hp.get("eps_hat") else "torch"}
    problem_args = (fidelity.study_problem_args(ONESHOT, method.name, "none", ONESHOT, seed)
                    if problem == "quadratic_deep" else None)
    return planmod.make_spec(paper=paper, problem=problem, scale=scale, device=device, optimizer="adam",
                             hparams=hparams, schedule=SCHEDULES["none"], seed=seed, problem_args=problem_args,
                             tags={"arm": f"adam_x{factor:g}", "stage": "control", "schedule": "none", "seed": seed,
                                   "budget": ONESHOT, "control_of": method.label})
