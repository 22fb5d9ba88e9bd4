"""Crowded Valley fidelity: the published per-run results (paper/published/raw), their Hessian instances, the
schedules they logged, the TF-1 data order they imply, the fetcher, and three published runs re-run epoch by epoch."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from optrepro import fidelity, problems, schedules
from optrepro.data import published_raw as pr
from optrepro.data.download import DownloadError
from optrepro.registry import UnknownNameError

RUNS = pr.load_runs()
QUADRATIC = [r for r in RUNS if r.problem == "quadratic_deep"]


def published(**match):
    return pr.find_run(RUNS, **match)


# --- the stored raw results --------------------------------------------------------------------------------

def test_fidelity_and_raw_results_import_without_torch():
    code = ("import sys, optrepro.fidelity, optrepro.data.published_raw as p; p.load_runs(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_stored_run_is_traced_to_a_file_at_a_commit():
    assert len(QUADRATIC) >= 54
    cells = {(r.budget, r.schedule) for r in QUADRATIC}
    assert {("oneshot", s) for s in ("none", "cosine", "cosine_wr", "ltr")} <= cells
    assert {("small_budget", "none"), ("medium_budget", "none"), ("large_budget", "none")} <= cells
    assert {r.optimizer for r in QUADRATIC if (r.budget, r.schedule) == ("oneshot", "none")} == set(fidelity.TF_OPTIMIZERS)
    for r in QUADRATIC:
        assert r.repo == pr.CROWDED_VALLEY_REPO and pr.COMMIT_RE.match(r.commit)
        meta = pr.parse_path(r.path)
        assert (meta["budget"], meta["schedule"], meta["problem"], meta["optimizer"]) == \
            (r.budget, r.schedule, r.problem, r.optimizer)
        assert int(meta["seed"]) == r.seed and r.num_epochs == 100 and r.batch_size == 128
        test = r.curve("test_losses")
        assert len(test) == 101 and all(v is not None and math.isfinite(v) for v in test)
        valid = r.curve("valid_losses")  # the small-budget transcriptions have test losses only
        assert len(valid) == 101 and (valid == [None] * 101 or None not in (valid[0], valid[-1]))


def test_partial_curves_and_lookups():
    run = published(budget="oneshot", schedule="none", optimizer="RAdamOptimizer", seed=42)
    train = run.curve("train_losses")  # transcribed first and last only
    assert train[0] == pytest.approx(355.0, abs=5) and train[1] is None and train[100] is not None
    with pytest.raises(KeyError, match="test_losses"):
        run.curve("test_loss")
    with pytest.raises(LookupError, match="6 published runs"):
        pr.find_run(RUNS, budget="oneshot", schedule="none", optimizer="AdamOptimizer")
    assert run.row()["hp.epsilon"] == 1e-7 and run.started == "2020-01-17-03-52-45"


# --- the Hessian instances ---------------------------------------------------------------------------------

def test_instance_table_reproduces_each_published_epoch0_loss():
    from optrepro.problems.deepobs import quadratic_deep_epoch0_test_loss

    table = fidelity.read_instance_table()
    assert {row["source"] for row in table} == {r.source for r in QUADRATIC}
    by_source = {r.source: r for r in QUADRATIC}
    for row in table:
        logged = by_source[row["source"]].curve("test_losses")[0]
        assert row["epoch0_test_loss"] == logged
        assert quadratic_deep_epoch0_test_loss(row["hessian_instance"]) == pytest.approx(logged, rel=1e-6)
    # the published runs used many draws of the shared RandomState(42), not one Hessian
    assert {row["hessian_instance"] for row in table} >= {0, 1, 2, 4, 5, 6, 7, 8, 9, 11, 12, 14, 17, 23}
    # e.g. Adam's re-runs 44, 45, 49, 50, 51 are draws 1, 2, 6, 7, 8: one process ran seeds 43..51 in order
    adam = {row["seed"]: row["hessian_instance"] for row in table
            if (row["budget"], row["schedule"], row["optimizer"]) == ("oneshot", "none", "AdamOptimizer")}
    assert adam == {42: 0, 44: 1, 45: 2, 49: 6, 50: 7, 51: 8}


def test_instance_rule_predicts_runs_it_did_not_see():
    """Leave each published run out: the rule (the job's k - seed, else the layout of its kind) must recover it
    for the runs inside a job and for the 2021 runs; the ones it cannot know are listed."""
    table = fidelity.read_instance_table()
    missed = set()
    for i, row in enumerate(table):
        if fidelity.hessian_instance(row, table[:i] + table[i + 1:]) != row["hessian_instance"]:
            missed.add((row["budget"], row["optimizer"], row["seed"]))
    # jobs that ran other runs first (AMSGrad, NAG: 9 earlier runs), first-sweep processes of seed 42
    # (Adadelta, Adagrad), a tuning sample (its position in the search), and LA-RAdam's 2020-02 job over 42..51
    assert missed <= {("oneshot", "AMSGrad", 43), ("oneshot", "NAGOptimizer", 45), ("oneshot", "AdadeltaOptimizer", 42),
                      ("oneshot", "AdagradOptimizer", 42), ("small_budget", "AdamOptimizer", 42),
                      ("oneshot", "LookaheadOptimizerRAdam", 51)}
    assert len(missed) <= 6
    adam = {"budget": "oneshot", "schedule": "none", "problem": "quadratic_deep", "optimizer": "AdamOptimizer",
            "setting": published(budget="oneshot", schedule="none", optimizer="AdamOptimizer", seed=44).setting}
    # the unpublished seeds 43, 46-48 of Adam's job over 43..51 (k = seed - 43)
    assert [fidelity.hessian_instance({**adam, "seed": s}, table) for s in range(42, 52)] == [0] + list(range(9))


def test_quadratic_problem_arguments():
    with pytest.raises(ValueError, match="hessian_instance"):
        problems.get("quadratic_deep", "full", hessian_instance=-1)
    with pytest.raises(ValueError, match="order_seed"):
        problems.get("quadratic_deep", "full", order_seed=1.5)


# --- the TF-1 data order -----------------------------------------------------------------------------------

def test_published_logs_show_the_same_first_batch_every_epoch():
    """DeepOBS logged the loss of each epoch's first training batch (minibatch_train_losses) and the train-eval
    loss at the same weights. With the same shuffled order every epoch (TF-1 re-initialised iterators under a
    graph seed) their difference moves smoothly with the weights; a fresh first batch every epoch would make it
    jump by the spread of 128-example means (about 10 at these losses)."""
    run = published(budget="oneshot", schedule="none", optimizer="AdamOptimizer", seed=51)
    first_batch = np.array(run.curve("minibatch_train_losses")[:100])
    train_eval = np.array(run.curve("train_losses")[:100])
    jumps = np.abs(np.diff(first_batch - train_eval))
    assert jumps.max() < 0.2
    # what a reshuffled first batch would give at the initial weights, from the data and the run's Hessian
    from optrepro.problems.deepobs import quadratic_points
    from optrepro.problems.models.deepobs_nets import Quadratic, deepobs_quadratic_hessian

    instance = fidelity.hessian_instance(run)
    with torch.no_grad():
        losses = Quadratic(deepobs_quadratic_hessian(instance))(quadratic_points(42)).double().numpy()
    gen = np.random.default_rng(0)
    means = np.array([losses[gen.permutation(1000)[:128]].mean() for _ in range(400)])
    assert np.abs(np.diff(means)).mean() > 30 * jumps.max()
    # the permutation is a function of the seed: Adam seed 44 under three schedules (three processes, the same
    # draw 2) has one train-eval set, so one epoch-0 train-eval loss
    same_seed = {published(budget="oneshot", schedule=s, optimizer="AdamOptimizer", seed=44).curve("train_losses")[0]
                 for s in ("cosine", "cosine_wr", "ltr")}
    assert len(same_seed) == 1


def test_fixed_order_split_replays_one_permutation():
    a = problems.get("quadratic_deep", "full", order_seed=7).splits()["train"]
    b = problems.get("quadratic_deep", "full", order_seed=8).splits()["train"]
    shuffled = problems.get("quadratic_deep", "full").splits()["train"]
    assert type(a).__name__ == "FixedOrderSplit" and type(shuffled).__name__ == "Split"
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(a.order(gen), torch.arange(1000)) and torch.equal(a.order(gen), a.order(gen))
    assert not torch.equal(shuffled.order(gen), shuffled.order(gen))
    assert not torch.equal(a.tensors[0], b.tensors[0])
    rows = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert rows(a.tensors[0]) == rows(shuffled.tensors[0])  # the same examples, another order
    moved = a.to("cpu")
    assert type(moved) is type(a) and moved.seed == 7 and torch.equal(moved.order(gen), torch.arange(1000))


# --- schedules ---------------------------------------------------------------------------------------------

def test_schedules_match_the_logged_lr_factors():
    logged = [r for r in QUADRATIC if r.training_params]
    assert {r.schedule for r in logged} >= {"none", "cosine", "cosine_wr", "ltr"}
    for run in logged:
        spec = fidelity.our_schedule(run.schedule)
        f = schedules.build_schedule(spec.pop("name"), **spec)
        steps = 7  # 1000 // 128 training steps per epoch
        total = run.num_epochs * steps
        epochs = run.training_params["lr_sched_epochs"] or []
        factors = run.training_params["lr_sched_factors"] or []
        expected = {0: 1.0, **dict(zip(epochs, factors))}  # DeepOBS runs epoch 0 at the full lr
        if run.schedule == "none":
            assert not epochs
        else:
            assert epochs == list(range(1, run.num_epochs + 1))
        factor = 1.0
        for epoch in range(run.num_epochs):
            factor = expected.get(epoch, factor)  # a logged factor holds until the next one
            for step in (epoch * steps, epoch * steps + steps - 1):
                assert f(step, total, steps) == pytest.approx(factor, abs=1e-12), (run.schedule, epoch)


# --- re-running published runs -----------------------------------------------------------------------------

def rerun(run, tmp_path, **kw):
    from optrepro.train import train

    spec = fidelity.published_spec(run, **kw)
    train(spec, tmp_path / spec["optimizer"]["name"], progress=False)
    return fidelity.compare_run(tmp_path / spec["optimizer"]["name"], run)


@pytest.mark.parametrize("optimizer,seed", [("AdamOptimizer", 44), ("GradientDescentOptimizer", 50),
                                            ("AdaBeliefOptimizer", 46), ("LookaheadOptimizerRAdam", 51)])
def test_published_run_is_matched_at_every_epoch(optimizer, seed, tmp_path):
    """Adam, SGD, AdaBelief and Lookahead(RAdam), re-run on the instance and seed of the published run, with the
    study's readings: every epoch's test loss within 1 % of the published one."""
    torch.set_num_threads(1)
    run = published(budget="oneshot", schedule="none", optimizer=optimizer, seed=seed)
    row = rerun(run, tmp_path)
    assert row["epochs_compared"] == 101
    assert row["max_rel_dev"] < 0.01, row


@pytest.mark.parametrize("optimizer,seed,hparams", [("AdaBeliefOptimizer", 46, {"rectify": False}),
                                                    ("LookaheadOptimizerRAdam", 51, {"semantics": "torch"})])
def test_the_other_readings_miss_the_published_curve(optimizer, seed, hparams, tmp_path):
    torch.set_num_threads(1)
    run = published(budget="oneshot", schedule="none", optimizer=optimizer, seed=seed)
    assert rerun(run, tmp_path, hparams=hparams)["max_rel_dev"] > 0.2


def test_published_spec_maps_the_run():
    run = published(budget="oneshot", schedule="cosine_wr", optimizer="AdamOptimizer", seed=44)
    spec = fidelity.published_spec(run)
    assert spec["paper"] == "crowded_valley" and spec["problem"] == "quadratic_deep"
    assert spec["problem_args"] == {"hessian_instance": 2, "order_seed": 44}
    assert spec["optimizer"]["name"] == "adam" and spec["optimizer"]["hparams"]["eps"] == 1e-8
    assert spec["schedule"] == {"name": "cosine_wr", "args": {"unit": "epoch"}}
    assert (spec["init_seed"], spec["epochs"], spec["batch_size"]) == (44, 100, 128)
    assert spec["tags"]["published"] == run.source
    ablation = fidelity.published_spec(run, instance=1, order_seed=None)
    assert ablation["problem_args"] == {"hessian_instance": 1, "order_seed": None}


def test_bad_input_names_the_choices():
    with pytest.raises(UnknownNameError, match="AdamOptimizer"):
        fidelity.our_optimizer("AdamWOptimizer", {})
    with pytest.raises(UnknownNameError, match="learning_rate"):
        fidelity.our_optimizer("AdamOptimizer", {"lr": 1e-3})
    with pytest.raises(ValueError, match="use_nesterov"):
        fidelity.our_optimizer("NAGOptimizer", {"learning_rate": 0.1, "momentum": 0.9, "use_nesterov": False})
    with pytest.raises(UnknownNameError, match="cosine_wr"):
        fidelity.our_schedule("step")
    assert fidelity.our_optimizer("LookaheadOptimizerRAdam", {"learning_rate": 1e-3, "k": 5.0, "alpha": 0.5}) == \
        ("lookahead_radam", {"lr": 1e-3, "k": 5, "alpha": 0.5})


def test_compare_curves():
    out = fidelity.compare_curves([10.0, 9.0, 8.8], [10.0, 10.0, 8.0])
    assert out["max_rel_dev"] == pytest.approx(0.1) and out["max_dev_epoch"] == 2
    assert out["final_ratio"] == pytest.approx(1.1) and out["epochs_compared"] == 3
    assert fidelity.compare_curves([1.0, None, 2.0], [1.0, 5.0, 2.0])["epochs_compared"] == 2
    with pytest.raises(ValueError, match="final epoch"):
        fidelity.compare_curves([1.0, 2.0], [1.0, 2.0, 3.0])


def test_run_curve_reads_metrics(tmp_path):
    lines = [{"kind": "eval", "epoch": 0, "step": 0, "test/loss": 3.0}, {"kind": "optim", "step": 0},
             {"kind": "eval", "epoch": 1, "step": 7, "test/loss": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert fidelity.run_curve(tmp_path) == [3.0, 2.0]
    assert fidelity.run_curve({"dir": str(tmp_path)}) == [3.0, 2.0]
    with pytest.raises(ValueError, match="valid/loss"):
        fidelity.run_curve(tmp_path, "valid/loss")


# --- the fetcher -------------------------------------------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PATHS = ["results_main/oneshot/none/quadratic_deep/AdamOptimizer/num_epochs__2__batch_size__128__learning_rate__1.e-03"
         f"/random_seed__{seed}__2020-01-18-13-00-4{seed - 42}.json" for seed in (42, 43)]


def raw_file(seed: int) -> bytes:
    """A DeepOBS result JSON as the TF runner wrote it (minibatch losses logged twice)."""
    return json.dumps({"testproblem": "quadratic_deep", "batch_size": 128, "num_epochs": 2, "random_seed": seed,
                       "l2_reg": None, "optimizer_name": "AdamOptimizer",
                       "optimizer_hyperparams": {"learning_rate": 0.001},
                       "training_params": {"lr_sched_epochs": [], "lr_sched_factors": []},
                       "train_losses": [3.0, 2.0, 1.0], "valid_losses": [3.1, 2.1, 1.1],
                       "test_losses": [3.2, 2.2, float(seed)], "minibatch_train_losses": [5.0, 5.0, 4.0, 4.0]},
                      indent=4).encode()


def test_fetch_runs_downloads_verifies_and_stores(tmp_path):
    from test_data_download import LocalServer

    with LocalServer() as server:
        for path, seed in zip(PATHS, (42, 43)):
            server.add(f"/{pr.CROWDED_VALLEY_REPO}/{COMMIT}/{path}", raw_file(seed))
        base = server.url("/{repo}/{commit}/{path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no published checksum: trust on first use, recorded
            written = pr.fetch_runs(PATHS, COMMIT, cache=tmp_path / "data", root=tmp_path / "raw", base_url=base,
                                    backoff_s=0)
        assert len(written) == 1 and written[0].name == "AdamOptimizer.json"
        runs = pr.load_runs(tmp_path / "raw")
        assert [r.seed for r in runs] == [42, 43] and runs[1].curve("test_losses") == [3.2, 2.2, 43.0]
        assert runs[0].curve("minibatch_train_losses")[:2] == [5.0, 4.0]  # de-duplicated
        assert runs[0].commit == COMMIT and runs[0].path == PATHS[0]
        hits = len(server.hits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pr.fetch_runs(PATHS, COMMIT, cache=tmp_path / "data", root=tmp_path / "raw", base_url=base)
        assert len(server.hits) == hits  # verified copies are not downloaded again
        # a copy that differs from the one recorded on first download is refused
        local = tmp_path / "data" / pr.raw_source(PATHS, COMMIT).name / "raw" / COMMIT / PATHS[0]
        local.unlink()
        server.add(f"/{pr.CROWDED_VALLEY_REPO}/{COMMIT}/{PATHS[0]}", raw_file(42).replace(b"3.2", b"3.3"))
        with pytest.raises(DownloadError, match="recorded on first download"):
            pr.fetch_runs(PATHS, COMMIT, cache=tmp_path / "data", root=tmp_path / "raw", base_url=base,
                          retries=1, backoff_s=0)


def test_fetch_refuses_bad_paths_and_commits():
    with pytest.raises(ValueError, match="40 lowercase hex"):
        pr.raw_source(PATHS, "abc")
    with pytest.raises(ValueError, match="not a results path"):
        pr.raw_source(["results_main/oneshot/none/README.md"], COMMIT)
    with pytest.raises(ValueError, match="seed"):
        pr.record_from_raw({**json.loads(raw_file(42)), "random_seed": 7}, path=PATHS[0], commit=COMMIT)


def test_fetch_published_command_refuses_bad_input_before_downloading(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "optrepro.cli", "data", "fetch-published", "abc", PATHS[0],
                          "--root", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "40 lowercase hex" in bad.stderr
    assert not any(tmp_path.iterdir())
