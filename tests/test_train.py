"""The run contract: determinism, batches, resume after SIGKILL, closures, controllers, divergence."""
import json
import math
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from optrepro.cli import main as cli_main
from optrepro.optim.registry import OPTIMIZERS, OptimizerInfo
from optrepro.plan import make_spec, run_id
from optrepro.runner import run_batch, run_one
from optrepro.train import CHECKPOINT, LOG_EVERY_STEPS, METRICS, RESULT, load_result


def spec(**kw):
    base = dict(paper="core", problem="digits_mlp", scale="smoke", optimizer="adam", seed=0, epochs=2)
    base.update(kw)
    return make_spec(**base)


def deterministic(results: Path, s) -> dict:
    return load_result(results / "runs" / run_id(s))["deterministic"]


def test_same_spec_twice_and_position_in_batch_give_identical_results(tmp_path):
    s = spec(problem_args={"dropout": 0.2})
    run_batch([s], tmp_path / "a")
    run_batch([s], tmp_path / "b")
    mixed = [spec(optimizer="sgd", seed=3), spec(seed=1, problem_args={"dropout": 0.5}), s]
    assert run_batch(mixed, tmp_path / "c") == 0
    a, b, c = (deterministic(tmp_path / d, s) for d in "abc")
    assert a == b == c
    assert a["status"] == "ok" and a["steps"] == 2 * (1197 // 64)
    # a different seed is a different run with different numbers: the comparison above is not vacuous
    assert deterministic(tmp_path / "c", mixed[1]) != a


def test_a_batch_ends_with_one_line_counting_its_runs_by_status(tmp_path, capsys):
    # `optrepro run` used to print nothing on success
    assert run_batch([spec(), spec(seed=1)], tmp_path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"optrepro: 2 runs under {tmp_path / 'runs'}: 2 ok"


def test_complete_runs_are_skipped_and_manifest_written_last(tmp_path):
    s = spec()
    manifest = tmp_path / "m.json"
    assert run_batch([s], tmp_path, manifest=manifest, batch_name="b1", scale="smoke") == 0
    result = tmp_path / "runs" / run_id(s) / RESULT
    mtime = result.stat().st_mtime_ns
    assert run_batch([s], tmp_path) == 0
    assert result.stat().st_mtime_ns == mtime
    m = json.loads(manifest.read_text())
    assert m["runs"] == [{"run_id": run_id(s), "status": "ok", "dir": str(tmp_path / "runs" / run_id(s))}]


def test_diverging_spec_exits_zero_with_status_diverged(tmp_path):
    s = spec(optimizer="sgd", hparams={"lr": 1e30}, epochs=1)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(s))
    assert cli_main(["run", str(path), "--results", str(tmp_path / "r")]) == 0
    assert deterministic(tmp_path / "r", s)["status"] == "diverged"


def test_batch_with_a_crashing_spec_finishes_the_others(tmp_path):
    bad = spec(seed=3)  # a spec edited by hand past the plan's checks: the run refuses it when it starts
    bad["problem_args"] = {**bad["problem_args"], "hidden": -1}
    good = [spec(seed=1, epochs=1), spec(seed=2, epochs=1)]
    manifest = tmp_path / "m.json"
    assert run_batch([good[0], bad, good[1]], tmp_path, manifest=manifest) == 1
    assert not manifest.exists()
    for s in good:
        assert deterministic(tmp_path, s)["status"] == "ok"
    failed = json.loads((tmp_path / "runs" / run_id(bad) / "failed.json").read_text())
    assert failed["status"] == "failed" and "'hidden'" in failed["error"]
    assert not (tmp_path / "runs" / run_id(bad) / RESULT).exists()


def test_unknown_names_are_refused_before_compute():
    with pytest.raises(ValueError, match="Valid choices: .*adam"):
        spec(optimizer="adamm")
    with pytest.raises(ValueError, match="lrr.*Valid choices: .*lr"):
        spec(hparams={"lrr": 0.1})
    with pytest.raises(ValueError, match="digits_mlp"):
        spec(problem="digit_mlp")
    with pytest.raises(ValueError, match="smoke"):
        spec(scale="tiny")


# --- resume after SIGKILL ------------------------------------------------------------------------------

def _train_child(s, results):
    torch.set_num_threads(1)
    run_one(s, Path(results), checkpoint_every_s=0.0)


def _kill_and_resume(s, results: Path, delay: float) -> str:
    """Fork a child that trains `s`, SIGKILL it after `delay` s, then finish the run here. Returns where it died."""
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_train_child, args=(s, str(results)))
    child.start()
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    run_dir = results / "runs" / run_id(s)
    where = "done" if (run_dir / RESULT).exists() else ("mid-run" if (run_dir / CHECKPOINT).exists() else "start")
    run_one(s, results, checkpoint_every_s=0.0)
    return where


