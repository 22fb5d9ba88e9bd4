# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Descending through a Crowded Valley
#
# Run by the generic `paper_report` rule. The runs are the study's three stages (one-shot, tuning, re-runs of
# each budget's winner); `optrepro.report.valley` scores them as DeepOBS does (final test metric; a diverged
# run counts with its epoch-0 value) and groups them into settings: an optimizer one-shot, or tuned with a budget.

# %%
import numpy as np
import pandas as pd

from optrepro.planners.crowded_valley import ONESHOT, scored_by
from optrepro.report import figures, tables, valley
from optrepro.report.section import Section

section = Section.from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
scale = section.scale
frame = valley.valley_frame(section.runs)
perf = valley.performance(frame)
problems = sorted(set(frame["problem"]), key=lambda p: (p != "quadratic_deep", p))  # the real CPU slice first
section.number("runs", len(section.runs), "{:,d}")
section.number("settings", len(perf), "{:,d}")
section.number("problems", len(problems), "{:d}")
diverged = int((section.runs["status"] == "diverged").sum()) if len(section.runs) else 0
section.number("diverged", diverged, "{:,d}")

# %% [markdown]
# ## Performance per problem, budget and schedule (mean and sd over seeds; the independent seeds beside)

# %%
def fmt(mean, sd, points):
    factor = 100 if points else 1
    digits = 2 if points else 3
    return DASH if pd.isna(mean) else (f"{mean * factor:.{digits}f}" + ("" if pd.isna(sd) else
                                                                        f" ± {sd * factor:.{digits}f}"))


DASH = tables.DASH
parts = []
for problem in problems:
    metric, higher = scored_by(problem)
    cell = perf[perf["problem"] == problem]
    rows = []
    for (schedule, budget), group in cell.groupby(["schedule", "budget"], sort=False):
        for _, r in group.sort_values("mean", ascending=not higher).iterrows():
            rows.append({"schedule": schedule, "budget": budget, "optimizer": r["optimizer"],
                         f"test {metric}": fmt(r["mean"], r["sd"], higher), "n": int(r["n"]),
                         "independent seeds": fmt(r["mean_independent"], np.nan, higher)
                         + f" (n={int(r['n_independent'])})", "diverged": int(r["diverged"])})
    unit = " (%)" if higher else ""
    name = f"perf_{problem}.tex"
    section.write_table(name, tables.latex_table(
        pd.DataFrame(rows), caption=f"{problem}: final test {metric}{unit} per schedule, budget and optimizer, "
        "best first; mean ± sd over seeds (n); independent seeds: the re-runs alone, without the seed the winner "
        "was selected on; diverged: runs scored at their epoch-0 value, as DeepOBS pads them.",
        label=f"tab:valley-perf-{problem}", scale=scale, font_size="footnotesize"),
        runs=section.runs[section.runs["problem"] == problem])
    parts.append(f"\\gentable{{{name}}}")

# %% [markdown]
# ## One-shot vs tuned: the study's heat map, and the improvement over one-shot Adam

# %%
for problem in problems:
    matrix = valley.switch_gain(perf, problem, "none", "small")
    if matrix.empty:
        continue
    metric, higher = scored_by(problem)
    fig, ax = figures.new_figure(5.6, 4.8)
    data = matrix.to_numpy() * (100 if higher else 1)
    limit = np.nanmax(np.abs(data)) or 1.0
    image = ax.imshow(data, cmap="RdBu", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=90)
    ax.set_yticks(range(len(matrix.index)), matrix.index)
    ax.set_xlabel("tuned (small budget), constant schedule")
    ax.set_ylabel("one-shot")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"gain in test {metric}" + (" (pp)" if higher else ""))
    figures.save_figure(fig, section.path(f"heatmap_{problem}.pdf"), scale)
    parts.append(f"\\paperfigure{{heatmap_{problem}.pdf}}{{{tables.latex_escape(problem)}: the gain from switching from the row "
                 "optimizer at its one-shot defaults to the column optimizer tuned with the small budget "
                 "(constant schedule); positive is better. The diagonal is the gain from tuning one optimizer.}")

