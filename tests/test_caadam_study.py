"""The CaAdam study: its full-scale plan counted arm by arm, the effective multipliers at full model size, the
sweep's selection, and the plan-tagged runs frame the section is built from."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from optrepro.caadam import analysis, design, tuning
from optrepro.optim.caadam_rules import reference_multipliers
from optrepro.plan import run_id
from optrepro.workflow import load_plan, paper_config

ROOT = Path(__file__).resolve().parents[1]
CELLS = ["cifar10_resnet20", "cifar100_resnet20", "fmnist56_resnet20", "california_mlp_64_32",
         "california_mlp_128_64_32", "california_mlp_128_128_64", "california_mlp_256_128_64_32",
         "california_mlp_128x5", "california_mlp_1024_256_64_16"]
ARMS = ["adam", "adamw", "adamax", "nadam", "add_ref", "mul_ref", "depth_ref", "add_desc", "mul_desc", "depth_desc",
        "adam_lr_add", "adam_lr_mul"]
SWEPT = ["adam", "add_ref", "mul_ref", "depth_ref", "add_desc", "mul_desc", "depth_desc"]


def study(scale: str, results_dir: str = "results") -> design.Design:
    pconfig = {**paper_config(ROOT / "config", "caadam", scale), "paper": "caadam"}
    return design.design(pconfig, scale, {"results_dir": results_dir, "device": "cuda"})


# --- the full-scale plan ------------------------------------------------------------------------------------

def test_full_scale_plan_counts_every_arm_cell_protocol_and_run():
    d = study("full")
    main, tune, tuned = design.main_specs(d), design.tune_specs(d), design.tuned_specs(d)
    counts = Counter((s["tags"]["cell"], s["tags"]["arm"], s["tags"]["protocol"]) for s in main)
    assert set(counts) == {(c, a, p) for c in CELLS for a in ARMS for p in ("as_run", "redrawn")}
    assert set(counts.values()) == {30}  # 30 runs per cell, arm and protocol: 12 x 9 x 2 x 30 = 6480
    assert len(main) == 6480
    grid = Counter((s["tags"]["cell"], s["tags"]["arm"], s["tags"]["lr_factor"]) for s in tune)
    assert set(grid) == {(c, a, f) for c in CELLS for a in SWEPT for f in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)}
    assert set(grid.values()) == {5} and len(tune) == 9 * 7 * 6 * 5  # 5 seeds per grid point
    assert Counter((t.tags["cell"], t.tags["arm"]) for t in tuned) == {(c, a): 30 for c in CELLS for a in SWEPT}
    assert len({run_id(s) for s in main + tune}) == len(main) + len(tune)  # no two arms plan the same run


def test_as_run_shares_one_initialization_per_cell_and_redrawn_does_not():
    d = study("full")
    for cell in CELLS:
        specs = [s for s in design.main_specs(d) if s["tags"]["cell"] == cell]
        as_run = [s for s in specs if s["tags"]["protocol"] == "as_run"]
        assert {s["init_seed"] for s in as_run} == {1000}  # every run of every arm: the notebooks' design
        assert len({s["data_seed"] for s in as_run}) == 30  # ... with 30 batch orders
        for arm in ARMS:
            redrawn = [s for s in specs if s["tags"]["protocol"] == "redrawn" and s["tags"]["arm"] == arm]
            assert sorted(s["init_seed"] for s in redrawn) == list(range(30))
    tuning_seeds = {s["init_seed"] for s in design.tune_specs(d)}
    assert tuning_seeds == {100, 101, 102, 103, 104}  # the sweep selects on seeds the comparisons never use


def test_full_scale_specs_follow_the_notebooks():
    d = study("full")
    specs = {(s["tags"]["cell"], s["tags"]["arm"]): s for s in design.main_specs(d)
             if s["tags"]["protocol"] == "redrawn" and s["tags"]["seed"] == 0}
    resnet, mlp = specs[("cifar10_resnet20", "adam")], specs[("california_mlp_64_32", "adam")]
    assert (resnet["batch_size"], resnet["epochs"], resnet["device"]) == (64, 1000, "cuda")
    assert (mlp["batch_size"], mlp["epochs"], mlp["device"]) == (128, 1000, "cpu")
    stop, plateau = resnet["controllers"]
    assert stop == {"name": "early_stopping", "args": {"monitor": "valid/reg_loss", "mode": "min", "min_delta": 1e-5,
                                                       "patience": 15, "start_from_epoch": 0}}
    assert plateau["args"]["patience"] == 6 and plateau["args"]["factor"] == 0.25
    assert [c["args"]["patience"] for c in mlp["controllers"]] == [25, 8]
    assert mlp["controllers"][0]["args"]["start_from_epoch"] == 12
    assert specs[("cifar10_resnet20", "add_ref")]["optimizer"]["hparams"]["mode"] == "reference"
    assert specs[("cifar10_resnet20", "add_desc")]["optimizer"]["hparams"]["mode"] == "described"
    assert specs[("cifar10_resnet20", "adamw")]["optimizer"] == {
        "name": "keras_adamw", "impl_version": 1,
        "hparams": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.004, "amsgrad": False}}


@pytest.mark.parametrize("cell, add, mul", [
    ("cifar10_resnet20", 1.9195, 4.7483), ("fmnist56_resnet20", 1.9195, 4.7483),
    ("cifar100_resnet20", 1.1813, 1.3596), ("california_mlp_64_32", 1.95, 5.0),
    ("california_mlp_1024_256_64_16", 1.95, 5.0),
])
def test_lr_matched_controls_run_adam_at_the_reference_kernel_factor(cell, add, mul):
    d = study("full")
    lrs = {s["tags"]["arm"]: s["optimizer"]["hparams"]["lr"] for s in design.main_specs(d)
           if s["tags"]["cell"] == cell and s["tags"]["seed"] == 0 and s["tags"]["protocol"] == "redrawn"}
    assert lrs["adam_lr_add"] == pytest.approx(1e-3 * add, abs=1e-7)
    assert lrs["adam_lr_mul"] == pytest.approx(1e-3 * mul, abs=1e-7)
    assert lrs["adam"] == lrs["add_ref"] == 1e-3


def test_full_scale_plan_loads_and_its_tuned_batches_wait_for_the_selections(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(scale="full", papers=["caadam"], results_dir=str(tmp_path / "results"))
    plan = load_plan(config, ROOT / "config")
    batches = list(plan.index.values())
    assert sum(b["runs"] for b in batches) == 6480 + 1890 + 1890
    tuned = [b for b in batches if b["stage"] == "tuned"]
    assert sum(b["runs"] for b in tuned) == 1890
    assert all(b["inputs"] and all(i.endswith(".json") and "/caadam/select/" in i for i in b["inputs"]) for b in tuned)
    assert not any(b["inputs"] for b in batches if b["stage"] != "tuned")


def test_depth_has_no_lr_matched_control():
    pconfig = {**paper_config(ROOT / "config", "caadam", "full"), "paper": "caadam"}
    pconfig["arms"] = {**pconfig["arms"], "adam_lr_depth": {"optimizer": "keras_adam", "lr_of": "caadam_depth"}}
    with pytest.raises(ValueError, match="no single learning rate"):
        design.design(pconfig, "full", {})


# --- multipliers at full model size ---------------------------------------------------------------------------

# Kernel / 1-D multipliers of the authors' code in the published runs (remigenet/CaAdam@ce14f7e caadam/caadam.py
# under Keras 3: counts keyed by the short variable name, so every kernel takes the last kernel's count and
# 1-D tensors c = 0), per cell: (additive kernel, additive 1-D, multiplicative kernel, multiplicative 1-D)
AUTHORS_MULTIPLIERS = {
    "cifar10_resnet20": (1.9195, 2.0133, 4.7483, 5.5663), "fmnist56_resnet20": (1.9195, 2.0133, 4.7483, 5.5663),
    "cifar100_resnet20": (1.1813, 2.0056, 1.3596, 5.4942),
    "california_mlp_64_32": (1.95, 2.0133, 5.0, 5.5663), "california_mlp_128_64_32": (1.95, 1.9702, 5.0, 5.1742),
    "california_mlp_128_128_64": (1.95, 1.9634, 5.0, 5.1146),
    "california_mlp_256_128_64_32": (1.95, 1.9651, 5.0, 5.1294),
    "california_mlp_128x5": (1.95, 1.9575, 5.0, 5.0638), "california_mlp_1024_256_64_16": (1.95, 1.9519, 5.0, 5.0158),
}


def full_model(cell: str):
    from optrepro.problems.models.keras_nets import KerasMLP, KerasResNet

    d = study("full")
    c = d.cell(cell)
    if c.problem in design.RESNETS:
        return KerasResNet(design.RESNETS[c.problem])  # FMNIST: grey replicated to 3 channels, as CIFAR's input
    return KerasMLP(8, [int(u) for u in c.problem_args["hidden"].split(",")])


@pytest.mark.parametrize("cell", CELLS)
def test_reference_mode_multipliers_equal_the_authors_at_full_model_size(cell):
    from optrepro.optim.caadam import caadam_factors

    model = full_model(cell)
    add_k, add_1, mul_k, mul_1 = AUTHORS_MULTIPLIERS[cell]
    for strategy, kernel, one_d in (("additive", add_k, add_1), ("multiplicative", mul_k, mul_1)):
        factors = caadam_factors(model, strategy, "reference")
        shapes = dict(model.named_parameters())
        assert {round(v, 4) for n, v in factors.items() if shapes[n].ndim > 1} == {kernel}
        assert {round(v, 4) for n, v in factors.items() if shapes[n].ndim == 1} == {one_d}
        # the planner's torch-free counts give the same two numbers
        d = study("full")
        c = d.cell(cell)
        counts = design.kernel_counts(c.problem, c.problem_args, "full")
        assert counts == [p.numel() for p in model.parameters() if p.ndim > 1]
        assert tuple(round(x, 4) for x in reference_multipliers(counts, strategy)) == (kernel, one_d)


# The paper's rule on ResNet-20 / CIFAR-10, layer by layer: each kernel's own count c against min 432,
# median 6912, max 36864 (gamma 0.95 additive, 5 multiplicative)
DESCRIBED_RESNET20 = {432: (1.95, 5.0), 2304: (1.6756, 3.1408), 4608: (1.3378, 1.7722), 9216: (0.9269, 1.1318),
                      18432: (0.6346, 1.8571), 36864: (0.05, 5.0), 512: (1.9383, 4.9016), 2048: (1.7131, 3.3470),
                      640: (1.9195, 4.7483)}


def test_described_mode_gives_each_layer_the_papers_factor_at_full_model_size():
    from optrepro.optim.caadam import caadam_factors
    from optrepro.problems.models.keras_nets import KerasResNet

    model = KerasResNet(10)
    add, mul = caadam_factors(model, "additive", "described"), caadam_factors(model, "multiplicative", "described")
    c_min, median, c_max = 432, (4608 + 9216) / 2, 36864
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        c = p.numel()
        sigma = (median - c) / (median - c_min) if c <= median else (c - median) / (c_max - median)
        by_hand = 1 + 0.95 * sigma if c <= median else 1 - 0.95 * sigma
        assert add[name] == pytest.approx(by_hand) and mul[name] == pytest.approx(5.0 ** sigma)
        assert (round(add[name], 4), round(mul[name], 4)) == DESCRIBED_RESNET20[c]
    assert {round(v, 4) for v in add.values()} != {1.9195, 2.0133}  # not the reference mode's two values


@pytest.mark.parametrize("scale", ["full", "smoke"])
def test_kernel_counts_are_the_problems_models(scale):
    """The planner's torch-free kernel counts equal the models the problems build (smoke: from the offline data)."""
    from optrepro import problems

    d = study(scale)
    for cell in d.cells:
        if scale == "full" and cell.problem == analysis.MLP_PROBLEM:
            model = full_model(cell.name)  # California's data is a download; the model only needs 8 inputs
        else:
            model = problems.get(cell.problem, scale, **cell.problem_args).build_model()
        assert design.kernel_counts(cell.problem, cell.problem_args, scale) == \
            [p.numel() for p in model.parameters() if p.ndim > 1], cell.name