def test_sigkill_at_twenty_random_points_resumes_to_identical_results(tmp_path):
    s = spec(epochs=4, problem_args={"dropout": 0.3}, controllers=[{"name": "reduce_on_plateau", "patience": 1}])
    run_one(s, tmp_path / "reference")
    reference = deterministic(tmp_path / "reference", s)
    reference_metrics = (tmp_path / "reference" / "runs" / run_id(s) / METRICS).read_text()
    t0 = time.perf_counter()
    run_one(s, tmp_path / "timing", checkpoint_every_s=0.0)
    duration = time.perf_counter() - t0
    rng = random.Random(1234)
    places = []
    for i in range(20):
        results = tmp_path / f"k{i}"
        places.append(_kill_and_resume(s, results, rng.uniform(0.0, 1.2 * duration)))
        assert deterministic(results, s) == reference, f"kill {i} ({places[-1]})"
        assert (results / "runs" / run_id(s) / METRICS).read_text() == reference_metrics
    assert places.count("mid-run") >= 5, places  # most kills must land inside the run to test anything


# --- closures and controllers ----------------------------------------------------------------------

@pytest.fixture
def lbfgs(monkeypatch):
    info = OptimizerInfo(name="test_lbfgs", target="torch.optim:LBFGS", closure="loss",
                         defaults={"lr": 0.5, "max_iter": 3, "history_size": 5})
    monkeypatch.setitem(OPTIMIZERS._entries, "test_lbfgs", info)
    return info


def test_closure_optimizer_and_reduce_on_plateau_survive_a_resume(tmp_path, lbfgs):
    s = spec(optimizer="test_lbfgs", epochs=4, batch_size=128,
             controllers=[{"name": "reduce_on_plateau", "patience": 1, "min_delta": 10.0}])
    run_one(s, tmp_path / "reference")
    reference = deterministic(tmp_path / "reference", s)
    steps = reference["steps"]
    # LBFGS evaluates the closure up to max_iter + extra times per step: passes exceed steps
    assert reference["forward_passes"] > steps and reference["backward_passes"] == reference["forward_passes"]
    assert reference["controllers"][0]["lr_factor"] < 1.0  # the plateau controller fired (min_delta is huge)
    for i, delay in enumerate((0.3, 0.6, 0.9)):
        results = tmp_path / f"k{i}"
        _kill_and_resume(s, results, delay)
        assert deterministic(results, s) == reference


def test_gradient_accumulation_covers_all_micro_batches(tmp_path):
    whole = spec(epochs=1, optimizer="sgd", hparams={"lr": 0.1})
    accumulated = spec(epochs=1, optimizer="sgd", hparams={"lr": 0.1}, grad_accum=4)
    run_batch([whole, accumulated], tmp_path)
    a, b = deterministic(tmp_path, whole), deterministic(tmp_path, accumulated)
    assert a["steps"] == b["steps"]
    assert b["forward_passes"] == a["forward_passes"]  # one pass over the step's batch, in 4 pieces
    assert abs(a["final"]["test"]["loss"] - b["final"]["test"]["loss"]) < 1e-4


def test_optimizer_internals_and_train_losses_are_logged_at_log_points(tmp_path, monkeypatch):
    class LoggingSGD(torch.optim.SGD):
        def internals(self):
            return {"lr0": self.param_groups[0]["lr"]}

    import optrepro.optim as optim_pkg
    monkeypatch.setattr(optim_pkg, "LoggingSGD", LoggingSGD, raising=False)
    monkeypatch.setitem(OPTIMIZERS._entries, "test_logging_sgd",
                        OptimizerInfo(name="test_logging_sgd", target="optrepro.optim:LoggingSGD",
                                      defaults={"lr": 0.1}, internals=True))
    s = spec(optimizer="test_logging_sgd", epochs=3, schedule={"name": "cosine"})
    run_one(s, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "runs" / run_id(s) / METRICS).read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    # 18 steps per epoch: the epoch ends and every LOG_EVERY_STEPS (50) steps
    assert LOG_EVERY_STEPS == 50 and [r["step"] for r in train] == [18, 36, 50, 54]
    lrs = [r["lr0"] for r in train]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.1 and lrs[-1] < 0.001  # the cosine reached the group
    assert all(math.isfinite(r["loss"]) for r in train) and train[-1]["loss"] < train[0]["loss"]