BUDGET_COLOURS = {ONESHOT: "0.6", "small": "#1f77b4", "medium": "#ff7f0e", "large": "#2ca02c"}
for problem in problems:
    gains = valley.improvement_over_adam(perf, problem)
    gains = gains[gains["schedule"] == "none"]
    if gains["optimizer"].nunique() < 2 or gains["improvement"].isna().all():
        continue  # one optimizer: nothing to compare with Adam
    metric, higher = scored_by(problem)
    budgets = list(dict.fromkeys(gains["budget"]))
    order = list(gains[gains["budget"] == ONESHOT].sort_values("optimizer")["optimizer"]) or sorted(
        set(gains["optimizer"]))
    fig, ax = figures.new_figure(5.8, 2.8)
    width = 0.8 / len(budgets)
    for k, budget in enumerate(budgets):
        values = gains[gains["budget"] == budget].set_index("optimizer")["improvement"].reindex(order)
        ax.bar(np.arange(len(order)) + k * width, values * (100 if higher else 1), width=width, label=budget,
               color=BUDGET_COLOURS.get(budget, "0.5"))
    ax.axhline(0, color="0.3", linewidth=0.6)
    ax.set_xticks(np.arange(len(order)) + 0.4 - width / 2, order, rotation=90)
    ax.set_ylabel("vs one-shot Adam " + ("(pp)" if higher else "(relative)"))
    ax.legend(frameon=False, ncol=len(budgets))
    figures.save_figure(fig, section.path(f"vs_adam_{problem}.pdf"), scale)
    parts.append(f"\\paperfigure{{vs_adam_{problem}.pdf}}{{{tables.latex_escape(problem)}: each optimizer's mean final test {metric} "
                 "relative to one-shot Adam, per budget (constant schedule); positive is better"
                 + (" (percentage points)." if higher else " (relative loss reduction).") + "}")

# %% [markdown]
# ## Fidelity: each published raw run re-run on its own Hessian draw, seed and data order

# %%
from optrepro import fidelity  # noqa: E402
from optrepro.data import published_raw  # noqa: E402
from optrepro.plan import run_id  # noqa: E402

# The register entry behind each optimizer's reading, named in the table when a run is off by more than 2 %.
READINGS = {"AdaBeliefOptimizer": "cv-adabelief-rectify", "LookaheadOptimizerRAdam": "cv-lookahead-tf1-semantics",
            "LookaheadOptimizerMBGDMomentum": "cv-lookahead-tf1-semantics",
            "MomentumOptimizer": "deepobs-tf1-epoch-order", "NAGOptimizer": "deepobs-tf1-epoch-order"}
published_runs = published_raw.load_runs(problem="quadratic_deep")
BUDGET_FOLDERS = {"oneshot": ONESHOT, "small_budget": "small", "medium_budget": "medium", "large_budget": "large"}
dirs = dict(zip(section.runs["run_id"], section.runs["dir"])) if len(section.runs) else {}
compared = []
for run in published_runs:
    rid = run_id(fidelity.published_spec(run, scale="full"))
    if rid in dirs:  # a run's id is its content: the grid's own runs count when they are the same run
        compared.append({**fidelity.compare_run(dirs[rid], run), "run_id": rid})
fid = pd.DataFrame(compared)
section.number("fidelity-runs", len(fid), "{:d}")
if len(fid):
    rows = []
    for (optimizer, budget, schedule), g in fid.groupby(["optimizer", "budget", "schedule"]):
        worst = g["max_rel_dev"].max()
        ours_name = fidelity.TF_OPTIMIZERS[optimizer].name
        rows.append({"optimizer": ours_name, "budget": BUDGET_FOLDERS[budget], "schedule": schedule, "runs": len(g),
                     "seeds": tables.int_ranges(g["seed"]),
                     "max. deviation": f"{100 * worst:.1f} %",
                     "final ratio": f"{g['final_ratio'].min():.3f}--{g['final_ratio'].max():.3f}",
                     "off": "yes" if worst > 0.02 else "--",
                     "reading": READINGS.get(optimizer, "as registered")})
    fid_table = pd.DataFrame(rows)
    off = fid_table[fid_table["off"] != "--"]
    section.number("fidelity-off", len(off), "{:d}")
    section.number("fidelity-worst", fid["max_rel_dev"].max(), "{:.1%}")
    # The register entries go below the table: as a column their names left the other columns no width.
    readings = "; ".join(f"{name}: {reading}" for name, reading in
                         sorted(set(zip(off["optimizer"], off["reading"]))))
    note = ("\\noindent Register entries of the settings off by more than 2\\,\\%: "
            + tables.latex_escape(readings) + ".\n" if readings else "")
    section.write_table("fidelity.tex", tables.latex_table(
        fid_table.drop(columns="reading"), caption="Fidelity on quadratic_deep: every published raw run we hold "
        "(the study's optimizer folders by our registry names), re-run on its own Hessian "
        "draw, seed, schedule and data order. Max. deviation: the largest per-epoch relative difference of test "
        "loss from the published curve; final ratio: ours / published at the last epoch (range over seeds); "
        "off: more than 2 % off somewhere (its reading in the register is named below the table).",
        label="tab:valley-fidelity", scale=scale, font_size="footnotesize", wrap=["seeds"]) + note,
        runs=section.runs[section.runs["run_id"].isin(fid["run_id"])])
