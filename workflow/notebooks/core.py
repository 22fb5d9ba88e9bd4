# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Pipeline check: digits MLP, Adam vs SGD
#
# Run by Snakemake through `script:` (the generic rule `paper_report`); the `snakemake` object names the inputs
# (the current plan's batch manifests of this paper) and the output directory, paper/generated/<scale>/core/.
# To explore interactively: `jupytext --to notebook workflow/notebooks/core.py`.

# %%
from pathlib import Path

from optrepro.io import read_jsonl
from optrepro.report import figures, tables
from optrepro.report.section import Section

section = Section.from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
scale, runs = section.scale, section.runs

# %% [markdown]
# ## Final metrics per arm (mean and sd over seeds; every run counted, diverged ones included)

# %%
columns = {"final.test.accuracy": "test accuracy", "final.test.loss": "test loss",
           "final.valid.accuracy": "valid accuracy"}
by_arm = runs.groupby("tags.arm")
summary = by_arm.size().rename("runs").to_frame()
summary["diverged"] = by_arm["status"].apply(lambda s: int((s == "diverged").sum()))
for column, label in columns.items():
    mean, sd = by_arm[column].mean(), by_arm[column].std()
    summary[label] = [f"{m:.3f} ± {d:.3f}" for m, d in zip(mean, sd)]
summary = summary.reset_index().rename(columns={"tags.arm": "optimizer"})
section.write_table("digits.tex", tables.latex_table(
    summary, caption="Digits MLP: final metrics, mean ± sd over seeds.", label="tab:core-digits", scale=scale))
summary

# %% [markdown]
# ## Learning curves: test accuracy per evaluation, mean over seeds with the min-max band

# %%
plt = figures.pyplot()
fig, ax = figures.new_figure(4.5, 2.6)
for arm, group in runs.groupby("tags.arm"):
    curves = []
    for run_dir in group["dir"]:
        records = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r["kind"] == "eval"]
        curves.append([(r["epoch"], r["test/accuracy"]) for r in records])
    epochs = [e for e, _ in curves[0]]
    values = [[v for _, v in c] for c in curves]
    mean = [sum(col) / len(col) for col in zip(*values)]
    ax.plot(epochs, mean, label=arm)
    ax.fill_between(epochs, [min(col) for col in zip(*values)], [max(col) for col in zip(*values)], alpha=0.2)
ax.set_xlabel("epoch")
ax.set_ylabel("test accuracy")
ax.legend(frameon=False)
figures.save_figure(fig, section.path("digits_curves.pdf"), scale)

# %% [markdown]
# ## Verdicts of the registered claims (paper/claims/core.yaml), the register, verdicts.json

# %%
verdict_list = section.finish()
[v.as_row() for v in verdict_list]
