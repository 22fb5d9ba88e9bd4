"""The Crowded Valley study: its plan (counts, shared sample sequence, nested budgets, deferred re-runs, the
Hessian-draw rule), the selection of tuning winners (never from test metrics; diverged runs as DeepOBS scores
them), and the analysis helpers."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from optrepro import optim, tune
from optrepro.plan import DeferredSpec, run_id
from optrepro.planners import get_planner
from optrepro.planners.crowded_valley import PAPER_OPTIMIZERS, SCHEDULES, valley_winner
from optrepro.workflow import paper_config

ROOT = Path(__file__).resolve().parents[1]
GLOBAL = {"results_dir": "results", "device": "cuda"}


def plan(version="icml", scale="full", **changes):
    pconfig = {**paper_config(ROOT / "config", "crowded_valley", scale), "paper": "crowded_valley",
               "version": version, **changes}
    if scale == "full":
        pconfig.pop("fidelity", None)
    return get_planner("crowded_valley")(pconfig, scale, GLOBAL)


@pytest.mark.parametrize("version, optimizers, runs_per_cell, budgets", [
    ("icml", 15, 10 + 75 + 3 * 9, ("small", "medium", "large")),   # 53,760 runs: "more than 50,000"
    ("v1", 14, 10 + 50 + 2 * 9, ("small", "large")),                # 34,944 runs: "almost 35,000"
])
def test_full_plan_counts_every_run_of_the_study(version, optimizers, runs_per_cell, budgets):
    entries = plan(version, budgets=None)
    assert len(entries) == optimizers * 8 * 4 * runs_per_cell
    specs = [e for e in entries if not isinstance(e, DeferredSpec)]
    deferred = [e for e in entries if isinstance(e, DeferredSpec)]
    assert {e.template["tags"]["budget"] for e in deferred} == set(budgets)
    assert len({run_id(s) for s in specs}) == len(specs)  # tuning and one-shot runs are all distinct runs
    assert {s["tags"]["seed"] for s in specs if s["tags"]["stage"] == "oneshot"} == set(range(42, 52))
    assert {s["tags"]["seed"] for s in specs if s["tags"]["stage"] == "tune"} == {42}
    assert {e.template["tags"]["seed"] for e in deferred} == set(range(43, 52))
    assert ("adabelief" in {s["optimizer"]["name"] for s in specs}) == (version == "icml")


def test_tuning_samples_are_one_sequence_shared_by_every_optimizer_and_budgets_are_prefixes():
    entries = [e for e in plan() if not isinstance(e, DeferredSpec) and e["tags"]["stage"] == "tune"
               and e["problem"] == "fmnist_2c2d" and e["tags"]["schedule"] == "none"]
    lrs = {}
    for e in entries:
        lrs.setdefault(e["optimizer"]["name"], {})[e["tags"]["sample"]] = e["optimizer"]["hparams"]["lr"]
    assert set(lrs) == set(PAPER_OPTIMIZERS) and all(len(v) == 75 for v in lrs.values())
    first = lrs["adam"]
    assert all(v == first for v in lrs.values())  # same distribution, same draws, same order
    space = optim.registry.search_space("momentum", "icml")
    assert tune.samples(space, 25) == tune.samples(space, 75)[:25]  # budgets are nested prefixes
    # v1 and icml share the uniform draw but map the momentum differently (mu vs 1 - mu log-uniform)
    u = tune.uniforms()["momentum"][3]
    v1 = tune.samples(optim.registry.search_space("momentum", "v1"), 4)[3]["momentum"]
    icml = tune.samples(space, 4)[3]["momentum"]
    assert v1 == pytest.approx(math.exp(math.log(1e-3) * (1 - u))) and icml == pytest.approx(
        1 - math.exp(math.log(1e-4) * (1 - u)))


def test_the_sample_sequence_is_committed_data():
    data = json.loads(tune.UNIFORMS.read_text())
    assert set(data["uniform"]) >= {"lr", "beta1", "beta2", "momentum", "rho", "alpha", "final_lr", "gamma", "k"}
    assert all(len(v) >= 75 and all(0 <= x < 1 for x in v) for v in data["uniform"].values())
    assert tune.inverse_cdf({"type": "int_uniform", "low": 1, "high": 19}, 0.999999) == 19
    assert tune.inverse_cdf({"type": "int_uniform", "low": 1, "high": 19}, 0.0) == 1
    with pytest.raises(ValueError, match="exceeds the 100 committed samples"):
        tune.samples({"lr": {"type": "log_uniform", "low": 1e-4, "high": 1}}, 101)


def test_quadratic_runs_take_the_published_hessian_draw_and_data_order():
    entries = [e for e in plan() if not isinstance(e, DeferredSpec) and e["problem"] == "quadratic_deep"
               and e["tags"]["schedule"] == "none"]
    adam = {e["tags"]["seed"]: e["problem_args"] for e in entries
            if e["optimizer"]["name"] == "adam" and e["tags"]["stage"] == "oneshot"}
    # the published one-shot Adam runs: seed 42 alone (draw 0), seeds 43-51 one process (draw = seed - 43)
    assert adam[42] == {"hessian_instance": 0, "order_seed": 42}
    assert [adam[s]["hessian_instance"] for s in (44, 45, 49, 50, 51)] == [1, 2, 6, 7, 8]
    samples = {e["tags"]["sample"]: e["problem_args"]["hessian_instance"] for e in entries
               if e["optimizer"]["name"] == "sgd" and e["tags"]["stage"] == "tune"}
    assert samples == {i: i for i in range(75)}  # a tuning sample's draw is its position in the search


def _write_tuning_run(root, i, status, valid, test, epoch0_valid=300.0):
    run_dir = root / f"run{i}"
    run_dir.mkdir()
    spec = {"problem": "quadratic_deep", "optimizer": {"name": "sgd", "hparams": {"lr": 0.1 * (i + 1)}},
            "tags": {"stage": "tune", "schedule": "none", "sample": i, "arm": "sgd"}}
    final = {} if status == "diverged" else {"valid": {"loss": valid}, "test": {"loss": test}}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    (run_dir / "result.json").write_text(json.dumps({"deterministic": {"status": status, "final": final}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "epoch": 0, "valid/loss": epoch0_valid,
                                                       "test/loss": 310.0}) + "\n")
    return {"run_id": f"r{i}", "status": status, "dir": str(run_dir)}


def test_selection_uses_final_validation_never_test_and_scores_diverged_runs_at_epoch_0(tmp_path):
    runs = [_write_tuning_run(tmp_path, 0, "ok", valid=90.0, test=50.0),     # best test: must not win
            _write_tuning_run(tmp_path, 1, "ok", valid=80.0, test=95.0),     # best validation: wins
            _write_tuning_run(tmp_path, 2, "diverged", valid=None, test=None, epoch0_valid=70.0)]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"runs": runs}))
    candidates = tune.tuning_candidates([manifest], "quadratic_deep", "valid", "loss")
    assert {c["sample"]: c["value"] for c in candidates} == {0: 90.0, 1: 80.0, 2: 70.0}
    winners = tune.select_winners(candidates, {"tiny": 2, "all": 3}, higher_is_better=False)
    assert winners["sgd/none/tiny"]["sample"] == 1 and winners["sgd/none/tiny"]["hparams"] == {"lr": 0.2}
    # DeepOBS scores a diverged run at its epoch-0 value: here that beats the others (a documented oddity)
    assert winners["sgd/none/all"]["sample"] == 2 and winners["sgd/none/all"]["diverged"] == 1
    # every run diverged: the lowest sample index, flagged
    flat = [{**c, "value": 300.0, "status": "diverged"} for c in candidates]
    pick = tune.select_winners(flat, {"all": 3}, higher_is_better=False)["sgd/none/all"]
    assert pick["sample"] == 0 and pick["all_diverged"]
    with pytest.raises(ValueError, match="needs samples 0..4"):
        tune.select_winners(candidates, {"big": 5}, higher_is_better=False)


def test_rerun_specs_resolve_to_the_winner_of_their_cell():
    deferred = next(e for e in plan() if isinstance(e, DeferredSpec) and e.template["problem"] == "quadratic_deep"
                    and e.template["optimizer"] == "sgd" and e.template["tags"]["budget"] == "small")
    assert deferred.depends_on == "results/full/crowded_valley/select/quadratic_deep.json"
    selection = {"winners": {f"sgd/{deferred.template['tags']['schedule']}/small": {"sample": 7,
                                                                                     "hparams": {"lr": 0.05}}}}
    spec = valley_winner(deferred.template, selection)
    assert spec["optimizer"]["hparams"]["lr"] == 0.05 and spec["tags"]["sample"] == 7
    assert spec["problem_args"]["hessian_instance"] == 0  # re-runs of a tuned setting: a fresh process
    with pytest.raises(KeyError, match="unknown tuning cell"):
        valley_winner(deferred.template, {"winners": {}})


def test_schedules_are_the_study_folders_and_bad_names_are_refused():
    assert set(SCHEDULES) == {"none", "cosine", "cosine_wr", "ltr"}
    with pytest.raises(KeyError, match="unknown Crowded Valley schedule 'linear'"):
        plan(grids=[{"problems": ["quadratic_deep"], "optimizers": ["adam"], "schedules": ["linear"]}])
    with pytest.raises(KeyError, match="unknown optimizer of the v1 study 'adabelief'"):
        plan("v1", budgets=None, grids=[{"problems": ["quadratic_deep"], "optimizers": ["adabelief"]}])
    with pytest.raises(KeyError, match="unknown budget 'medium'"):
        plan("v1", budgets=None, grids=[{"problems": ["quadratic_deep"], "budgets": ["medium"]}])


def test_analysis_frame_builds_settings_from_the_three_stages(tmp_path):
    from optrepro.report.valley import performance, switch_gain, valley_frame

    rows = []
    for seed in range(42, 45):
        for stage, budget, sample in (("oneshot", "oneshot", None), ("rerun", "small", 1)):
            if stage == "rerun" and seed == 42:
                continue
            rows.append({"problem": "fmnist_2c2d", "optimizer.name": "adam", "tags.schedule": "none",
                         "tags.stage": stage, "tags.budget": budget, "tags.sample": sample, "seed": f"{seed}",
                         "status": "ok", "final.test.accuracy": 0.8 + 0.01 * (stage == "rerun"),
                         "final.valid.accuracy": 0.8, "run_id": f"{stage}{seed}", "dir": ""})
    rows.append({"problem": "fmnist_2c2d", "optimizer.name": "adam", "tags.schedule": "none", "tags.stage": "tune",
                 "tags.budget": None, "tags.sample": 1, "seed": "42", "status": "ok", "final.test.accuracy": 0.81,
                 "final.valid.accuracy": 0.8, "run_id": "t1", "dir": ""})
    frame = valley_frame(pd.DataFrame(rows))
    tuned = frame[frame["budget"] == "small"]
    assert sorted(tuned["seed"]) == ["42", "43", "44"] and tuned["selected_by_seed"].sum() == 1
    perf = performance(frame)
    small = perf[perf["budget"] == "small"].iloc[0]
    assert small["n"] == 3 and small["n_independent"] == 2
    gain = switch_gain(perf, "fmnist_2c2d")
    assert gain.loc["adam", "adam"] == pytest.approx(0.01)


def test_the_config_smoke_block_covers_the_axes_not_their_product():
    config = yaml.safe_load((ROOT / "config/papers/crowded_valley.yaml").read_text())
    smoke = plan(scale="smoke", **config["smoke"])
    specs = [e for e in smoke if not isinstance(e, DeferredSpec)]
    quad = {(s["optimizer"]["name"], s["tags"]["schedule"]) for s in specs
            if s["problem"] == "quadratic_deep" and s["tags"]["stage"] != "fidelity"}
    assert quad == {(o, s) for o in PAPER_OPTIMIZERS for s in SCHEDULES}
    assert {s["problem"] for s in specs if s["optimizer"]["name"] == "adam"} >= {
        "mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "fmnist_vae", "cifar100_allcnnc", "svhn_wrn164",
        "tolstoi_char_rnn", "quadratic_deep"}
    assert len(smoke) < 500