def test_a_diverged_run_stops_at_the_next_log_point_and_names_the_first_bad_step(tmp_path):
    s = spec(optimizer="sgd", hparams={"lr": 1e30}, epochs=3)
    run_one(s, tmp_path)
    result = deterministic(tmp_path, s)
    assert result["status"] == "diverged"
    assert result["diverged_at_step"] is not None and result["diverged_at_step"] < result["steps"]
    assert result["steps"] % 18 == 0  # the end of an epoch: the first log point after the loss went bad


# --- the papers' closure optimizers through the loop -------------------------------------------------

def _closure_optimizers():
    from optrepro import optim

    return [name for name in optim.available() if optim.info(name).requires_closure]


@pytest.mark.parametrize("name", _closure_optimizers())
def test_closure_optimizers_pass_counts_match_their_own_counters(tmp_path, name):
    s = spec(optimizer=name, epochs=1, batch_size=256)
    run_one(s, tmp_path)
    result = deterministic(tmp_path, s)
    assert result["status"] == "ok"
    assert result["forward_passes"] >= result["steps"] == 1197 // 256
    records = [json.loads(line) for line in (tmp_path / "runs" / run_id(s) / METRICS).read_text().splitlines()]
    internals = [r for r in records if r["kind"] == "train"]
    assert len(internals) == 1  # one log point: the end of the only epoch
    if "forward_evals" in internals[-1]:
        assert internals[-1]["forward_evals"] == result["forward_passes"]


def test_total_steps_is_filled_from_the_run_length(tmp_path):
    s = spec(optimizer="nos_opt4", epochs=1)
    assert s["optimizer"]["hparams"]["total_steps"] is None
    run_one(s, tmp_path)
    assert deterministic(tmp_path, s)["steps"] == 1197 // 64


def test_sigterm_writes_a_checkpoint_mid_epoch_and_the_run_resumes_identically(tmp_path):
    s = spec(epochs=20, problem_args={"dropout": 0.3})
    run_one(s, tmp_path / "reference")  # pays the one-off costs (dataset load) the forked child inherits
    reference = deterministic(tmp_path / "reference", s)
    t0 = time.perf_counter()
    run_one(s, tmp_path / "timing")
    duration = time.perf_counter() - t0

    def child():
        torch.set_num_threads(1)
        run_one(s, tmp_path / "k", checkpoint_every_s=1e9)  # no timed checkpoints: only the signal writes one

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    time.sleep(0.5 * duration)
    os.kill(proc.pid, signal.SIGTERM)
    proc.join()
    run_dir = tmp_path / "k" / "runs" / run_id(s)
    assert proc.exitcode != 0 and (run_dir / CHECKPOINT).exists() and not (run_dir / RESULT).exists()
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert state["progress"]["global_step"] > 0
    run_one(s, tmp_path / "k")
    assert deterministic(tmp_path / "k", s) == reference
    assert load_result(run_dir)["volatile"]["resumes"] == 1


def _sigterm_at_evaluation_batch(monkeypatch, at: int | None) -> list[int]:
    """Count evaluation batches of DigitsMLP (forward passes in eval mode); send this process SIGTERM during
    batch number `at` (0-based). Returns the running count."""
    from optrepro.problems.digits import DigitsMLP

    seen = [0]
    forward = DigitsMLP.forward

    def counting(self, model, batch, carry=None):
        if not model.training:
            if seen[0] == at:
                os.kill(os.getpid(), signal.SIGTERM)
            seen[0] += 1
        return forward(self, model, batch, carry)

    monkeypatch.setattr(DigitsMLP, "forward", counting)
    return seen


