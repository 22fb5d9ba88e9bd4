# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # CaAdam: connection-aware Adam (Genet and Inzirillo, 2024)
#
# Run by Snakemake through `script:` (the generic rule `paper_report`); the `snakemake` object names this paper's
# batch manifests of the current plan and the output directory paper/generated/<scale>/caadam/. The study's design
# (cells, arms, protocols, sweep) is config/papers/caadam.yaml through optrepro.caadam.design; every computation
# below is a function of optrepro.caadam.analysis, tested in tests/test_caadam_study.py.

# %%
from pathlib import Path

from optrepro.caadam import analysis, design
from optrepro.report import figures, tables
from optrepro.report.section import Section
from optrepro.workflow import paper_config

section = Section.from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
scale = section.scale
study = design.design({**paper_config(Path("config"), "caadam", scale), "paper": "caadam"}, scale,
                      snakemake.config)  # noqa: F821
unique_runs = section.runs  # one row per trained run (for the compute statement)
runs = analysis.add_run_statistics(analysis.tag_by_plan(unique_runs, study), study)  # one row per planned run
smoke = scale == "smoke"
claims = section.claims
DELTA = {"accuracy": claims.get("caadam-add-accuracy").delta_star, "rmse": claims.get("caadam-add-rmse").delta_star}

# the protocol as the full scale runs it (the prose and the protocol table describe it at every scale)
full = design.design({**paper_config(Path("config"), "caadam", "full"), "paper": "caadam"}, "full",
                     snakemake.config)  # noqa: F821
section.number("runs", len(unique_runs), "{:,d}")
section.number("planned", len(runs), "{:,d}")
section.number("missing", int((runs["status"] == "missing").sum()), "{:d}")
section.number("cells", len(full.cells), "{:d}")
section.number("arms", len(full.arms), "{:d}")
section.number("seeds", len(full.seeds), "{:d}")
section.number("sweep-seeds", len(full.sweep_seeds), "{:d}")
section.number("sweep-points", len(full.sweep_factors), "{:d}")
section.number("full-runs", len(design.main_specs(full)) + len(design.tune_specs(full)) + len(design.tuned_specs(full)),
               "{:,d}")
section.write_table("scale_summary.tex", tables.latex_escape(analysis.scale_summary(study)) + "\n")

# %% [markdown]
# ## The protocol, field by field, with where each value comes from

# %%
import pandas as pd  # noqa: E402

