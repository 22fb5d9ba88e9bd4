# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # NOS: neural optimizer search
#
# Run by the generic `paper_report` rule. Inputs: the plan's NOS runs (the search's evaluations and the
# evaluation's tuning runs and re-runs) and, through `PAPER_REPORT_INPUTS["nos"]` (workflow/rules/nos.smk), the
# summary.json of every search (optrepro.nos.stages.summarize). `optrepro.report.nos` computes; this draws.

# %%
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from optrepro.nos import evaluation, space
from optrepro.report import figures, tables
from optrepro.report import nos as nosreport
from optrepro.report.section import Section

section = Section.from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
scale = section.scale
summaries = {s["search"]: s for s in (json.loads(Path(p).read_text()) for p in snakemake.input.extra)}  # noqa: F821
main = summaries["main"]
settings = main["settings"]
for key in ("pool", "particles", "steps", "mutants", "redo"):
    section.number(f"search-{key}", settings[key], "{:,d}")
search_runs = section.runs[section.runs.get("tags.nos_search", pd.Series(index=section.runs.index, dtype=object))
                           == "main"]
section.number("search-evaluations", len(search_runs), "{:,d}")  # a manifest lists one run per evaluation
steps = sum(s["train_steps_total"] for s in summaries.values())  # sweep runs included (no manifest lists them)
section.number("search-train-steps", steps, "{:,.0f}")

# %% [markdown]
# ## Fitness over steps, per particle (step 0: the particle re-scored on the evolution proxy)

# %%
chains = nosreport.chain_frame(main)
fig, ax = figures.new_figure(5.0, 2.8)
for particle, g in chains.groupby("particle"):
    ax.plot(g["step"], g["fitness"] * 100, color="0.55", linewidth=0.7, marker="o", markersize=2.5)
    ax.plot(g["step"], g["reeval_fitness"] * 100, linestyle="none", marker="x", markersize=3,
            color=figures.colour("re-score"))
median = chains.groupby("step")["fitness"].median()
ax.plot(median.index, median * 100, color=figures.colour("median"), linewidth=1.6, label="median over particles")
ax.plot([], [], linestyle="none", marker="x", color=figures.colour("re-score"), label="re-scored, fresh seed")
ax.set_xlabel("step (0: the particle's re-score)")
ax.set_ylabel("fitness: best valid. accuracy (%)")
ax.set_xticks(sorted(set(chains["step"])))
ax.legend(frameon=False)
figures.save_figure(fig, section.path("chains.pdf"), scale)
first, last = chains[chains["step"] == 0]["fitness"], chains[chains["step"] == settings["steps"]]["fitness"]
section.number("chains-first-median", first.median(), "{:.1%}")
section.number("chains-last-median", last.median(), "{:.1%}")
section.number("chains-improved", int(sum(1 for (_, g) in chains.groupby("particle")
                                          if g["fitness"].iloc[-1] > g["fitness"].iloc[0])), "{:d}")

# %% [markdown]
# ## Our search's rates beside the authors' released log

# %%
rates = nosreport.search_rates(main, section.published)


def pct(x, kind):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return tables.DASH
    return f"{100 * x:.1f} %" if kind == "rate" else f"{100 * x:.2f}"


rate_table = pd.DataFrame({"quantity": rates["quantity"],
                           "ours": [pct(x, k) for x, k in zip(rates["ours"], rates["kind"])],
                           "authors' log": [pct(x, k) for x, k in zip(rates["authors"], rates["kind"])]})
section.write_table("rates.tex", tables.latex_table(
    rate_table, caption="Our search beside the authors' released search log (n = 50 particles, K = 5 steps, "
    "M = 7 mutants; tier authors-output: counted from OUStudent/NeuralOptimizerSearch@005dfce "
    "nas_optimizer_particle_n50_k5_m7.log, paper/published/nos.csv). Fitness is the best validation accuracy "
    "(%) of the protocol's final run; ours is on this scale's proxy" + (" (the smoke stand-in: 16x16 digits, "
    "ConvNet base 8), not comparable with the authors' CIFAR-10 numbers." if scale == "smoke" else "."),
    label="tab:nos-rates", scale=scale, wrap=["quantity"]),
    runs=search_runs)