def test_multiplier_table_is_computed_from_the_models():
    rows = analysis.multiplier_rows().set_index(["model", "mode"])
    assert rows.loc[("ResNet-20, 10 classes", "ref"), "Add kernel"] == "1.9195"
    assert rows.loc[("ResNet-20, 100 classes", "ref"), "Mul 1-D"] == "5.4942"
    assert rows.loc[("MLP [128x5]", "ref"), "Mul 1-D"] == "5.0638"
    assert rows.loc[("ResNet-20, 10 classes", "desc"), "Add kernel"] == "0.050-1.950"  # the rule's [1-g, 1+g]
    assert rows.loc[("MLP [64, 32]", "ref"), "Depth"] == "1.000-1.782"


# --- the sweep's selection --------------------------------------------------------------------------------------

def write_run(directory: Path, losses, monitor="valid/loss", best_epoch=None, status="ok", extra=None):
    directory.mkdir(parents=True, exist_ok=True)
    lines = [{"kind": "eval", "epoch": 0, "valid/loss": 0.01, monitor: 0.01, "test/loss": 9.0}]  # initial: ignored
    for epoch, value in enumerate(losses, start=1):
        lines.append({"kind": "eval", "epoch": epoch, "valid/loss": value, monitor: value,
                      "test/loss": 10 * value, "test/accuracy": 1 - value, **(extra or {})})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    controllers = [{"stopped_epoch": len(losses), "best_epoch": best_epoch if best_epoch else -1}]
    (directory / "result.json").write_text(json.dumps({"run_id": directory.name, "deterministic": {
        "status": status, "controllers": controllers}}))