NB = "notebooks"
protocol = pd.DataFrame([
    ("optimizers", "Keras 3.5 Adam, AdamW, Adamax, Nadam; CaAdam additive, multiplicative, depth; lr 1e-3, "
     "Keras defaults (eps 1e-7)", "keras_adam, keras_adamw (wd 0.004), keras_adamax, keras_nadam and "
     "caadam_* with Keras's update, lr 1e-3", NB + "; Keras 3.5 optimizers"),
    ("CaAdam strength", "code defaults 0.95 / 5.0 / 1.0 (strategies built without arguments)", "the same",
     NB + "; caadam/*_scaling.py"),
    ("CaAdam factors", "counts keyed by the short variable name under Keras 3: every kernel gets the last "
     "kernel's count, 1-D tensors c = 0", "reference mode (as run) and described mode (each tensor's own count, "
     "the paper's rule) as separate arms", "caadam/caadam.py; Keras 3.5 variables.py"),
    ("models", "ResNet-20 (conv biases, he_normal, L2 1e-4 on the 3x3 kernels, BN 0.99/1e-3); MLPs Dense-ReLU "
     "with 6 widths", "ports with Keras's initializers and variable order", NB),
    ("data", "CIFAR /255 minus the pixel mean, no augmentation; Fashion-MNIST zoomed to 56x56, 3 channels; "
     "California standardized X and y", "the same", NB),
    ("validation", "last 20 % of the training arrays (validation_split 0.2)", "the same", "Keras fit"),
    ("batch, epochs", "64 (California 128); at most 1000 epochs", "the same", NB),
    ("EarlyStopping", "val_loss, min_delta 1e-5, patience 15 (California 25, start_from_epoch 12), "
     "restore_best_weights", "the same, counted as Keras counts; monitor valid/reg_loss (Keras's val_loss "
     "includes the L2 penalty)", NB + "; Keras 3 callbacks"),
    ("ReduceLROnPlateau", "factor 0.25, patience 6 (California 8), min_delta 1e-5, min_lr 2.5e-5",
     "the same; min_lr as 1/40 of each arm's base lr", NB + "; our reading (register)"),
    ("runs", "30 per optimizer and cell, all from one initialization per cell",
     f"protocol as-run: {len(full.seeds)} per arm and cell from one initialization; protocol redrawn: "
     f"{len(full.seeds)} seeds drawing initialization and batch order (the verdicts)", NB + "; our design"),
    ("statistic", "test metric of the restored weights; epochs = len(history); Student t vs Adam, no correction",
     "test metric at the lowest validation loss (at_best_valid); the same epochs; paired t on shared seeds, Holm "
     "within each family", NB + "; docs/replication.md"),
    ("controls", "none", "Adam at lr x the kernel factor of reference-mode additive and multiplicative", "our design"),
    ("tuning", "none (every optimizer at 1e-3)",
     f"lr x {', '.join(f'{f:g}' for f in full.sweep_factors)}, {len(full.sweep_seeds)} seeds per point, "
     f"lowest mean validation loss, winner re-run with {len(full.seeds)} seeds", "docs/replication.md"),
], columns=["field", "the notebooks", "ours", "source"])
section.write_table("protocol.tex", tables.latex_table(
    protocol, caption="CaAdam protocol: the authors' notebooks beside ours (at full scale; the smoke scale keeps "
    "the code path on tiny data), with the source of each value. notebooks: remigenet/CaAdam@ce14f7e "
    "results/Result_on_{Cifar,MNIST,California}.ipynb.",
    label="tab:caadam-protocol", scale=scale, font_size="footnotesize",
    wrap=["field", "the notebooks", "ours", "source"]))

# %% [markdown]
# ## Results beside the published values (test metric of the restored weights, mean ± sd (n))

# %%
tiers = sorted(set(section.published["tier"])) if len(section.published) else []
tier_text = f"all of tier {tiers[0]}" if len(tiers) == 1 else f"tiers {', '.join(tiers)}"
for group, what in (("accuracy", "test accuracy (%)"), ("rmse", "test RMSE (standardized target)")):
    frame = analysis.published_rows(study, runs, section.published, scale, group)
    shown = runs[runs["tags.stage"] == "main"]
    section.write_table(f"results_{group}.tex", tables.latex_table(
        frame, caption=f"CaAdam: {what} of the weights EarlyStopping restores (at the lowest validation loss), "
        "every arm: published (the notebooks: 30 runs from one initialization per cell, mean ± sd; source key: "
        f"Appendix \"Sources of published numbers\", {tier_text}) beside ours in both protocols, "
        "mean ± sd (runs), and our runs by status (both protocols). At smoke scale our values stay empty.",
        label=f"tab:caadam-results-{group}", scale=scale, font_size="footnotesize",
        wrap=["cell", "runs"]), runs=shown)

# %% [markdown]
# ## Convergence three ways: the notebooks' epoch count, epochs to the best evaluation, time to a target

# %%
convergence = analysis.convergence_rows(study, runs, section.published, scale)
section.write_table("convergence.tex", tables.latex_table(
    convergence, caption="CaAdam convergence, protocol redrawn: epochs run (len(history), the notebooks' count, "
    "EarlyStopping's patience window included) beside the published count; epochs to the evaluation with the "
    "lowest validation loss; epochs to reach Adam's median best validation loss (median over the runs reaching "
    "it, runs reaching it / runs) and the same in seconds (epochs x the run's mean time per epoch, evaluation "
    "included; times from batched runs on shared machines describe, they are not timing runs).",
    label="tab:caadam-convergence", scale=scale, font_size="footnotesize"),
    runs=runs[(runs["tags.stage"] == "main") & (runs["tags.protocol"] == "redrawn")])

