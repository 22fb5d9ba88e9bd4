"""The evaluation of what NOS found (optrepro.nos.evaluation) and the NOS section's analysis (optrepro.report.nos):
the plan at both scales, the run lengths, the selection by validation and the re-runs it resolves, the batches a
smoke slice shares across problems, and the tables the section prints."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from optrepro import plan as planmod
from optrepro.nos import evaluation, stages
from optrepro.nos.space import final_genome, genome_to_json
from optrepro.workflow import deep_merge

ROOT = Path(__file__).resolve().parents[1]


def nos_config(scale: str) -> dict:
    pconfig = yaml.safe_load((ROOT / "config" / "papers" / "nos.yaml").read_text())
    smoke = pconfig.pop("smoke")
    if scale == "smoke":
        pconfig = deep_merge(pconfig, smoke)
    return {**pconfig, "paper": "nos"}


def eval_entries(scale: str, results_dir: str = "results") -> list[dict]:
    pconfig = nos_config(scale)
    config = {"results_dir": results_dir, "device": "cuda"}
    searches = {s.name: s for s in stages.searches(pconfig, scale, config)}
    return [e.to_json() if isinstance(e, planmod.DeferredSpec) else e
            for e in evaluation.plan(pconfig, scale, config, searches)]


def body(entry: dict) -> dict:
    return entry["template"] if entry.get("deferred") else entry


# ---- the plan ------------------------------------------------------------------------------------------

def test_full_plan_gives_every_arm_the_same_sweep_and_five_fresh_seeds_on_every_problem():
    entries = eval_entries("full")
    arms = evaluation.arms(3)
    assert len(arms) == 15 + 7 + 3 + 3  # released (decays on), decays off, baselines, searched
    assert len(entries) == len(arms) * 5 * (7 + 5)
    rates = (10.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
    for problem in evaluation.PROBLEMS:
        for arm in arms:
            mine = [e for e in entries if body(e)["problem"] == problem and e["tags"]["arm"] == arm]
            tune = [e for e in mine if e["tags"]["stage"] == "tune"]
            rerun = [e for e in mine if e["tags"]["stage"] == "rerun"]
            assert sorted(e["tags"]["lr"] for e in tune) == sorted(rates)
            assert {e["tags"]["seed"] for e in tune} == {0} and sorted(e["tags"]["seed"] for e in rerun) == [1, 2, 3, 4, 5]
            assert all(e["deferred"] and e["resolver"] == "nos.eval_winner"
                       and e["depends_on"] == str(evaluation.selection_path("results/full", problem)) for e in rerun)
            if arm.startswith("searched"):  # their genome comes from the search's summary
                assert all(e["deferred"] and e["depends_on"] == "results/full/nos/main/summary.json" for e in tune)
            else:
                assert not any(e.get("deferred") for e in tune)
    specs = [e for e in entries if not e.get("deferred")]
    assert {s["device"] for s in specs} == {"cuda"}
    assert len({planmod.run_id(s) for s in specs}) == len(specs)  # no two arms share a run


def test_arms_run_the_released_genomes_with_decays_on_and_off_and_keras_baselines():
    entries = [e for e in eval_entries("full") if not e.get("deferred") and e["tags"]["lr"] == 1e-3
               and e["problem"] == "nos_cifar100_effv2s"]
    by_arm = {e["tags"]["arm"]: e["optimizer"] for e in entries}
    assert by_arm["opt7"]["name"] == by_arm["opt7-nodecay"]["name"] == "nos_opt7"
    assert by_arm["opt7"]["hparams"]["use_decay"] is True and by_arm["opt7-nodecay"]["hparams"]["use_decay"] is False
    assert by_arm["a3"]["name"] == "nos_a3" and by_arm["a3"]["hparams"]["use_decay"] is True
    assert by_arm["adam"]["hparams"]["eps"] == 1e-7 and by_arm["sgdm"]["hparams"]["momentum"] == 0.9
    assert by_arm["rmsprop"]["hparams"]["alpha"] == 0.9


def test_decays_off_arms_are_exactly_the_genomes_whose_decays_switch():
    switchable = [g for g in evaluation.GENOMES if final_genome(g).lr_decay is not None
                  or any(e.decay is not None and e.switchable for n in final_genome(g).nodes for e in n.inputs)]
    assert tuple(switchable) == evaluation.DECAY_GENOMES


def test_every_run_uses_the_authors_schedule_proportions_and_gives_the_nos_momentum_the_same_steps():
    (spec,) = [e for e in eval_entries("full") if not e.get("deferred") and e["tags"]["arm"] == "opt10"
               and e["problem"] == "nos_cifar100_effv2s" and e["tags"]["lr"] == 1.0]
    total = 45_000 // 64 * 30
    warmup, hold = spec["schedule"]["args"]["warmup_steps"], spec["schedule"]["args"]["hold_steps"]
    assert spec["schedule"]["name"] == "warmup_hold_cosine" and spec["epochs"] == 30 and spec["batch_size"] == 64
    assert abs(warmup / total - 6_400 / 96_000) < 1e-3 and abs(hold / total - 12_800 / 96_000) < 1e-3
    hparams = spec["optimizer"]["hparams"]
    assert (hparams["warmup_steps"], hparams["hold_steps"], hparams["total_steps"]) == (warmup, hold, None)


@pytest.mark.parametrize("problem", evaluation.PROBLEMS)
def test_train_examples_follow_the_problems_splits(problem):
    from optrepro import problems

    smoke = problems.get(problem, "smoke")
    assert len(smoke.splits()["train"]) == evaluation.TRAIN_EXAMPLES["smoke"][problem]
    # full scale: the official split sizes minus the problem's own validation hold-out (its class attributes)
    official = {"nos_cifar100_effv2s": 50_000, "nos_tinyimagenet_effv2s": 100_000,
                "nos_flowers102_effv2s": 1_020 + 1_020, "nos_cars_effv2s": 8_144,
                "nos_caltech101_effv2s": int(0.8 * 8_677)}[problem]
    assert evaluation.TRAIN_EXAMPLES["full"][problem] == official - type(smoke).valid_size


def test_smoke_plan_runs_every_genome_once_on_one_problem_and_every_problem_with_adam_and_our_genome():
    entries = eval_entries("smoke")
    tune = [e for e in entries if e["tags"]["stage"] == "tune"]
    on = {p: {e["tags"]["arm"] for e in tune if body(e)["problem"] == p} for p in evaluation.PROBLEMS}
    assert set(evaluation.GENOMES) | {"adam", "sgdm", "rmsprop", "searched1"} <= on["nos_cifar100_effv2s"]
    assert all(on[p] == {"adam", "searched1"} for p in evaluation.PROBLEMS[1:])


def test_smoke_plan_gives_each_problems_selection_its_tuning_batches_and_the_reruns_their_selection(tmp_path):
    from optrepro.workflow import batch_entries, load_plan

    for sub in ("config", "paper"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    config.update(papers=["nos"], scale="smoke", results_dir=str(tmp_path / "results"))
    plan = load_plan(config, tmp_path / "config")
    results = f"{tmp_path}/results/smoke"
    planned = eval_entries("smoke", str(tmp_path / "results"))
    for problem in evaluation.PROBLEMS:
        # the selection job of a problem reads every batch holding one of its tuning runs
        tune = [k for k, b in plan.index.items() if b["manifest"] in plan.manifests("nos", "tune", problem=problem)]
        held = [e for k in tune for e in batch_entries(plan.root, k) if body(e)["problem"] == problem]
        assert len(held) == sum(1 for e in planned if body(e)["problem"] == problem and e["tags"]["stage"] == "tune")
        reruns = [b for b in plan.index.values() if b["manifest"] in plan.manifests("nos", "rerun", problem=problem)]
        assert reruns and all(str(evaluation.selection_path(results, problem)) in b["inputs"] for b in reruns)


def test_bad_evaluation_config_is_refused_naming_the_value():
    pconfig = nos_config("smoke")
    pconfig["evaluation"]["grids"][0]["arms"] = ["opt11"]
    with pytest.raises(ValueError, match="opt11.*Valid choices"):
        evaluation.settings(pconfig)
    pconfig = nos_config("smoke")
    pconfig["evaluation"]["grids"][1]["problems"] = ["nos_imagenet_effv2s"]
    with pytest.raises(ValueError, match="nos_imagenet_effv2s.*Valid choices"):
        evaluation.settings(pconfig)
    pconfig = nos_config("smoke")
    pconfig["evaluation"]["select_on"] = "test"
    with pytest.raises(ValueError, match="test.*Valid choices"):
        evaluation.settings(pconfig)


# ---- selection and re-runs ---------------------------------------------------------------------------------

def candidate(arm, sample, value, status="ok"):
    return {"arm": arm, "sample": sample, "hparams": {"lr": [1.0, 0.1, 0.01][sample]}, "value": value,
            "status": status, "run_id": f"{arm}{sample}"}


def test_selection_takes_the_best_validation_accuracy_never_nan_and_the_first_of_ties():
    winners = evaluation.select_winners(
        [candidate("adam", 0, math.nan, "diverged"), candidate("adam", 1, 0.5), candidate("adam", 2, 0.7),
         candidate("opt1", 0, 0.6), candidate("opt1", 1, 0.6), candidate("opt1", 2, 0.1)], rates=3)
    assert winners["adam"]["hparams"]["lr"] == 0.01 and winners["adam"]["diverged"] == 1
    assert winners["opt1"]["hparams"]["lr"] == 1.0
    everything_diverged = evaluation.select_winners([candidate("sgdm", k, math.nan, "diverged") for k in range(3)], 3)
    assert everything_diverged["sgdm"]["all_diverged"] and everything_diverged["sgdm"]["value"] is None
    json.dumps(everything_diverged, allow_nan=False)  # the selection file can be written
    with pytest.raises(ValueError, match="one tuning run per rate"):
        evaluation.select_winners([candidate("adam", 0, 0.5), candidate("adam", 2, 0.7)], rates=3)


def test_tuning_runs_select_a_rate_and_the_rerun_is_the_winner_with_a_fresh_seed(tmp_path):
    """Real smoke runs: two arms x two rates, the selection job's functions, the re-run resolver."""
    from optrepro.runner import run_batch

    problem, results = "nos_flowers102_effv2s", tmp_path / "results" / "smoke"
    runs = []
    for arm in ("adam", "opt10"):
        for i, lr in enumerate((1e-1, 1e-3)):
            t = evaluation.template(arm, problem, "smoke", lr, 0, "tune", "cpu", {}, {"lr": lr, "sample": i})
            runs.append(planmod.make_spec(**t))
    manifest = tmp_path / "tune.json"
    assert run_batch(runs, results, manifest=manifest) == 0
    candidates = evaluation.tuning_candidates([manifest], problem, "final")
    winners = evaluation.select_winners(candidates, rates=2)
    for arm in ("adam", "opt10"):
        mine = [c for c in candidates if c["arm"] == arm]
        finite = [c for c in mine if not math.isnan(c["value"])]
        assert winners[arm]["value"] == max(c["value"] for c in finite)
    t = evaluation.template("opt10", problem, "smoke", None, 3, "rerun", "cpu", {})
    spec = evaluation.resolve_winner(t, {"problem": problem, "winners": winners})
    assert spec["optimizer"]["hparams"] == winners["opt10"]["hparams"] and spec["init_seed"] == 3
    assert spec["tags"]["stage"] == "rerun" and spec["tags"]["lr"] == winners["opt10"]["hparams"]["lr"]
    with pytest.raises(ValueError, match="rmsprop.*Valid choices"):
        evaluation.resolve_winner(evaluation.template("rmsprop", problem, "smoke", None, 3, "rerun", "cpu", {}),
                                  {"problem": problem, "winners": winners})