else:
    section.number("fidelity-off", 0, "{:d}")
    section.number("fidelity-worst", float("nan"))
    section.write_table("fidelity.tex", "\\emph{No published run was re-run at this scale.}\n")

# %% [markdown]
# ## Rankings against the published ones (Kendall's tau), per cell with published raw results

# %%
published_means = {}
for run in published_runs:
    name, _ = fidelity.our_optimizer(run.optimizer, run.hyperparams)
    final = run.curve("test_losses")[-1]
    if final is not None:
        published_means.setdefault((BUDGET_FOLDERS[run.budget], run.schedule), {}).setdefault(name, []).append(final)
tau_rows = []
for (budget, schedule), theirs in sorted(published_means.items()):
    cell = perf[(perf["problem"] == "quadratic_deep") & (perf["budget"] == budget) & (perf["schedule"] == schedule)]
    ours = dict(zip(cell["optimizer"], cell["mean"]))
    tau, n = valley.kendall_tau(ours, {k: float(np.mean(v)) for k, v in theirs.items()})
    if n >= 3:
        tau_rows.append({"budget": budget, "schedule": schedule, "optimizers": n, "Kendall tau": tau})
taus = pd.DataFrame(tau_rows, columns=["budget", "schedule", "optimizers", "Kendall tau"])
section.number("tau-cells", len(taus), "{:d}")
section.number("tau-oneshot", taus.loc[(taus["budget"] == ONESHOT) & (taus["schedule"] == "none"), "Kendall tau"]
               .iloc[0] if ((taus["budget"] == ONESHOT) & (taus["schedule"] == "none")).any() else float("nan"),
               "{:.2f}")
section.write_table("tau.tex", tables.latex_table(
    taus, caption="quadratic_deep: Kendall's tau between our ranking of the optimizers (mean final test loss) and "
    "the published one (mean over the published raw runs we hold), per cell with at least 3 optimizers in both.",
    label="tab:valley-tau", scale=scale, precision=2) if len(taus) else
    "\\emph{No cell with published raw results for three or more of our optimizers at this scale.}\n")

section.write_table("results.tex", "\n".join(parts) + "\n")

# %% [markdown]
# ## Registered claims, judged on the settings (arms are "<optimizer>:<budget>") of the problems that ran

# %%
from dataclasses import replace  # noqa: E402

from optrepro.report.claims import ClaimSet  # noqa: E402
from optrepro.report.verdicts import judge_all  # noqa: E402

claim_runs = frame.rename(columns={"value": "final.test.value"}).assign(
    scale=scale, **{"tags.schedule": frame["schedule"]})
# A claim is judged on the cells (problems) that ran at this scale; a claim none of whose problems ran keeps its
# cells and reads "not run". The section lists the problems left out.
ran = set(problems)
section.claims = ClaimSet(families=section.claims.families, claims=tuple(
    replace(c, cells=tuple(p for p in c.cells if p in ran)) if ran & set(c.cells) else c for c in section.claims))
not_run = sorted({p for c in section.claims for p in c.cells} - ran)
section.number("problems-not-run", len(not_run), "{:d}")
verdicts = judge_all(section.claims, claim_runs, section.published, scale)
section.finish(verdicts)