def test_selection_takes_the_lowest_mean_validation_loss_and_never_a_point_with_a_lost_seed(tmp_path):
    d = study("smoke", str(tmp_path / "results"))
    cell = d.swept_cells()[0]
    specs = [s for s in design.tune_specs(d) if s["tags"]["cell"] == cell.name]
    rows = []
    for s in specs:
        rid = run_id(s)
        factor, arm = s["tags"]["lr_factor"], s["tags"]["arm"]
        # adam: lr x4 is better; add_ref: lr x4 lost its seed (NaN only) -> x1 wins; others: x1 better
        if arm == "adam":
            losses = [0.5, 0.3] if factor == 4.0 else [0.5, 0.4]
        elif arm == "add_ref" and factor == 4.0:
            losses = [float("nan")]
        else:
            losses = [0.5, 0.45] if factor == 4.0 else [0.5, 0.42]
        write_run(tmp_path / rid, losses)
        rows.append((rid, tmp_path / rid))
    chosen = tuning.select(d, cell.name, dict(rows))
    assert set(chosen) == set(SWEPT)
    assert chosen["adam"]["lr_factor"] == 4.0 and chosen["adam"]["hparams"]["lr"] == pytest.approx(4e-3)
    assert chosen["add_ref"]["lr_factor"] == 1.0
    assert chosen["add_ref"]["grid"][1]["mean_valid_loss"] is None
    assert chosen["mul_ref"]["lr_factor"] == 1.0
    paths = tuning.write_selections(d, cell.name, chosen)
    assert [p.name for p in paths] == [f"{a}.json" for a in SWEPT]
    with pytest.raises(ValueError, match="is in no given manifest"):
        tuning.select(d, cell.name, dict(rows[1:]))


