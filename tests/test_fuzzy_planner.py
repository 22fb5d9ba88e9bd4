"""The fuzzy section's planner (config/papers/fuzzy.yaml): plan counts, one protocol for every arm, equal tuning
budgets, the controller's runs at the constant schedule, the ablations from the fuzzy arm's winner, the selection."""
import copy
import math
from collections import Counter
from pathlib import Path

import pytest

from optrepro.planners.fuzzy import fuzzy_planner, fuzzy_winner, select_winners
from optrepro.workflow import paper_config

ROOT = Path(__file__).resolve().parents[1]


def config(scale="full"):
    return {**paper_config(ROOT / "config", "fuzzy", scale), "paper": "fuzzy"}


def entries(pconfig, scale="full"):
    out = []
    for e in fuzzy_planner(pconfig, scale, {"results_dir": "results"}):
        spec = e.template if hasattr(e, "template") else e
        out.append((spec, {**spec["tags"], **getattr(e, "tags", {})}, hasattr(e, "template")))
    return out


def test_full_plan_counts_and_one_protocol_per_problem():
    planned = entries(config())
    counts = Counter((spec["problem"], tags["stage"]) for spec, tags, _ in planned)
    # 6 tuned arms x 4 trials, 6 winners + 4 ablations x 5 seeds; ImageNet: 4 arms only
    assert counts == {("fuzzy_tinyimagenet_effb3", "tune"): 24, ("fuzzy_tinyimagenet_effb3", "final"): 50,
                      ("fuzzy_imagenet_effb3", "tune"): 16, ("fuzzy_imagenet_effb3", "final"): 20}
    for problem in ("fuzzy_tinyimagenet_effb3", "fuzzy_imagenet_effb3"):
        specs = [spec for spec, _, _ in planned if spec["problem"] == problem]
        protocol = {(s["epochs"], s["batch_size"], s["precision"], s["eval_every"], str(s["problem_args"]))
                    for s in specs}
        assert len(protocol) == 1  # identical data, length and precision for every arm
    for spec, tags, deferred in planned:
        name = spec["optimizer"] if deferred else spec["optimizer"]["name"]  # a template names its optimizer
        owns_step = name == "fuzzy_second_order"
        assert spec["schedule"]["name"] == ("constant" if owns_step else "warmup_cosine"), tags["arm"]
        assert deferred == (tags["stage"] == "final")
        if tags["stage"] == "final":
            assert tags["seed"] in range(5)
    finals = Counter(tags["arm"] for spec, tags, _ in planned
                     if tags["stage"] == "final" and spec["problem"] == "fuzzy_tinyimagenet_effb3")
    assert set(finals.values()) == {5} and len(finals) == 10


def test_every_arm_gets_the_same_number_of_trials():
    pconfig = config()
    tune = Counter((spec["problem"], tags["arm"]) for spec, tags, _ in entries(pconfig) if tags["stage"] == "tune")
    assert set(tune.values()) == {4}
    lopsided = copy.deepcopy(pconfig)
    lopsided["arms"]["adam"]["trials"].append({"lr": 1e-5})
    with pytest.raises(ValueError, match="same number of trials"):
        fuzzy_planner(lopsided, "full", {})


def test_bad_names_are_refused_before_any_run():
    pconfig = copy.deepcopy(config())
    pconfig["ablations"]["fuzzy_rules_loss"]["hparams"]["rule_base"] = "aggressive"
    with pytest.raises(ValueError, match="Valid choices: default, loss_only, progress_only"):
        fuzzy_planner(pconfig, "full", {})
    pconfig = copy.deepcopy(config())
    pconfig["ablations"]["fuzzy_hess10"]["hparams"]["hess_evry"] = 10
    with pytest.raises(ValueError, match="hess_evry"):
        fuzzy_planner(pconfig, "full", {})
    pconfig = copy.deepcopy(config())
    pconfig["protocols"][1]["controls"] = ["fd_cosine_typo"]
    with pytest.raises(ValueError, match="fd_cosine_typo"):
        fuzzy_planner(pconfig, "full", {})


def test_smoke_plan_has_every_arm_control_and_ablation():
    arms = {tags["arm"] for _, tags, _ in entries(config("smoke"), "smoke")}
    pconfig = config("full")
    assert arms == set(pconfig["arms"]) | set(pconfig["ablations"])


def test_selection_and_the_ablations_resolve_from_the_fuzzy_winner():
    candidates = [
        {"arm": "fuzzy", "sample": 0, "hparams": {"lr_min": 3e-4, "lr_max": 3e-2}, "value": 0.40, "status": "ok"},
        {"arm": "fuzzy", "sample": 1, "hparams": {"lr_min": 1e-4, "lr_max": 1e-2}, "value": 0.45, "status": "ok"},
        {"arm": "fuzzy", "sample": 2, "hparams": {"lr_min": 3e-5, "lr_max": 3e-3}, "value": math.nan,
         "status": "diverged"},
        {"arm": "adam", "sample": 0, "hparams": {"lr": 1e-3}, "value": math.nan, "status": "diverged"},
        {"arm": "adam", "sample": 1, "hparams": {"lr": 3e-4}, "value": 0.30, "status": "ok"},
    ]
    winners = select_winners(candidates, higher_is_better=True)
    assert winners["fuzzy"]["trial"] == 1 and winners["adam"]["trial"] == 1  # a diverged trial never wins
    # with two tuning seeds a trial is judged by its mean, and one diverged seed disqualifies it
    second_seed = [{**candidates[0], "value": 0.55}, {**candidates[1], "value": 0.44},
                   {**candidates[4], "value": math.nan, "status": "diverged"}, {**candidates[3], "value": 0.2,
                                                                                "status": "ok"}]
    winners = select_winners(candidates + second_seed, higher_is_better=True)
    assert winners["fuzzy"]["trial"] == 0 and winners["fuzzy"]["value"] == pytest.approx(0.475)
    assert winners["adam"]["all_diverged"]
    planned = fuzzy_planner(config(), "full", {"results_dir": "results"})
    ablation = next(e for e in planned if hasattr(e, "template") and e.tags["arm"] == "fuzzy_rademacher")
    base = fuzzy_planner(config(), "full", {"results_dir": "results"})
    fuzzy_final = next(e for e in base if hasattr(e, "template") and e.tags["arm"] == "fuzzy")
    assert ablation.depends_on == fuzzy_final.depends_on == "results/full/fuzzy/select/fuzzy_tinyimagenet_effb3.json"
    full_winner = {**config()["arms"]["fuzzy"]["hparams"], **candidates[1]["hparams"], "lr": 1e-3}
    selection = {"winners": {"fuzzy": {"trial": 1, "hparams": full_winner}}}
    spec = fuzzy_winner(ablation.template, selection)
    hp = spec["optimizer"]["hparams"]
    assert (hp["fd_mode"], hp["lr_min"], hp["lr_max"], hp["rule_base"]) == ("rademacher", 1e-4, 1e-2, "default")
    assert spec["tags"]["trial"] == 1 and spec["schedule"]["name"] == "constant"
    assert fuzzy_winner(fuzzy_final.template, selection)["optimizer"]["hparams"]["fd_mode"] == "ones"
    with pytest.raises(ValueError, match="fuzzy"):
        fuzzy_winner(ablation.template, {"winners": {"adam": {"trial": 0, "hparams": {"lr": 1e-3}}}})