row = dict(zip(rates["quantity"], rates["ours"]))
section.number("pool-pass-rate", row["pool genomes that pass the fitness protocol"], "{:.1%}")
section.number("child-fail-rate", row["mutant evaluations that fail"], "{:.1%}")

# %% [markdown]
# ## The integrity check: what it rejected, what that saved, and how often it was wrong

# %%
check = nosreport.integrity_rows(main)
section.number("integrity-drawn", check["drawn"], "{:,d}")
section.number("integrity-rejected", check["rejected"], "{:,d}")
section.number("integrity-rate", check["rejection_rate"], "{:.1%}")
section.number("integrity-sample", check["sample"], "{:d}")
section.number("integrity-sample-passed", check["sample_passed"], "{:d}")
section.number("integrity-false-rate", check["false_rejection_rate"], "{:.0%}")
section.number("integrity-saved-steps", check["train_steps_saved"], "{:,.0f}")
section.number("integrity-saved-vs-pool", check["saved_vs_pool"], "{:.0%}")

# %% [markdown]
# ## Controls: random search, the winner's curse, independent search seeds

# %%
controls = []
random = main.get("random_search")
best_final = max((f for f in main["evolution"]["final_fitness"] if f is not None), default=math.nan)
controls.append({"control": "particle search (main): best final particle", "evaluations":
                 main["evolution"]["slot_evaluations"] + len(main["chains"]), "best fitness (%)": 100 * best_final})
if random:
    controls.append({"control": "random search: as many random valid genomes, evolution proxy",
                     "evaluations": random["evaluations"],
                     "best fitness (%)": 100 * random["best_fitness"] if random["best_fitness"] is not None
                     else math.nan})
for name, s in sorted(summaries.items()):
    if name != "main":
        finals = [f for f in s["evolution"]["final_fitness"] if f is not None]
        controls.append({"control": f"search seed {s['settings']['seed']} (pool {s['settings']['pool']}, "
                         f"{s['settings']['particles']} particles, {s['settings']['steps']} steps)",
                         "evaluations": s["evolution"]["slot_evaluations"] + len(s["chains"]),
                         "best fitness (%)": 100 * max(finals, default=math.nan)})
curse = main.get("winners_curse") or {}
section.write_table("controls.tex", tables.latex_table(
    pd.DataFrame(controls), caption="Controls of the search: the particle search against random search with as "
    "many evaluations (retries not counted), and independent search seeds at reduced scale. Evaluations: "
    "evolution-proxy evaluations (re-scores and mutant attempts).", label="tab:nos-controls", scale=scale,
    wrap=["control"], precision=2))
section.number("curse-selected", curse.get("gap_selected_mean"), "{:+.2%}")
section.number("curse-unselected", curse.get("gap_unselected_mean"), "{:+.2%}")
section.number("random-best", random["best_fitness"] if random else math.nan, "{:.1%}")
section.number("search-best", best_final, "{:.1%}")
section.number("seed-controls", len(summaries) - 1, "{:d}")

# %% [markdown]
# ## The genomes our search found, typeset (the evaluation's arms searched1, searched2, ...)

# %%
best = main.get("best", [])
evaluated = sorted({a for a in section.runs.get("tags.arm", pd.Series(dtype=object)).dropna()
                    if evaluation.searched_rank(a)}, key=evaluation.searched_rank)
shown = best[:max(len(evaluated), 1)]
lines = []
for entry in shown:
    arm = f"searched{entry['rank']}"
    fit = "failed" if entry["fitness"] is None or entry["fitness"] < 0 else f"{100 * entry['fitness']:.2f} %"
    genome = space.genome_from_json(entry["genome"])
    momentum = {"none": "no momentum", "momentum": "momentum", "nesterov": "Nesterov momentum"}[genome.momentum]
    body = replace(genome, momentum="none").latex()  # the momentum type in words, the update as an equation
    lines.append(f"\\paragraph{{{tables.latex_escape(arm)}}} particle {entry['particle']}, last fitness "
                 f"{tables.latex_escape(fit)}, {momentum}" + ("" if arm in evaluated else
                                                           " (not evaluated at this scale)")
                 + ":\n\\begin{equation*}\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}"
                 f"{{$\\displaystyle u = {body}$}}\\end{{equation*}}")