# --- the runs frame ---------------------------------------------------------------------------------------------

def test_a_run_two_arms_planned_appears_under_both(tmp_path):
    d = study("smoke", str(tmp_path / "results"))
    cell = d.swept_cells()[0]
    # the winner of adam's sweep is the published lr: its re-run is the main arm's run of the same seed
    for arm in SWEPT:
        path = Path(design.selection_path(d, cell.name, arm))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"hparams": {"lr": 1e-3}, "lr_factor": 1.0}))
    main = next(s for s in design.main_specs(d) if s["tags"]["cell"] == cell.name and s["tags"]["arm"] == "adam"
                and s["tags"]["protocol"] == "redrawn")
    rid = run_id(main)
    runs = pd.DataFrame([{"run_id": rid, "status": "ok", "tags.arm": "adam", "tags.stage": "main", "dir": "x"}])
    frame = analysis.tag_by_plan(runs, d)
    mine = frame[frame["run_id"] == rid]
    assert sorted(mine["tags.stage"]) == ["main", "tuned"] and set(mine["tags.arm"]) == {"adam"}
    assert (frame[frame["run_id"] != rid]["status"] == "missing").all()


def test_run_statistics_restored_weights_at_best_valid_and_rmse(tmp_path):
    write_run(tmp_path / "r", [0.5, 0.3, 0.3000001, 0.35, 0.4], best_epoch=2)
    row = analysis.run_statistics(tmp_path / "r", "valid/loss")
    assert row["fill.at_best_valid.epoch"] == 2 and row["fill.at_best_valid.test.loss"] == pytest.approx(3.0)
    assert row["restored.epoch"] == 2  # the initial evaluation (0.01) is not a candidate
    assert analysis.epochs_to_target(row["monitor_curve"], 0.35) == 2.0
    assert math.isnan(analysis.epochs_to_target(row["monitor_curve"], 0.1))
    assert tuning.best_monitored(tmp_path / "r", "valid/loss") == 0.3