def test_sigterm_during_a_runs_last_evaluation_stops_it_there_and_the_resume_owes_it(tmp_path, monkeypatch):
    from optrepro.stopping import Interrupted

    s = spec(epochs=3)
    counted = _sigterm_at_evaluation_batch(monkeypatch, at=None)
    run_one(s, tmp_path / "reference")
    reference_metrics = (tmp_path / "reference" / "runs" / run_id(s) / METRICS).read_bytes()
    per_evaluation = counted[0] // 4  # epochs 0..3
    monkeypatch.undo()
    counted = _sigterm_at_evaluation_batch(monkeypatch, at=3 * per_evaluation + 1)  # the last evaluation
    with pytest.raises(Interrupted):
        run_batch([s], tmp_path / "k", manifest=tmp_path / "k" / "manifest.json")
    assert counted[0] == 3 * per_evaluation + 2  # stopped after the batch in progress, not at the end
    run_dir = tmp_path / "k" / "runs" / run_id(s)
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / RESULT).exists()
    assert not (tmp_path / "k" / "manifest.json").exists()
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["progress"]["eval_pending"]
    monkeypatch.undo()
    assert run_batch([s], tmp_path / "k", manifest=tmp_path / "k" / "manifest.json") == 0
    assert deterministic(tmp_path / "k", s) == deterministic(tmp_path / "reference", s)
    assert (run_dir / METRICS).read_bytes() == reference_metrics


def test_sigterm_between_two_runs_stops_the_batch_before_the_next_and_keeps_the_finished(tmp_path, monkeypatch):
    from optrepro import runner
    from optrepro.stopping import Interrupted

    first, second = spec(epochs=1, seed=1), spec(epochs=1, seed=2)
    real_run_one = runner.run_one

    def signal_after_first(one, results_dir, **kw):
        done = real_run_one(one, results_dir, **kw)
        if run_id(one) == run_id(first):
            os.kill(os.getpid(), signal.SIGTERM)
        return done

    monkeypatch.setattr(runner, "run_one", signal_after_first)
    manifest = tmp_path / "manifest.json"
    with pytest.raises(Interrupted):
        run_batch([first, second], tmp_path, manifest=manifest)
    kept = tmp_path / "runs" / run_id(first) / RESULT
    assert kept.exists() and not (tmp_path / "runs" / run_id(second)).exists() and not manifest.exists()
    mtime = kept.stat().st_mtime_ns
    monkeypatch.undo()
    assert run_batch([first, second], tmp_path, manifest=manifest) == 0
    assert kept.stat().st_mtime_ns == mtime  # the finished run was not trained again
    assert [r["run_id"] for r in json.loads(manifest.read_text())["runs"]] == [run_id(first), run_id(second)]


def test_a_stopped_batch_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    s = spec(epochs=1)
    (tmp_path / "spec.json").write_text(json.dumps(s))
    _sigterm_at_evaluation_batch(monkeypatch, at=0)
    assert cli_main(["run", str(tmp_path / "spec.json"), "--results", str(tmp_path)]) == 143
    err = capsys.readouterr().err
    assert err.startswith("optrepro run: stopped: signal 15") and err.count("\n") == 1


def test_deferred_spec_is_resolved_from_its_dependency_at_run_time(tmp_path):
    from optrepro.plan import DeferredSpec

    winner = tmp_path / "best.json"
    template = dict(paper="core", problem="digits_mlp", scale="smoke", optimizer="sgd", seed=4, epochs=1)
    entry = DeferredSpec(key="core/digits/sgd/best", template=template, depends_on=str(winner),
                         resolver="hparams_from", tags={"stage": "rerun"}).to_json()
    winner.write_text(json.dumps({"hparams": {"lr": 0.05}}))
    assert run_batch([entry], tmp_path / "r") == 0
    resolved = make_spec(**template, hparams={"lr": 0.05})
    result = load_result(tmp_path / "r" / "runs" / run_id(resolved))
    assert result["spec"]["optimizer"]["hparams"]["lr"] == 0.05 and result["spec"]["tags"]["stage"] == "rerun"


def test_train_metrics_use_the_problems_train_eval_subset(tmp_path, monkeypatch):
    from optrepro.problems.digits import DigitsMLP

    full = spec(epochs=1, seed=7)
    run_one(full, tmp_path / "all")
    monkeypatch.setattr(DigitsMLP, "train_eval_size", 100)
    run_one(full, tmp_path / "subset")
    a, b = deterministic(tmp_path / "all", full), deterministic(tmp_path / "subset", full)
    assert a["final"]["test"] == b["final"]["test"]  # training and the other splits are untouched
    assert a["final"]["train"] != b["final"]["train"]
    # 100 examples: accuracy is a multiple of 1/100
    assert round(b["final"]["train"]["accuracy"] * 100, 6) == round(b["final"]["train"]["accuracy"] * 100)


