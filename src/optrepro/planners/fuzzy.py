"""The fuzzy section's planner: tune every arm on the same short grid, re-run each winner with the final seeds,
and run the ablations from the fuzzy arm's winner (config/papers/fuzzy.yaml; torch-free).

Stages, per protocol (a problem):
  tune   every tuned arm x each of its trials (the same number of trials for every arm, the fuzzy method's own
         knobs included: docs/replication.md "Fair baselines"), one seed (`seeds.tune`)
  final  each tuned arm's winner with every final seed, and each ablation: its base arm's winner with the
         ablation's hyperparameters on top; deferred specs that depend on the protocol's selection file
The winner of an arm is its trial with the best final validation metric (`select`), never a test metric; a
diverged trial never wins (optrepro.tune.select). `optrepro fuzzy-select` writes the selection file
(workflow/rules/fuzzy.smk).

The schedule (`schedule`) is the same for every arm whose step size a schedule drives; an optimizer that owns its
step size (the fuzzy controller: registry lr_schedule "refused") runs at the constant schedule, since its
controller is its schedule (register entry fuzzy-lr-schedule); the control `fd_second_order` is the same
finite-difference optimizer under the shared schedule.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from optrepro import optim, problems
from optrepro import plan as planmod
from optrepro.planners import register_planner
from optrepro.planners.grid import device_for, seed_list
from optrepro.registry import check_keys, unknown

PROTOCOL_KEYS = {"name", "problem", "role", "arms", "controls", "ablations", "epochs", "batch_size", "precision",
                 "eval_every", "problem_args"}
ARM_KEYS = {"optimizer", "hparams", "trials"}
ABLATION_KEYS = {"of", "hparams"}
SELECT_KEYS = {"split", "metric", "higher_is_better"}
STAGES = ("tune", "final")


def selection_file(results_dir: str, problem: str) -> str:
    return f"{results_dir}/fuzzy/select/{problem}.json"


def _check(pconfig: Mapping[str, Any]) -> None:
    """Names and trial counts, before any compute: every tuned arm of a protocol gets the same number of trials."""
    arms, ablations = pconfig["arms"], pconfig.get("ablations", {})
    for label, arm in arms.items():
        check_keys(f"key of arm {label!r}", arm, ARM_KEYS)
        optim.registry.resolve_hparams(arm["optimizer"], arm.get("hparams", {}))
        for trial in arm["trials"]:
            optim.registry.resolve_hparams(arm["optimizer"], {**arm.get("hparams", {}), **trial})
        if "rule_base" in arm.get("hparams", {}):
            _check_rule_base(arm["hparams"]["rule_base"])
    for label, ablation in ablations.items():
        check_keys(f"key of ablation {label!r}", ablation, ABLATION_KEYS)
        if ablation["of"] not in arms:
            raise unknown(f"arm the ablation {label!r} starts from", ablation["of"], arms)
        optim.registry.resolve_hparams(arms[ablation["of"]]["optimizer"], ablation.get("hparams", {}))
        if "rule_base" in ablation.get("hparams", {}):
            _check_rule_base(ablation["hparams"]["rule_base"])
    for protocol in pconfig["protocols"]:
        check_keys(f"key of protocol {protocol.get('name')!r}", protocol, PROTOCOL_KEYS)
        tuned = list(protocol["arms"]) + list(protocol.get("controls", []))
        for label in tuned:
            if label not in arms:
                raise unknown(f"arm of protocol {protocol['name']!r}", label, arms)
        for label in protocol.get("ablations", []):
            if label not in ablations:
                raise unknown(f"ablation of protocol {protocol['name']!r}", label, ablations)
            if ablations[label]["of"] not in tuned:
                raise ValueError(f"ablation {label!r} starts from arm {ablations[label]['of']!r}, which protocol "
                                 f"{protocol['name']!r} does not tune")
        counts = {label: len(arms[label]["trials"]) for label in tuned}
        if len(set(counts.values())) != 1:
            raise ValueError(f"protocol {protocol['name']!r}: every arm needs the same number of trials (fair "
                             f"tuning, docs/replication.md), got {counts}")


def _check_rule_base(name: str) -> None:
    from optrepro.optim.fuzzy_controller import RULE_BASES  # numpy only

    if name not in RULE_BASES:
        raise unknown("rule_base (the fuzzy controller's rules)", name, RULE_BASES)


def schedule_for(optimizer: str, schedule: Mapping[str, Any]) -> Mapping[str, Any]:
    """The shared schedule, or the constant one for an optimizer that owns its step size."""
    return {"name": "constant"} if optim.info(optimizer).owns_step_size else schedule


@register_planner("fuzzy")
def fuzzy_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    _check(pconfig)
    paper = pconfig["paper"]
    results_dir = f"{global_config.get('results_dir', 'results')}/{scale}"
    arms, ablations = pconfig["arms"], pconfig.get("ablations", {})
    seeds = {k: seed_list(v) for k, v in pconfig["seeds"].items()}
    entries: list = []
    for protocol in pconfig["protocols"]:
        problem = protocol["problem"]
        defaults = problems.info(problem).defaults[scale]  # resolved here: deferred templates carry their length
        common = dict(paper=paper, problem=problem, scale=scale, device=device_for(problem, scale, global_config),
                      epochs=protocol.get("epochs", defaults["epochs"]),
                      batch_size=protocol.get("batch_size", defaults["batch_size"]),
                      eval_every=protocol.get("eval_every", defaults.get("eval_every", 1)),
                      precision=protocol.get("precision", "fp32"),
                      problem_args=problems.registry.resolve_args(problem, protocol.get("problem_args") or {}))
        base_tags = {"experiment": protocol["name"]}
        tuned = [(label, "arm") for label in protocol["arms"]] + \
                [(label, "control") for label in protocol.get("controls", [])]
        for label, role in tuned:
            arm = arms[label]
            schedule = schedule_for(arm["optimizer"], pconfig["schedule"])
            for i, trial in enumerate(arm["trials"]):
                for seed in seeds["tune"]:
                    entries.append(planmod.make_spec(
                        **common, optimizer=arm["optimizer"], hparams={**arm.get("hparams", {}), **trial},
                        schedule=schedule, seed=seed,
                        tags={**base_tags, "arm": label, "role": role, "stage": "tune", "trial": i, "seed": seed}))
        finals = [(label, role, label, {}) for label, role in tuned] + \
                 [(label, "ablation", ablations[label]["of"], ablations[label].get("hparams", {}))
                  for label in protocol.get("ablations", [])]
        for label, role, tuned_arm, overrides in finals:
            optimizer = arms[tuned_arm]["optimizer"]
            for seed in seeds["final"]:
                tags = {**base_tags, "arm": label, "role": role, "stage": "final", "tuned_arm": tuned_arm,
                        "seed": seed}
                # the spec is checked now (names, hyperparameters); the winner's values come at run time
                template = dict(**common, optimizer=optimizer, hparams=dict(overrides),
                                schedule=schedule_for(optimizer, pconfig["schedule"]), seed=seed, tags=tags)
                planmod.make_spec(**{**template, "hparams": {**arms[tuned_arm].get("hparams", {}), **overrides}})
                entries.append(planmod.DeferredSpec(
                    key=f"{paper}/{problem}/{label}/seed{seed}", template=template,
                    depends_on=selection_file(results_dir, problem), resolver="fuzzy.winner", tags=tags))
    return entries


@planmod.register_resolver("fuzzy.winner")
def fuzzy_winner(template: Mapping[str, Any], selection: Mapping[str, Any]) -> dict:
    """The template with its tuned arm's winning hyperparameters, the template's own (an ablation's) on top."""
    tags = template["tags"]
    winners = selection["winners"]
    if tags["tuned_arm"] not in winners:
        raise unknown(f"tuned arm in {template['problem']}'s selection file", tags["tuned_arm"], winners)
    winner = winners[tags["tuned_arm"]]
    return planmod.make_spec(**{**template, "hparams": {**winner["hparams"], **template.get("hparams", {})},
                                "tags": {**tags, "trial": winner["trial"]}})


# --- the selection job --------------------------------------------------------------------------------------

def tuning_candidates(manifests, split: str, metric: str, problem: str | None = None) -> list[dict]:
    """One candidate per tuning run of `problem` (every problem when None) in the manifests: its arm, trial,
    hyperparameters and final split/metric (NaN for a diverged or failed run). A batch may hold several cheap
    problems."""
    out = []
    for manifest in manifests:
        for entry in json.loads(Path(manifest).read_text())["runs"]:
            run_dir = Path(entry["dir"])
            spec = json.loads((run_dir / "spec.json").read_text())
            if spec["tags"].get("stage") != "tune" or (problem is not None and spec["problem"] != problem):
                continue
            result_path = run_dir / "result.json"
            det = json.loads(result_path.read_text())["deterministic"] if result_path.exists() else {}
            value = det.get("final", {}).get(split, {}).get(metric) if det.get("status") == "ok" else None
            out.append({"arm": spec["tags"]["arm"], "sample": int(spec["tags"]["trial"]),
                        "hparams": spec["optimizer"]["hparams"], "run_id": entry["run_id"],
                        "status": det.get("status", entry.get("status", "failed")),
                        "value": float(value) if value is not None else math.nan})
    return out


def select_winners(candidates: list[dict], higher_is_better: bool) -> dict[str, dict]:
    """Per arm, the trial with the best value (the mean over its tuning seeds; NaN, never a winner, when one of its
    runs diverged or failed); ties go to the lower trial (optrepro.tune.select)."""
    from optrepro.tune import select

    trials: dict[tuple[str, int], list[dict]] = {}
    for c in candidates:
        trials.setdefault((c["arm"], c["sample"]), []).append(c)
    by_arm: dict[str, list[dict]] = {}
    for (arm, sample), runs in sorted(trials.items()):
        values = [r["value"] for r in runs]
        by_arm.setdefault(arm, []).append({
            "sample": sample, "hparams": runs[0]["hparams"], "run_id": runs[0].get("run_id"),
            "value": sum(values) / len(values),  # NaN if any is NaN
            "status": "ok" if all(r["status"] == "ok" for r in runs) else "diverged"})
    winners = {}
    for arm, cells in sorted(by_arm.items()):
        best = select(cells, higher_is_better)
        winners[arm] = {**{k: v for k, v in best.items() if k != "sample"}, "trial": best["sample"]}
    return winners


def _cmd_select(args) -> int:
    from optrepro.io import atomic_write_json
    from optrepro.workflow import paper_config, plan_manifests

    pconfig = paper_config(Path(args.config_dir), "fuzzy", args.scale)
    rule = {"split": "valid", "metric": "accuracy", "higher_is_better": True, **pconfig.get("select", {})}
    check_keys("key of the fuzzy config's select", rule, SELECT_KEYS)
    manifests = plan_manifests(Path(args.plan), "fuzzy", stage="tune", problem=args.problem)
    candidates = tuning_candidates(manifests, rule["split"], rule["metric"], args.problem)
    if not candidates:
        raise ValueError(f"no tuning run of {args.problem} in the plan's manifests ({args.plan})")
    winners = select_winners(candidates, rule["higher_is_better"])

    def finite(record):  # JSON has no NaN: a diverged run's value is null
        return {**record, "value": record["value"] if math.isfinite(record["value"]) else None}

    atomic_write_json(Path(args.output), {
        "problem": args.problem, "rule": f"final {rule['split']} {rule['metric']}",
        "higher_is_better": rule["higher_is_better"],
        "winners": {arm: finite(w) for arm, w in winners.items()},
        "candidates": [finite(c) for c in sorted(candidates, key=lambda c: (c["arm"], c["sample"]))]})
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("fuzzy-select", help="pick each fuzzy-section arm's tuning winner by its final validation "
                                            "metric (config/papers/fuzzy.yaml select); torch-free")
    p.add_argument("--plan", required=True, help="the plan directory (results/<scale>/plans/current)")
    p.add_argument("--problem", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--config-dir", default="config")
    p.add_argument("--output", required=True)
    p.set_defaults(func=_cmd_select)