# %% [markdown]
# ## What the LR-matched controls and the tuned sweep show

# %%
controls = analysis.control_rows(study, runs, DELTA)
section.write_table("controls.tex", tables.latex_table(
    controls, caption="Reference-mode CaAdam against Adam and against Adam at lr x S (S: the kernel factor "
    "reference mode gives the model; 1-D tensors get the second factor), protocol redrawn: paired effects, "
    "CaAdam minus the other arm, with 95 % intervals (accuracy in percentage points, RMSE in standardized units; "
    "lower RMSE is better). Reading: tie = the CaAdam-minus-control interval lies within ±Δ* (TOST, Δ* of the "
    "accuracy and RMSE claims); CaAdam or control better = the 95 % interval excludes 0.",
    label="tab:caadam-controls", scale=scale, font_size="footnotesize",
    wrap=["CaAdam - Adam", "CaAdam - control"]), runs=runs[runs["tags.stage"] == "main"])
readings = controls["reading"][controls["reading"] != tables.DASH]
if smoke or readings.empty:
    controls_text = ("At smoke scale each arm has one run per cell: no interval, no reading. The sentence below "
                     "counts the readings of the table once the full-scale runs exist.")
else:
    counts = readings.value_counts().to_dict()
    controls_text = (f"Of the {len(readings)} cell and strategy pairs with runs, the LR-matched control ties "
                     f"CaAdam in {counts.get('tie', 0)}, is better in {counts.get('control better', 0)}, is worse "
                     f"in {counts.get('CaAdam better', 0)} and is inconclusive in {counts.get('inconclusive', 0)}.")
controls_text += (" Where the control ties or beats CaAdam, the published gain of that strategy is a "
                  "learning-rate effect: reference mode is Adam at a larger learning rate.")
section.write_table("controls_summary.tex", tables.latex_escape(controls_text) + "\n")

sweep = analysis.sweep_rows(study, runs, scale)
section.write_table("sweep.tex", tables.latex_table(
    sweep, caption="The learning-rate sweep: each swept arm's winning lr (x its untuned lr; lowest mean "
    "validation loss over the sweep's seeds), the winner re-run on the comparison's seeds (mean ± sd (runs)), "
    "and its paired effects against tuned Adam and against itself untuned, with 95 % intervals.",
    label="tab:caadam-sweep", scale=scale, font_size="footnotesize",
    wrap=["tuned", "tuned - tuned Adam", "tuned - untuned"]), runs=runs[runs["tags.stage"].isin(["tune", "tuned"])])