def test_at_best_valid_holds_every_split_at_the_lowest_validation_loss_and_reaches_the_runs_frame(tmp_path):
    from optrepro.report.aggregate import collect_runs

    # a large lr: the validation loss goes down, then up, so the best evaluation is not the last one
    s = spec(optimizer="sgd", hparams={"lr": 1.5}, epochs=8, problem_args={"dropout": 0.2})
    manifest = tmp_path / "manifest.json"
    assert run_batch([s], tmp_path, manifest=manifest) == 0
    result = deterministic(tmp_path, s)
    evals = [json.loads(line) for line in (tmp_path / "runs" / run_id(s) / METRICS).read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval" and r["epoch"] > 0]  # after training started
    best = min(evals, key=lambda r: r["valid/loss"])  # min keeps the first of equals, as the loop does
    at = result["at_best_valid"]
    assert (at["epoch"], at["step"]) == (best["epoch"], best["step"])
    for split in ("train", "valid", "test"):
        assert at[split] == {k.split("/")[1]: v for k, v in best.items() if k.startswith(f"{split}/")}
    assert best is not evals[-1], "the test needs a run whose last evaluation is not its best"
    row = collect_runs([manifest], root=tmp_path).iloc[0]
    assert row["at_best_valid.test.accuracy"] == at["test"]["accuracy"] and row["at_best_valid.epoch"] == at["epoch"]
    assert row["final.test.accuracy"] == result["final"]["test"]["accuracy"]


# --- the declarations the loop reads, through the loop ------------------------------------------------

class OwnStep(torch.optim.Optimizer):
    """Owns its step size (`step_size`, no lr) and multiplies it by the loop's lr_multiplier."""

    def __init__(self, params, step_size=0.1):
        super().__init__(params, {"step_size": step_size})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["step_size"] * group["lr_multiplier"])

    def internals(self):
        return {"multiplier": float(self.param_groups[0]["lr_multiplier"])}


class HvpSGD(torch.optim.SGD):
    """An SGD step that also takes a Hessian-vector product through the closure (closure="hvp")."""

    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure(backward=True, create_graph=True)
            params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=[torch.ones_like(g) for g in grads])
        self.hv_norm = float(torch.stack([h.norm() for h in hv]).norm())
        for p, g in zip(params, grads):
            p.grad = g.detach()
        super().step()
        return loss

    def internals(self):
        return {"hv_norm": self.hv_norm}


def test_a_multiplier_schedule_reaches_a_step_owning_optimizer_as_declared(tmp_path, monkeypatch):
    import optrepro.optim as optim_pkg

    monkeypatch.setattr(optim_pkg, "OwnStep", OwnStep, raising=False)
    monkeypatch.setitem(OPTIMIZERS._entries, "test_own_step", OptimizerInfo(
        name="test_own_step", target="optrepro.optim:OwnStep", defaults={"step_size": 0.1},
        lr_schedule="multiplier", internals=True))
    ours = spec(optimizer="test_own_step", epochs=3, schedule={"name": "cosine"})
    sgd = spec(optimizer="sgd", hparams={"lr": 0.1}, epochs=3, schedule={"name": "cosine"})
    run_batch([ours, sgd], tmp_path)
    # the same arithmetic as SGD with lr 0.1 under the same schedule
    assert deterministic(tmp_path, ours)["final"]["test"]["loss"] == pytest.approx(
        deterministic(tmp_path, sgd)["final"]["test"]["loss"], rel=1e-5)
    records = [json.loads(line) for line in (tmp_path / "runs" / run_id(ours) / METRICS).read_text().splitlines()]
    multipliers = [r["multiplier"] for r in records if r["kind"] == "train"]
    assert multipliers == sorted(multipliers, reverse=True) and multipliers[-1] < 0.01  # what the step used


