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
    summary, caption="Digits MLP: final metrics, mean ± sd over seeds (runs: how many; diverged: how many of "
    "them diverged).", label="tab:core-digits", scale=scale), runs=runs)
for arm, mean in by_arm["final.test.accuracy"].mean().items():
    section.number(f"{arm}-test-acc", mean, "{:.1%}")
section.number("runs", len(runs), "{:d}")
summary

# %% [markdown]
# ## Learning curves: test accuracy per evaluation, mean over seeds with the min-max band

# %%
figures.curves(runs, "test/accuracy", section.path("digits_curves.pdf"), scale, ylabel="test accuracy (%)",
               factor=100, xlabel="epoch")

# %% [markdown]
# ## Verdicts of the registered claims (paper/claims/core.yaml), the register, verdicts.json

# %%
verdict_list = section.finish()
[v.as_row() for v in verdict_list]