def test_a_searched_arm_runs_the_genome_of_its_rank_with_the_search_settings():
    settings = {"nesterov_form": "search", "ema_form": "code", "a14": "search"}
    best = [{"rank": k + 1, "particle": k, "text": name, "genome": genome_to_json(final_genome(name))}
            for k, name in enumerate(("opt10", "opt9"))]
    t = evaluation.template("searched2", "nos_cars_effv2s", "smoke", 0.1, 0, "tune", "cpu", settings, {"sample": 1})
    spec = evaluation.resolve_searched(t, {"search": "main", "best": best})
    assert spec["optimizer"]["name"] == "nos_genome"
    assert spec["optimizer"]["hparams"]["genome"] == genome_to_json(final_genome("opt9"))
    assert spec["optimizer"]["hparams"]["nesterov_form"] == "search" and spec["tags"]["search_particle"] == 1
    t = evaluation.template("searched3", "nos_cars_effv2s", "smoke", 0.1, 0, "tune", "cpu", settings)
    with pytest.raises(ValueError, match="ranks 2 genomes"):
        evaluation.resolve_searched(t, {"search": "main", "best": best})


# ---- the section's analysis ---------------------------------------------------------------------------------

def test_search_rates_sit_beside_the_authors_log_counts():
    from optrepro.report.nos import search_rates
    from optrepro.report.published import load_published_file

    published = load_published_file(ROOT / "paper" / "published" / "nos.csv")
    summary = {"pool": {"passed": 3, "evaluated": 4, "best_fitness": 0.5},
               "evolution": {"slot_evaluations_failed": 1, "slot_evaluations": 5, "slots_all_attempts_failed": 0,
                             "slots": 4, "chosen_steps": 4,
                             "chosen_momentum": {"nesterov": 2, "momentum": 1, "none": 1},
                             "final_fitness": [0.4, -1.0]},
               "chains": [{"fitness": [0.3, 0.35, 0.4]}, {"fitness": [-1.0, 0.2, -1.0]}]}
    rows = search_rates(summary, published).set_index("quantity")
    assert rows.loc["pool genomes that pass the fitness protocol", "ours"] == 0.75
    assert rows.loc["pool genomes that pass the fitness protocol", "authors"] == pytest.approx(101 / 500)
    assert rows.loc["mutant evaluations that fail", "authors"] == pytest.approx(850 / 2570)
    assert rows.loc["mutant slots whose every attempt fails", "authors"] == pytest.approx(30 / 1750)
    assert rows.loc["particle re-scores that fail", "ours"] == 0.5
    assert rows.loc["chosen steps with momentum type nesterov", "authors"] == pytest.approx(135 / 250)
    assert rows.loc["best final particle", "ours"] == 0.4 and rows.loc["best mutant (a step's winner)", "ours"] == 0.4
    assert rows.loc["median particle re-score", "ours"] == 0.3  # the failed re-score is left out