def test_an_hvp_closure_optimizer_trains_through_the_loop(tmp_path, monkeypatch):
    import optrepro.optim as optim_pkg

    monkeypatch.setattr(optim_pkg, "HvpSGD", HvpSGD, raising=False)
    monkeypatch.setitem(OPTIMIZERS._entries, "test_hvp_sgd", OptimizerInfo(
        name="test_hvp_sgd", target="optrepro.optim:HvpSGD", defaults={"lr": 0.1}, closure="hvp",
        internals=True))
    s = spec(optimizer="test_hvp_sgd", epochs=1)
    run_one(s, tmp_path)
    result = deterministic(tmp_path, s)
    assert result["status"] == "ok" and result["backward_passes"] == result["steps"]
    records = [json.loads(line) for line in (tmp_path / "runs" / run_id(s) / METRICS).read_text().splitlines()]
    assert [r["hv_norm"] > 0 for r in records if r["kind"] == "train"] == [True]


def test_a_schedule_for_an_optimizer_that_owns_its_step_size_is_refused_at_plan_time(tmp_path):
    with pytest.raises(ValueError, match="'fuzzy_second_order' sets its own step size.*schedule 'cosine'"):
        spec(optimizer="fuzzy_second_order", schedule={"name": "cosine"})
    with pytest.raises(ValueError, match="controller 'reduce_on_plateau'"):
        spec(optimizer="sls", controllers=[{"name": "reduce_on_plateau"}])
    spec(optimizer="sls", controllers=[{"name": "early_stopping"}])  # stops the run, leaves the step size alone
    hand_written = spec(optimizer="sls")
    hand_written["schedule"] = {"name": "cosine", "args": {}}  # past make_spec: the loop refuses it too
    with pytest.raises(ValueError, match="sets its own step size"):
        run_one(hand_written, tmp_path)


def test_configure_torch_turns_determinism_on_without_importing_the_compiler_stack():
    import subprocess
    import sys

    code = ("import sys, torch; from optrepro.runner import configure_torch; configure_torch(1); "
            "assert torch.are_deterministic_algorithms_enabled(), 'off'; "
            "assert torch.is_deterministic_algorithms_warn_only_enabled(), 'not warn-only'; "
            "assert 'torch._inductor' not in sys.modules, 'inductor imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_two_deferred_requests_that_resolve_to_one_run_train_it_once_and_each_keeps_its_label(tmp_path):
    """Two budgets whose tuning winners coincide re-run the same spec: one run, two rows in the paper's frame,
    one per budget (the report's statistics of each budget need it)."""
    from optrepro.plan import DeferredSpec, unique_entries
    from optrepro.report.aggregate import collect_runs, own_runs

    winner = tmp_path / "best.json"
    winner.write_text(json.dumps({"hparams": {"lr": 0.05}}))
    template = dict(paper="core", problem="digits_mlp", scale="smoke", optimizer="sgd", seed=4, epochs=1)
    entries = [DeferredSpec(key=f"core/digits/sgd/{budget}", template=template, depends_on=str(winner),
                            resolver="hparams_from", tags={"stage": "rerun", "budget": budget}).to_json()
               for budget in ("small", "large")]
    unique, requests = unique_entries(entries)
    manifest = tmp_path / "r" / "batches" / "core" / "b.json"
    manifest.parent.mkdir(parents=True)
    assert run_batch(list(unique.values()), tmp_path / "r", manifest=manifest, batch_name="core/b") == 0
    listed = json.loads(manifest.read_text())["runs"]
    assert len({r["run_id"] for r in listed}) == 1 and [r["key"] for r in listed] == list(unique)
    paper_requests = {key: papers["core"] for key, papers in requests.items()}
    rows = own_runs(collect_runs([manifest]), "core", paper_requests)
    assert sorted(rows["tags.budget"]) == ["large", "small"] and rows["run_id"].nunique() == 1


def test_one_paper_asking_for_one_run_under_two_labels_sees_both():
    from optrepro.plan import unique_entries

    a = make_spec(paper="core", problem="digits_mlp", scale="smoke", optimizer="sgd", seed=4, epochs=1,
                  tags={"stage": "oneshot", "arm": "sgd"})
    b = make_spec(paper="core", problem="digits_mlp", scale="smoke", optimizer="sgd", seed=4, epochs=1,
                  tags={"stage": "fidelity", "arm": "GradientDescentOptimizer"})
    unique, requests = unique_entries([a, b, a])
    assert list(unique) == [run_id(a)] and run_id(a) == run_id(b)
    assert requests[run_id(a)] == {"core": [a["tags"], b["tags"]]}