section.write_table("genomes.tex", "\n".join(lines) + "\n" if lines else "\\emph{The search found no genome.}\n")
section.number("genomes-shown", len(shown), "{:d}")

# %% [markdown]
# ## The evaluation on EfficientNetV2-S: the winners' re-runs per problem and arm

# %%
frame = nosreport.evaluation_frame(section.runs)
problems = [p for p in evaluation.PROBLEMS if p in set(frame["problem"])]
parts = []
for problem in problems:
    table = nosreport.evaluation_table(frame, problem)
    name = f"eval_{problem}.tex"
    section.write_table(name, tables.latex_table(
        table, caption=f"{problem}: each arm at its selected learning rate (lr; chosen by final validation "
        "accuracy of one tuning run per rate), re-run with fresh seeds (n). Test, final: the last epoch's test "
        "accuracy; valid, max: the best validation accuracy over epochs (the authors' fitness); mean ± sd over "
        "seeds, in %. vs Adam: difference of the mean final test accuracy to tuned Adam, percentage points. "
        "-nodecay: the released optimizer with its decays off; searchedk: our search's k-th best genome. "
        "Published: the paper's result tables could not be read, so no published value exists for any cell.",
        label=f"tab:nos-eval-{problem}", scale=scale, font_size="footnotesize"),
        runs=section.runs[section.runs["run_id"].isin(frame[frame["problem"] == problem]["run_id"])])
    parts.append(f"\\gentable{{{name}}}")
section.write_table("evaluation.tex", "\n".join(parts) + "\n" if parts else
                    "\\emph{No evaluation run at this scale.}\n")
section.number("eval-runs", len(frame), "{:,d}")
section.number("eval-problems", len(problems), "{:d}")
section.number("eval-arms", frame["arm"].nunique() if len(frame) else 0, "{:d}")

# the gap to tuned Adam, every arm and problem that ran
if len(frame):
    means = frame.groupby(["arm", "problem"])["test_final"].mean().unstack("problem")
    order = [a for a in evaluation.arms(len(evaluated)) if a in means.index]
    means = means.reindex(index=order, columns=problems)
    gap = (means - means.loc["adam"]) * 100 if "adam" in means.index else means * np.nan
    fig, ax = figures.new_figure(5.6, max(2.4, 0.16 * len(order) + 1.2))
    data = gap.to_numpy(dtype=float)
    limit = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    image = ax.imshow(data, cmap="RdBu", vmin=-(limit or 1.0), vmax=limit or 1.0, aspect="auto")
    ax.set_yticks(range(len(order)), order)
    ax.set_xticks(range(len(problems)), [p.removeprefix("nos_").removesuffix("_effv2s") for p in problems])
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("final test accuracy − Adam (pp)")
    figures.save_figure(fig, section.path("vs_adam.pdf"), scale)
    section.write_table("vs_adam.tex", "\\paperfigure{vs_adam.pdf}{Each arm's mean final test accuracy minus tuned "
                        "Adam's, per problem (percentage points; blue is better than Adam, empty: not run).}\n")
else:
    section.write_table("vs_adam.tex", "")

# %% [markdown]
# ## Registered claims (paper/claims/nos.yaml): the fifteen against tuned Adam, Holm over the family
# A claim is judged on the problems where both its arms were re-run at this scale (at full scale: all five); a
# claim none of whose problems ran keeps its cells and reads "not run".

# %%
from dataclasses import replace as replace_claim  # noqa: E402

from optrepro.report.claims import ClaimSet  # noqa: E402

ran = {(r.arm, r.problem) for r in frame.itertuples()}


def cells_run(claim):
    return tuple(p for p in claim.cells if (claim.method, p) in ran and (claim.baseline, p) in ran)


section.claims = ClaimSet(families=section.claims.families, claims=tuple(
    replace_claim(c, cells=cells_run(c)) if cells_run(c) else c for c in section.claims))
section.number("claim-cells", sum(len(c.cells) for c in section.claims), "{:d}")
verdict_list = section.finish()
[v.as_row() for v in verdict_list]
