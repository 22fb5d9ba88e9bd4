"""ALSALS's replication: pass counts counted independently of the closure, the equal-compute unit by hand, the
planner (sweep, winner, equal-compute budget), the problems' carved validation splits and ResNet depth, and the
labels of runs two arms share."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from optrepro import problems
from optrepro.plan import DeferredSpec, make_spec, resolve_deferred, run_id
from optrepro.planners import alsals as planner
from optrepro.runner import run_one
from optrepro.train import METRICS, load_result
from optrepro.workflow import paper_config

ROOT = Path(__file__).resolve().parents[1]
GLOBAL = {"results_dir": "results", "device": "cuda"}


# --- pass counts, counted on the model --------------------------------------------------------------

class ModelCounter:
    """Counts, on the model itself, every training-mode forward (with or without a graph) and every backward that
    reaches its output: one event per micro-batch. Evaluation runs in eval mode and is not counted."""

    def __init__(self):
        self.events: list[bool] = []  # one per training forward: True when it was back-propagated
        self.backwards = 0

    def install(self, model: torch.nn.Module) -> torch.nn.Module:
        def hook(module, inputs, output):
            if not module.training:
                return
            self.events.append(output.requires_grad)
            if output.requires_grad:
                output.register_hook(self._backward)

        model.register_forward_hook(hook)
        return model

    def _backward(self, grad):
        self.backwards += 1


@pytest.fixture
def counter(monkeypatch):
    from optrepro.problems.digits import DigitsMLP

    counter = ModelCounter()
    build = DigitsMLP.build_model
    monkeypatch.setattr(DigitsMLP, "build_model", lambda self: counter.install(build(self)))
    return counter


def digits_spec(optimizer: str, grad_accum: int, batch_size: int = 128, **hparams) -> dict:
    return make_spec(paper="alsals", problem="digits_mlp", scale="smoke", optimizer=optimizer, hparams=hparams,
                     seed=3, epochs=1, batch_size=batch_size, grad_accum=grad_accum)


def deterministic(tmp_path, spec) -> dict:
    return load_result(tmp_path / "runs" / run_id(spec))["deterministic"]


@pytest.mark.parametrize("grad_accum", [1, 2])
@pytest.mark.parametrize("optimizer", ["alsals", "adamsls", "adasls", "sls", "adam"])
def test_result_pass_counts_equal_the_closure_calls_counted_on_the_model(tmp_path, counter, optimizer, grad_accum):
    spec = digits_spec(optimizer, grad_accum)
    run_one(spec, tmp_path)
    result = deterministic(tmp_path, spec)
    forwards, backwards = len(counter.events), counter.backwards
    # every call of the step's closure evaluates all of its micro-batches, and back-propagates all or none of them
    assert forwards % grad_accum == 0 and backwards % grad_accum == 0
    assert backwards == sum(counter.events)
    assert result["forward_passes"] == forwards // grad_accum
    assert result["backward_passes"] == backwards // grad_accum == result["steps"] == 1197 // 128
    assert result["cost_units"] == pytest.approx(result["backward_passes"]
                                                 + (result["forward_passes"] - result["backward_passes"]) / 3)
    if optimizer == "adam":
        assert result["forward_passes"] == result["steps"]
    else:  # a line search evaluates trial points: more forward passes than steps
        assert result["forward_passes"] > result["steps"]


def test_cost_units_of_a_two_step_alsals_run_by_hand(tmp_path, counter):
    # 1197 digits // 598 = 2 steps; 2 micro-batches of 299 per step
    spec = digits_spec("alsals", 2, batch_size=598, c=0.3)
    run_one(spec, tmp_path)
    result = deterministic(tmp_path, spec)
    assert result["steps"] == 2
    # by hand, from the model's own count: a forward+backward pass over the step's batch is 1, a forward alone 1/3
    micro = counter.events
    fb, fwd_only = sum(micro) / 2, (len(micro) - sum(micro)) / 2
    assert fb == 2
    assert result["cost_units"] == pytest.approx(fb * 1 + fwd_only / 3)
    # and from ALSALS's algorithm: per step one forward+backward, one slope probe (plus one per eps bump) and one
    # trial (plus one per backtrack); the optimizer's counters give the bumps and backtracks
    records = [json.loads(line) for line in (tmp_path / "runs" / run_id(spec) / METRICS).read_text().splitlines()]
    last = [r for r in records if "backtracks" in r][-1]
    assert last["step"] == 2
    forward_only = 2 * (1 + 1) + last["numerical_error"] + last["backtracks"]
    assert fwd_only == forward_only
    assert result["cost_units"] == pytest.approx(2 + forward_only / 3)


def test_cost_units_of_a_two_step_adam_run_by_hand(tmp_path, counter):
    spec = digits_spec("adam", 2, batch_size=598)
    run_one(spec, tmp_path)
    result = deterministic(tmp_path, spec)
    assert (result["steps"], result["forward_passes"], result["backward_passes"]) == (2, 2, 2)
    assert result["cost_units"] == 2.0 and len(counter.events) == 4


# --- the planner --------------------------------------------------------------------------------------

def plan(scale: str) -> list:
    pconfig = {**paper_config(ROOT / "config", "alsals", scale), "paper": "alsals"}
    return planner.alsals_planner(pconfig, scale, GLOBAL)


def tags(entry) -> dict:
    return entry.tags if isinstance(entry, DeferredSpec) else entry["tags"]


def spec_of(entry) -> dict:
    return entry.template if isinstance(entry, DeferredSpec) else entry


def test_full_scale_plan_has_every_task_arm_and_seed():
    entries = plan("full")
    count = {}
    for e in entries:
        t = tags(e)
        count[(t["experiment"], t["arm"])] = count.get((t["experiment"], t["arm"]), 0) + 1
    glue = ["alsals", "alsals_one_c", "adamsls", "adamsls_speed_up", "adasls", "sls", "adam_authors", "adam",
            "adam_equal_compute"]
    image = ["alsals", "alsals_as_run", "alsals_one_c", "adamsls", "adasls", "sls", "adam_authors", "adam",
             "adam_equal_compute"]
    for task in ("sst2", "qnli", "mnli", "mrpc"):
        assert {a: count[(task, a)] for a in glue} == {a: 5 for a in glue}
        assert count[(task, "adam_sweep")] == 7  # 1e-5, 2e-5, 3e-5, 1e-4, 3e-4, 1e-3 and the scripts' 1e-2
        assert (task, "alsals_as_run") not in count  # no BatchNorm in BERT: it would repeat the clean runs
    for task, seeds in (("cifar10", 5), ("cifar100", 5), ("imagenet", 3)):
        assert {a: count[(task, a)] for a in image} == {a: seeds for a in image}
        assert count[(task, "adam_sweep")] == 5
    assert count[("gpt2", "adam_sweep")] == 6  # the grid and nanoGPT's 6e-4
    assert count[("gpt2", "alsals")] == 3 and ("gpt2", "alsals_as_run") not in count
    for task in ("cifar10_resnet34", "cifar100_resnet34"):
        assert {a for (t, a) in count if t == task} == {"alsals", "adamsls", "adam_authors"}
    assert len(entries) == 410 and sum(isinstance(e, DeferredSpec) for e in entries) == 72


def test_full_scale_specs_follow_the_scripts():
    entries = plan("full")
    by = {}
    for e in entries:
        t = tags(e)
        by.setdefault((t["experiment"], t["arm"]), spec_of(e))
    by = {key: s if "spec_version" in s else make_spec(**s) for key, s in by.items()}  # templates resolved too
    for (task, arm), s in by.items():
        assert s["precision"] == "fp32"
        if s["optimizer"]["name"] == "adam":
            assert s["schedule"]["name"] == "warmup_cosine" and s["schedule"]["args"]["warmup_fraction"] == 0.1
            assert s["optimizer"]["hparams"]["semantics"] == "torch"
        else:  # a line search sets its own step size
            assert s["schedule"] == {"name": "constant", "args": {}}
    assert by[("sst2", "alsals")]["optimizer"]["hparams"]["c"] == 0.3
    assert by[("cifar10", "alsals")]["optimizer"]["hparams"]["c"] == 0.5
    assert by[("cifar10", "alsals")]["problem_args"]["depth"] == 50
    assert by[("cifar10_resnet34", "alsals")]["problem_args"]["depth"] == 34
    assert by[("cifar10", "alsals_as_run")]["optimizer"]["hparams"]["mode"] == "as-run"
    for task in ("sst2", "cifar10", "gpt2"):  # one c everywhere; GPT-2 keeps the authors' gradient clipping
        assert by[(task, "alsals_one_c")]["optimizer"]["hparams"]["c"] == 0.1
    assert by[("gpt2", "alsals_one_c")]["optimizer"]["hparams"]["clip_grad"] == 0.25
    assert by[("gpt2", "alsals")]["optimizer"]["hparams"]["clip_grad"] == 0.25
    assert by[("sst2", "sls")]["optimizer"]["hparams"]["n_batches_per_epoch"] == 67349 // 32
    assert by[("sst2", "adam_authors")]["optimizer"]["hparams"]["lr"] == 1e-2
    assert by[("gpt2", "adam_authors")]["optimizer"]["hparams"]["beta2"] == 0.95
    assert by[("gpt2", "alsals")]["problem_args"]["train_windows"] == 480_000
    assert by[("gpt2", "alsals")]["batch_size"] == 480 and by[("gpt2", "alsals")]["grad_accum"] == 40
    # the sweep runs on a validation split carved from the training data; the winner re-runs on all of it
    assert by[("mnli", "adam_sweep")]["problem_args"]["valid_examples"] == 10_000
    assert by[("mnli", "alsals")]["problem_args"]["valid_examples"] == 0
    tuned = next(e for e in entries if isinstance(e, DeferredSpec) and e.tags["arm"] == "adam"
                 and e.tags["experiment"] == "mnli")
    assert tuned.depends_on == "results/full/alsals/mnli/adam_lr.json" and tuned.resolver == "hparams_from"
    equal = next(e for e in entries if isinstance(e, DeferredSpec) and e.tags["arm"] == "adam_equal_compute"
                 and e.tags["experiment"] == "mnli")
    assert equal.depends_on == "results/full/alsals/mnli/adam_equal_compute_budget.json"
    assert equal.resolver == planner.EQUAL_COMPUTE_RESOLVER


def test_smoke_plan_runs_every_arm_on_one_task_and_adam_and_alsals_on_every_task():
    entries = plan("smoke")
    arms = {}
    for e in entries:
        arms.setdefault(tags(e)["experiment"], set()).add(tags(e)["arm"])
    config = yaml.safe_load((ROOT / "config/papers/alsals.yaml").read_text())
    assert set(config["arms"]) <= arms["mrpc"]
    for task in ("sst2", "qnli", "mnli", "mrpc", "cifar10", "cifar100", "imagenet", "gpt2"):
        assert {"alsals"} <= arms[task] and arms[task] & {"adam", "adam_authors"}
    assert all(spec_of(e)["scale"] == "smoke" for e in entries)


def config_with(change) -> dict:
    pconfig = {**paper_config(ROOT / "config", "alsals", "smoke"), "paper": "alsals"}
    change(pconfig)
    return pconfig


def test_bad_arms_and_tasks_are_refused_with_the_choices():
    def typo(p):
        p["tasks"][0]["arms"] = ["alsals", "adm"]
    with pytest.raises(ValueError, match=r"unknown arm of task 'mrpc': 'adm'.*Did you mean 'adam'.*Valid choices"):
        planner.alsals_planner(config_with(typo), "smoke", GLOBAL)

    def no_tuning_split(p):
        del p["tasks"][0]["tune"]
    with pytest.raises(ValueError, match=r"task 'mrpc': arm 'adam' is tuned.*tune.problem_args"):
        planner.alsals_planner(config_with(no_tuning_split), "smoke", GLOBAL)

    def equal_without_units(p):
        p["tasks"][0]["arms"] = ["adam", "adam_equal_compute"]
    with pytest.raises(ValueError, match=r"arm 'adam_equal_compute' needs arm 'alsals'"):
        planner.alsals_planner(config_with(equal_without_units), "smoke", GLOBAL)

    def bad_hparam(p):
        p["tasks"][0]["hparams"]["alsals"] = {"cc": 0.3}
    with pytest.raises(ValueError, match=r"'cc'"):
        planner.alsals_planner(config_with(bad_hparam), "smoke", GLOBAL)


# --- the stages' own jobs: the sweep's winner, the equal-compute budget, the equal-compute spec ---------

def fake_run(root: Path, spec: dict, status: str = "ok", **deterministic) -> dict:
    run_dir = root / "runs" / run_id(spec)
    run_dir.mkdir(parents=True)
    result = {"run_id": run_id(spec), "spec": spec,
              "deterministic": {"status": status, "final": {}, "best": {}, "steps": 0, "epochs": 0,
                                "forward_passes": 0, "backward_passes": 0, "cost_units": 0.0, **deterministic},
              "volatile": {"wall_time_s": 1.0}}
    (run_dir / "result.json").write_text(json.dumps(result))
    return {"run_id": run_id(spec), "status": status, "dir": str(run_dir)}


def manifest(root: Path, name: str, entries: list) -> Path:
    path = root / "batches" / "alsals" / "p" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"batch": name, "scale": "smoke", "runs": entries}))
    return path


def mrpc_spec(arm: str, stage: str, **kw) -> dict:
    return make_spec(paper="alsals", problem="alsals_glue_mrpc_bert", scale="smoke", seed=kw.pop("seed", 0),
                     tags={"experiment": "mrpc", "arm": arm, "stage": stage}, **kw)


def test_the_sweep_picks_the_lowest_validation_loss_and_a_diverged_run_never_wins(tmp_path):
    runs = [fake_run(tmp_path, mrpc_spec("adam_sweep", "tune", optimizer="adam", hparams={"lr": lr}),
                     status, final={"valid": {"loss": loss}})
            for lr, loss, status in ((1e-4, 0.52, "ok"), (1e-3, 0.31, "ok"), (1e-2, "nan", "diverged"),
                                     (3e-4, 0.31, "ok"))]
    runs.append(fake_run(tmp_path, mrpc_spec("alsals", "main", optimizer="alsals"), final={"valid": {"loss": 0.1}}))
    choice = planner.select_lr([manifest(tmp_path, "tune-0", runs)], "mrpc", "adam")
    assert choice["hparams"] == {"lr": 3e-4}  # tie at 0.31: the smaller lr
    assert [c["lr"] for c in choice["candidates"]] == [3e-4, 1e-3, 1e-4, 1e-2]
    assert choice["candidates"][-1]["value"] is None
    with pytest.raises(ValueError, match="no sweep run of arm 'adam' on task 'qnli'"):
        planner.select_lr([manifest(tmp_path, "tune-1", runs)], "qnli", "adam")


def test_the_budget_is_alsals_mean_units_in_whole_adam_epochs(tmp_path):
    runs = [fake_run(tmp_path, mrpc_spec("alsals", "main", optimizer="alsals", seed=s), steps=16, epochs=2,
                     cost_units=units) for s, units in ((0, 39.7), (1, 43.3))]
    runs.append(fake_run(tmp_path, mrpc_spec("adam_authors", "main", optimizer="adam", seed=0), steps=16, epochs=2,
                         cost_units=16.0))
    budget = planner.compute_budget({"arm": "adam", "hparams": {"lr": 1e-3}}, [manifest(tmp_path, "main-0", runs)],
                                    "mrpc", "alsals")
    assert budget["mean_units"] == pytest.approx(41.5) and budget["steps_per_epoch"] == 8
    assert budget["epochs"] == 5  # 41.5 units / 8 steps per epoch = 5.19 epochs of Adam's one unit per step
    assert budget["ratio"] == pytest.approx(40 / 41.5)
    assert budget["hparams"] == {"lr": 1e-3}


def test_equal_compute_spec_resolves_in_a_process_that_never_imported_the_planner(tmp_path):
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"hparams": {"lr": 3e-4}, "epochs": 7}))
    template = dict(paper="alsals", problem="alsals_glue_mrpc_bert", scale="smoke", optimizer="adam",
                    hparams={"semantics": "torch"}, schedule={"name": "warmup_cosine", "warmup_fraction": 0.1},
                    seed=2)
    entry = DeferredSpec(key="alsals/mrpc/adam_equal_compute/seed2", template=template, depends_on=str(budget),
                         resolver=planner.EQUAL_COMPUTE_RESOLVER, tags={"arm": "adam_equal_compute"}).to_json()
    code = ("import json, sys; from optrepro.plan import resolve_deferred; "
            "print(json.dumps(resolve_deferred(json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(entry)], capture_output=True, text=True,
                         check=True).stdout
    spec = json.loads(out)
    assert spec == resolve_deferred(entry)
    assert spec["epochs"] == 7 and spec["optimizer"]["hparams"]["lr"] == 3e-4
    assert spec["optimizer"]["hparams"]["semantics"] == "torch" and spec["tags"]["arm"] == "adam_equal_compute"


def test_a_run_two_arms_share_is_labelled_with_both(tmp_path):
    from optrepro.report.aggregate import collect_runs
    from optrepro.report.alsals import planned_runs
    from optrepro.workflow import write_plan

    scale_dir = tmp_path / "results" / "smoke"
    authors = mrpc_spec("adam_authors", "main", optimizer="adam", hparams={"lr": 1e-3})
    choice = scale_dir / "alsals" / "mrpc" / "adam_lr.json"
    choice.parent.mkdir(parents=True)
    choice.write_text(json.dumps({"hparams": {"lr": 1e-3}}))
    template = dict(paper="alsals", problem="alsals_glue_mrpc_bert", scale="smoke", optimizer="adam", seed=0)
    tuned = DeferredSpec(key="alsals/mrpc/adam/seed0", template=template, depends_on=str(choice),
                         resolver="hparams_from", tags={"experiment": "mrpc", "arm": "adam", "stage": "tuned"})
    key_main, key_tuned = "alsals/p/main-0-x", "alsals/p/tuned-0-y"
    write_plan({key_main: {"entries": [authors]}, key_tuned: {"entries": [tuned.to_json()]}},
               scale_dir / "plans" / "abc")
    (scale_dir / "plans" / "current").symlink_to("abc")
    entry = fake_run(scale_dir, authors, final={"train": {"loss": 0.5}})
    manifests = []
    for key in (key_main, key_tuned):
        path = scale_dir / "batches" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"batch": key, "scale": "smoke", "runs": [entry]}))
        manifests.append(path)
    runs = collect_runs(manifests)
    assert len(runs) == 1 and runs["tags.arm"].iloc[0] == "adam_authors"
    labelled = planned_runs(runs, manifests)
    assert sorted(labelled["tags.arm"]) == ["adam", "adam_authors"]
    assert set(labelled["run_id"]) == {run_id(authors)}
    assert set(labelled[labelled["tags.arm"] == "adam"]["tags.stage"]) == {"tuned"}


# --- the problems' arguments ------------------------------------------------------------------------

def test_glue_carves_validation_from_training_data_and_keeps_the_file_order():
    plain = problems.get("alsals_glue_mrpc_bert", "smoke").splits()
    carved = problems.get("alsals_glue_mrpc_bert", "smoke", valid_examples=64).splits()
    assert plain["valid"] is plain["test"] and len(plain["train"]) == 256
    assert len(carved["train"]) == 192 and len(carved["valid"]) == 64 and carved["test"] is not carved["valid"]
    rows = lambda split: {tuple(r.tolist()) for r in split.tensors[0]}  # noqa: E731
    assert rows(carved["train"]) | rows(carved["valid"]) == rows(plain["train"])
    assert not rows(carved["train"]) & rows(carved["valid"])
    assert not rows(carved["valid"]) & rows(plain["test"])
    order = [tuple(r.tolist()) for r in plain["train"].tensors[0]]
    kept = [tuple(r.tolist()) for r in carved["train"].tensors[0]]
    assert kept == [r for r in order if r in set(kept)]  # the authors' file order, without the held-out rows
    with pytest.raises(ValueError, match="valid_examples must be between 1 and 255"):
        problems.get("alsals_glue_mrpc_bert", "smoke", valid_examples=256).splits()


def test_cifar_carves_validation_and_builds_the_resnet_depth_asked_for():
    from torchvision.models.resnet import BasicBlock, Bottleneck

    carved = problems.get("alsals_cifar10_resnet34", "smoke", valid_images=64).splits()
    plain = problems.get("alsals_cifar10_resnet34", "smoke").splits()
    assert plain["valid"] is plain["test"]
    assert len(carved["train"]) + len(carved["valid"]) == len(plain["train"]) and len(carved["valid"]) == 64
    assert isinstance(problems.get("alsals_cifar10_resnet34", "smoke", depth=50).build_model().layer1[0], Bottleneck)
    assert isinstance(problems.get("alsals_cifar10_resnet34", "smoke").build_model().layer1[0], BasicBlock)
    resnet50 = problems.get("alsals_cifar100_resnet34", "full", depth=50).build_model()
    assert sum(p.numel() for p in resnet50.parameters()) == 23_712_932  # torchvision resnet50, 100 classes
    with pytest.raises(ValueError, match=r"unknown ResNet depth.*101.*Valid choices: 18, 34, 50"):
        problems.get("alsals_cifar10_resnet34", "smoke", depth=101)


def test_gpt2_trains_on_its_token_budget_and_validates_on_the_windows_after_it():
    default = problems.get("alsals_gpt2_owt", "smoke").splits()
    assert len(default["train"]) == 256 and default["valid"] is default["test"]
    carved = problems.get("alsals_gpt2_owt", "smoke", train_windows=100, valid_windows=20).splits()
    train, valid = carved["train"].tensors, carved["valid"].tensors
    assert len(train[0]) == 100 and len(valid[0]) == 20
    assert set(train[1].tolist()) == set(valid[1].tolist()) == {0}  # both from the training stream
    assert valid[0].min() > train[0].max()  # never trained on
    assert problems.info("alsals_gpt2_owt").args["train_windows"] == 480_000  # 1,000 steps of 480 x 1,024 tokens
    with pytest.raises(ValueError, match="exceed"):
        problems.get("alsals_gpt2_owt", "smoke", valid_windows=10_000).splits()
    assert math.isclose(480_000 * 1024 / 1e6, 491.52)