def test_integrity_rows_and_chains_count_failures_as_failures():
    from optrepro.report.nos import chain_frame, integrity_rows

    summary = {"pool": {"draws": {"drawn": 10, "cyclic": 1, "repeated": 1, "failed_integrity": 4}, "train_steps": 200},
               "integrity_check": {"sample": 2, "sample_passed_surrogate": 1, "false_rejection_rate": 0.5,
                                   "train_steps_saved": 100.0},
               "chains": [{"particle": 0, "fitness": [0.2, -1.0], "reeval_fitness": [0.1, 0.3],
                           "momentum": ["none", "nesterov"], "text": ["g", "Nest ~ g"]}]}
    rows = integrity_rows(summary)
    assert rows["rejection_rate"] == 0.5 and rows["saved_vs_pool"] == 0.5 and rows["false_rejection_rate"] == 0.5
    chains = chain_frame(summary)
    assert math.isnan(chains.loc[1, "fitness"]) and chains.loc[1, "reeval_fitness"] == 0.3


def test_evaluation_table_reports_both_accuracies_and_the_gap_to_adam():
    from optrepro.report.nos import evaluation_frame, evaluation_table

    runs = pd.DataFrame([
        {"tags.stage": "rerun", "status": "ok", "problem": "p", "tags.arm": arm, "tags.seed": seed,
         "optimizer.hparams.lr": 0.1, "final.test.accuracy": acc, "max.valid.accuracy": acc + 0.1,
         "run_id": f"{arm}{seed}", "dir": "."}
        for arm, accs in (("adam", (0.5, 0.7)), ("opt1", (0.6, 0.8))) for seed, acc in zip((1, 2), accs)]
        + [{"tags.stage": "tune", "status": "ok", "problem": "p", "tags.arm": "opt1", "tags.seed": 0,
            "optimizer.hparams.lr": 1.0, "final.test.accuracy": 0.99, "max.valid.accuracy": 0.99, "run_id": "t",
            "dir": "."}])
    frame = evaluation_frame(runs)
    assert len(frame) == 4  # the tuning run is never reported
    table = evaluation_table(frame, "p").set_index("arm")
    assert list(table.index) == ["opt1", "adam"]  # the evaluation's arm order
    assert table.loc["opt1", "test, final (%)"] == "70.00 ± 14.14"
    assert table.loc["opt1", "valid, max (%)"] == "80.00 ± 14.14"
    assert table.loc["opt1", "vs Adam (pp)"] == "+10.00" and table.loc["adam", "vs Adam (pp)"] == "--"


def test_claims_test_all_fifteen_against_tuned_adam_in_one_holm_family():
    from optrepro.report.claims import load_claims

    claims = load_claims(ROOT / "paper" / "claims" / "nos.yaml")
    family = [c for c in claims if c.family == "nos-vs-adam"]
    assert sorted(c.method for c in family) == sorted(evaluation.GENOMES)
    assert all(c.baseline == "adam" and set(c.cells) == set(evaluation.PROBLEMS) for c in family)
    assert claims.families["nos-vs-adam"].correction == "holm"
    assert all(dict(c.select) == {"tags.stage": "rerun"} for c in claims)