# sweep figure: mean validation loss against the lr factor, one panel per swept cell
chosen = analysis.selections(study)
swept = study.swept_cells()
if swept:
    import math  # noqa: E402

    columns = min(3, len(swept))
    rows_n = math.ceil(len(swept) / columns)
    fig, axes = figures.new_figure(width=2.15 * columns, height=1.9 * rows_n + 0.5, nrows=rows_n, ncols=columns,
                                   squeeze=False)
    for ax, cell in zip(axes.flat, swept):
        for arm in study.tuned_arms(cell):
            record = chosen.get((cell.name, arm))
            if record is None:
                continue
            points = [(g["lr_factor"], g["mean_valid_loss"]) for g in record["grid"] if g["mean_valid_loss"] is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=2.5, linewidth=1, color=figures.colour(arm),
                        label=study.arms[arm].label)
        ax.set_xscale("log", base=2)
        ax.set_title(cell.name, fontsize=7)
        ax.set_xlabel("lr / untuned lr")
        ax.set_ylabel("mean valid. loss")
    for ax in list(axes.flat)[len(swept):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    figures.save_figure(fig, section.path("sweep.pdf"), scale)

# %% [markdown]
# ## The learning-rate multipliers per strategy and mode, computed from the full-size models

# %%
multipliers = analysis.multiplier_rows()
section.write_table("multipliers.tex", tables.latex_table(
    multipliers, caption="CaAdam's learning-rate multipliers on the full-size models, computed from the models "
    "(optrepro.optim.caadam.caadam_factors), for the kernels (conv and dense weights) and the 1-D tensors (biases, "
    "BatchNorm). ref: reference mode, what the published runs applied: one factor for every kernel and one for "
    "every 1-D tensor. desc: described mode, the paper's per-layer rule (a range over the layers; a 1-D tensor "
    "takes its layer's factor, BatchNorm 1). Depth: the range from the last tensor to the first. Add: additive "
    "(gamma 0.95), Mul: multiplicative (gamma 5), Depth (gamma 1).",
    label="tab:caadam-multipliers", scale=scale, font_size="footnotesize", wrap=["model"]))
from optrepro.problems.models.keras_nets import KerasResNet  # noqa: E402

layers = analysis.described_layer_rows(KerasResNet(10))
section.write_table("described_layers.tex", tables.latex_table(
    layers, caption="Described mode on ResNet-20 (10 classes), per kernel size: the paper's rule gives each layer "
    "its own factor from its connection count c (min 432, median 6912, max 36864); the largest convolutions get "
    "0.05 of the learning rate under the additive rule.", label="tab:caadam-described", scale=scale,
    font_size="footnotesize", precision=4))
ref = multipliers[multipliers["mode"] == "ref"].set_index("model")
section.number("add-ref-c10", float(ref.loc["ResNet-20, 10 classes", "Add kernel"]), "{:.4f}")
section.number("mul-ref-c10", float(ref.loc["ResNet-20, 10 classes", "Mul kernel"]), "{:.4f}")
section.number("add-ref-c100", float(ref.loc["ResNet-20, 100 classes", "Add kernel"]), "{:.4f}")
section.number("mul-ref-c100", float(ref.loc["ResNet-20, 100 classes", "Mul kernel"]), "{:.4f}")

# %% [markdown]
# ## Figures: training loss per epoch (as the authors' Loss_Graphs notebook), and the headline claim

# %%
loss_cell = next((c for c in study.cells if c.name == "cifar100_resnet20"), study.cells[0])
shown_arms = [a for a in ("adam", "mul_ref", "adam_lr_mul", "mul_desc", "add_ref", "depth_ref") if a in loss_cell.arms][:5]
curve_runs = runs[(runs["tags.cell"] == loss_cell.name) & (runs["tags.stage"] == "main")
                  & (runs["tags.protocol"] == "redrawn") & runs["tags.arm"].isin(shown_arms)
                  & runs["status"].isin(["ok", "diverged"])]
figures.curves(curve_runs.assign(label=curve_runs["tags.arm"].map(lambda a: study.arms[a].label)), "train/loss",
               section.path("loss_curves.pdf"), scale, hue="label", ylabel="training loss",
               title=f"{loss_cell.name}, protocol redrawn", width=4.6, height=2.7,
               hue_order=[study.arms[a].label for a in shown_arms])
headline = claims.get("caadam-mul-cifar100-up-to")
# published means as diamonds at full scale only: a smoke run is never drawn beside a published number
figures.arm_comparison(runs, headline, scale, section.path("headline.pdf"), None if smoke else section.published,
                       title="Mul (ref) vs Adam, CIFAR-100")

# %% [markdown]
# ## Ambiguity register effects, verdicts of the registered claims (paper/claims/caadam.yaml), verdicts.json

# %%
if smoke:
    effect = "smoke scale: the ablation ran, no effect is read"
    section.ambiguity_effects.update({"caadam-keras-name-collision": effect, "caadam-shared-initialization": effect,
                                      "caadam-val-loss-monitor": effect})
else:
    section.ambiguity_effects.update(analysis.register_effects(study, runs))
section.runs = runs  # the claims are judged on the plan's arms (a shared run counts for every arm that planned it)
verdict_list = section.judge()
section.runs = unique_runs  # the compute statement counts each trained run once
section.finish(verdict_list)
[v.as_row() for v in verdict_list]