# --- the section's tables on a synthetic full-scale frame ----------------------------------------------------

def synthetic_frame(d: design.Design, value, seeds=range(6)) -> pd.DataFrame:
    """Rows as tag_by_plan + add_run_statistics give them: value(cell, arm, protocol, stage, seed) is the test
    metric at the restored weights (accuracy or RMSE by cell)."""
    rows = []
    for cell in d.cells:
        metric = analysis.metric_of(cell.problem)
        for arm in cell.arms:
            for protocol in design.PROTOCOLS:
                for stage in ("main", "tuned"):
                    if stage == "tuned" and (protocol != "redrawn" or arm not in d.tuned_arms(cell)):
                        continue
                    for s in seeds:
                        v = value(cell.name, arm, protocol, stage, s)
                        rows.append({"run_id": f"{cell.name}-{arm}-{protocol}-{stage}-{s}", "status": "ok",
                                     "scale": "full", "seed": f"{s}-{s}-{s}", "tags.cell": cell.name,
                                     "tags.arm": arm, "tags.protocol": protocol, "tags.stage": stage,
                                     f"at_best_valid.test.{metric}": v, "at_best_valid.epoch": 10 + s,
                                     "restored.epoch": 10 + s + (s == 0), analysis.EPOCHS: 25.0 + s,
                                     "monitor_curve": tuple((e, 1.0 / e) for e in range(1, 30)),
                                     "epoch_time_s": 2.0})
    return pd.DataFrame(rows)


def test_controls_read_a_learning_rate_effect_as_a_tie_and_a_real_gain_as_caadam_better():
    d = study("full")
    noise = [0.0004, -0.0003, 0.0002, -0.0001, 0.0003, -0.0005]

    def value(cell, arm, protocol, stage, s):
        base = 0.80 + 0.01 * s  # seed-to-seed spread shared by every arm (paired design)
        return base + {"add_ref": 0.02, "adam_lr_add": 0.02 + noise[s] * 0.1, "mul_ref": 0.03,
                       "adam_lr_mul": 0.01 + noise[s]}.get(arm, noise[s])

    frame = synthetic_frame(d, value)
    rows = analysis.control_rows(d, frame, {"accuracy": 0.0025, "rmse": 0.0015}).set_index(["cell", "strategy"])
    assert rows.loc[("cifar10_resnet20", "add"), "reading"] == "tie"
    assert rows.loc[("cifar10_resnet20", "mul"), "reading"] == "CaAdam better"
    assert rows.loc[("cifar10_resnet20", "add"), "S kernel / 1-D"] == "1.9195 / 2.0133"
    assert rows.loc[("cifar10_resnet20", "add"), "CaAdam - Adam"].startswith("+2.0")  # percentage points
    # RMSE: lower is better, so CaAdam 0.01 *above* the control is the control's win
    assert rows.loc[("california_mlp_64_32", "mul"), "reading"] == "control better"


def test_published_convergence_sweep_and_register_tables_at_full_scale(tmp_path):
    from optrepro.report.published import load_published_file

    d = study("full", str(tmp_path / "results"))
    frame = synthetic_frame(d, lambda cell, arm, protocol, stage, s: 0.8 + 0.01 * s + (0.01 if stage == "tuned" else 0))
    published = load_published_file(ROOT / "paper" / "published" / "caadam.csv")
    results = analysis.published_rows(d, frame, published, "full", "accuracy").set_index(["cell", "arm"])
    assert results.loc[("cifar10_resnet20", "Adam"), "published"] == "79.81 ± 0.80"
    assert results.loc[("cifar10_resnet20", "Adam"), "redrawn"] == "82.50 ± 1.87 (6)"
    assert results.loc[("cifar10_resnet20", "Add (desc)"), "published"] == "--"
    assert results.loc[("cifar10_resnet20", "Adam"), "runs"] == "12 ok"  # both protocols
    smoke = analysis.published_rows(d, frame, published, "smoke", "accuracy")
    assert set(smoke["redrawn"]) == {"--"}  # never a smoke number beside a published one
    conv = analysis.convergence_rows(d, frame, published, "full").set_index(["cell", "arm"])
    assert conv.loc[("cifar10_resnet20", "Adam"), "published"] == "28.6 ± 1.9"
    assert conv.loc[("cifar10_resnet20", "Adam"), "epochs"] == "27.5 ± 1.9 (6)"
    # every curve falls as 1/epoch to epoch 29: Adam's median best (1/29) is first reached at epoch 29
    assert conv.loc[("cifar10_resnet20", "Adam"), "to target"] == "29 (6/6)"
    assert conv.loc[("cifar10_resnet20", "Adam"), "seconds"] == "58.0"  # 29 epochs x 2 s
    for cell in d.swept_cells():
        for arm in d.tuned_arms(cell):
            path = Path(design.selection_path(d, cell.name, arm))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"hparams": {"lr": 2e-3}, "lr_factor": 2.0, "grid": []}))
    sweep = analysis.sweep_rows(d, frame, "full").set_index(["cell", "arm"])
    assert sweep.loc[("cifar10_resnet20", "Mul (ref)"), "lr x"] == "2"
    assert sweep.loc[("cifar10_resnet20", "Mul (ref)"), "tuned - untuned"].startswith("+1.00 [+1.00, +1.00]")
    effects = analysis.register_effects(d, frame)
    # seed 0's restored epoch is one later in every main run: 9 cells x 12 arms x 2 protocols of 1296
    assert effects["caadam-val-loss-monitor"] == ("the restored epoch differs from the lowest-valid/loss epoch in "
                                                  "216 of 1296 runs")
    assert effects["caadam-keras-name-collision"].endswith("described better in 0, worse in 0, no difference "
                                                           "shown in 27 (95 % intervals)")
