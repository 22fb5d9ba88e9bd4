# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Arena: the papers' optimizers on one protocol
#
# Run by the generic `paper_report` rule. Settings (a method one-shot or tuned with the small budget, per
# schedule) come from `optrepro.report.valley`; times to target, profiles and ranks from `optrepro.report.arena`.

# %%
import math
from pathlib import Path

import numpy as np
import pandas as pd

from optrepro.planners.crowded_valley import ONESHOT, VERSIONS, scored_by
from optrepro.report import arena, figures, tables, valley
from optrepro.report.section import Section
from optrepro.workflow import paper_config

section = Section.from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
scale, runs = section.scale, section.runs
config = paper_config(Path("config"), "arena", scale)
BASELINES = list(VERSIONS[config.get("study", "icml")]["optimizers"])
BUDGET = next(iter(config["budgets"]))  # the small budget
main = runs[runs["tags.stage"].isin([ONESHOT, "tune", "rerun"])] if len(runs) else runs
frame = valley.valley_frame(main, method_column="tags.arm")
problems = [p for p in config["problems"] if p in set(frame["problem"])]
methods = list(dict.fromkeys(frame["optimizer"]))
section.number("runs", len(runs), "{:,d}")
section.number("methods", len(methods), "{:d}")
section.number("problems", len(problems), "{:d}")
section.number("problems-planned", len(config["problems"]), "{:d}")

# %% [markdown]
# ## Targets, and each tuned method's time to reach them (three costs)

# %%
timing = runs[runs["tags.stage"] == "timing"] if len(runs) else runs
sec_per_step = {(r["problem"], r["tags.arm"]): float(r["wall_time_s"]) / max(float(r["steps"]), 1.0)
                for _, r in timing.iterrows()}
rows, targets = [], {}
for problem in problems:
    metric, higher = scored_by(problem)
    cell = frame[frame["problem"] == problem]
    tuned = cell[cell["budget"] == BUDGET]
    finals = tuned.assign(method=tuned["optimizer"] + "@" + tuned["schedule"], value=tuned["valid_value"])
    target, best = arena.target_of(finals, [f"{b}@{s}" for b in BASELINES for s in config["schedules"]], higher)
    targets[problem] = (target, best)
    for (method, schedule), g in tuned.groupby(["optimizer", "schedule"]):
        for _, r in g.iterrows():
            run = runs.set_index("run_id").loc[r["run_id"]]
            times = arena.run_times({**run.to_dict(), "dir": r["dir"]}, target, higher,
                                    sec_per_step.get((problem, method), math.nan))
            rows.append({"problem": problem, "method": method, "schedule": schedule, "seed": r["seed"], **times})
times = pd.DataFrame(rows, columns=["problem", "method", "schedule", "seed", "steps", "units", "seconds"])


def method_times(cost: str) -> pd.DataFrame:
    """Problems x methods: each method's time at its faster schedule (tuned, small budget): the time by which
    half its seeds reached the target (arena.method_time)."""
    if times.empty:
        return pd.DataFrame()
    per_schedule = times.groupby(["problem", "method", "schedule"])[cost].apply(arena.method_time)
    return per_schedule.groupby(["problem", "method"]).min().unstack("method")


target_rows = [{"problem": p, "metric": f"valid {scored_by(p)[0]}", "target": t, "set by": b.replace("@", ", ")}
               for p, (t, b) in targets.items()]
section.write_table("targets.tex", tables.latex_table(
    pd.DataFrame(target_rows, columns=["problem", "metric", "target", "set by"]),
    caption="Targets: per problem, the median over seeds of the final validation metric of the best baseline "
    f"(the study's optimizers) tuned with the {BUDGET} budget, at its schedule.", label="tab:arena-targets",
    scale=scale, precision=4), runs=frame)

# %% [markdown]
# ## Performance profiles in steps, pass units and wall time

# %%
TAUS = list(np.linspace(1, 4, 61))
fig, axes = figures.new_figure(6.4, 4.2, ncols=3, sharey=True)
for ax, (cost, label) in zip(axes, (("steps", "steps"), ("units", "pass units"), ("seconds", "wall time"))):
    table = method_times(cost)
    if not table.empty:
        profile = arena.performance_profile(table, TAUS)
        for method in profile.columns:
            ax.step(profile.index, profile[method], where="post", color=figures.colour(method), linewidth=1,
                    label=method)
    ax.set_xlabel(f"tau ({label})")
    ax.set_xlim(1, 4)
    ax.set_ylim(-0.02, 1.02)
axes[0].set_ylabel("fraction of problems")
handles, labels = axes[0].get_legend_handles_labels()
if handles:  # one legend for the three panels, under them
    fig.legend(handles, labels, loc="lower center", ncol=5, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(bottom=0.45)
figures.save_figure(fig, section.path("profiles.pdf"), scale)

# %% [markdown]
# ## Mean rank with bootstrap intervals, the per-problem table behind it, and NOS without its search task

# %%
def rank_table(exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    kept = times[~times["problem"].isin(exclude)]
    per_seed: dict[str, dict[str, list[float]]] = {}
    for (problem, method), g in kept.groupby(["problem", "method"]):
        best = min(g.groupby("schedule")["steps"].apply(arena.method_time).items(), key=lambda kv: kv[1])[0]
        per_seed.setdefault(problem, {})[method] = list(g[g["schedule"] == best]["steps"])
    if not per_seed:
        return pd.DataFrame(columns=["mean_rank", "low", "high"])
    return arena.bootstrap_mean_rank(per_seed, n_resamples=300, seed=0)


ranked = rank_table()
section.write_table("ranks.tex", tables.latex_table(
    ranked.reset_index().rename(columns={"index": "method", "mean_rank": "mean rank", "low": "95% low",
                                         "high": "95% high"}),
    caption=f"Mean rank over the {len(problems)} problems run, by time to target in steps (tuned, {BUDGET} budget, "
    "each method at its faster schedule; 1 = fastest; never reaching the target ranks last), with a bootstrap "
    "interval over seeds.", label="tab:arena-ranks", scale=scale, precision=2), runs=frame)
steps_table = method_times("steps")
if not steps_table.empty:
    shown = steps_table.T  # inf prints as "inf"; a method not run on a problem (NaN) as a dash
    shown.columns = [str(c) for c in shown.columns]
    section.write_table("per_problem.tex", tables.latex_table(
        shown.reset_index(),
        caption="Time to target in steps per problem (the time by which half the seeds reached it; inf: more "
        "than half diverged or never reached it).",
        label="tab:arena-per-problem", scale=scale, precision=0), runs=frame)
else:
    section.write_table("per_problem.tex", "\\emph{No tuned run at this scale.}\n")
without = rank_table(("cifar10_3c3d",))
nos = [m for m in ranked.index if m.startswith("nos_")]
section.write_table("nos_ranks.tex", tables.latex_table(
    pd.DataFrame({"method": nos, "with cifar10_3c3d": [ranked.loc[m, "mean_rank"] for m in nos],
                  "without": [without.loc[m, "mean_rank"] if m in without.index else np.nan for m in nos]}),
    caption="The NOS optimizers' mean rank with and without cifar10_3c3d, the problem closest to their search "
    "task (a small CNN on CIFAR-10).", label="tab:arena-nos", scale=scale, precision=2) if nos else
    "\\emph{No NOS optimizer ran at this scale.}\n")

# %% [markdown]
# ## The negative control: uniform Adam at CaAdam's kernel factor beside CaAdam in reference mode

# %%
control = runs[runs["tags.stage"] == "control"] if len(runs) else runs
control_rows = []
for problem, g in control.groupby("problem") if len(control) else []:
    metric, higher = scored_by(problem)
    caadam = frame[(frame["problem"] == problem) & (frame["optimizer"] == config["control"]["method"])
                   & (frame["budget"] == ONESHOT) & (frame["schedule"] == "none")]
    for label, values in ((g["tags.arm"].iloc[0], [valley.deepobs_value(r, "test", metric) for _, r in g.iterrows()]),
                          (config["control"]["method"], list(caadam["value"]))):
        control_rows.append({"problem": problem, "arm": label, "runs": len(values),
                             f"final test": f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"
                             if len(values) > 1 else tables.DASH})
section.write_table("control.tex", tables.latex_table(
    pd.DataFrame(control_rows, columns=["problem", "arm", "runs", "final test"]),
    caption="Negative control (one-shot, constant schedule): uniform Adam at the kernel factor of CaAdam's "
    "reference mode beside CaAdam. On quadratic_deep the parameter is one tensor, the factor is 1 and the two are "
    "the same optimizer: a sanity check of the protocol, not evidence about CaAdam.", label="tab:arena-control",
    scale=scale) if control_rows else "\\emph{No control run at this scale.}\n")

# %% [markdown]
# ## One plain conclusion per method, from the numbers above

# %%
conclusions = []
for method in ranked.index:
    reached = int((steps_table[method] < math.inf).sum()) if method in steps_table.columns else 0
    r = ranked.loc[method]
    conclusions.append({"method": method, "conclusion":
                        f"mean rank {r['mean_rank']:.1f} [{r['low']:.1f}, {r['high']:.1f}] of {len(ranked)}; reached "
                        f"the target on {reached} of {len(steps_table)} problems"
                        + ("; a baseline" if method in BASELINES else "")})
section.write_table("conclusions.tex", tables.latex_table(
    pd.DataFrame(conclusions, columns=["method", "conclusion"]),
    caption="What the numbers support, per method (tuned, time to target in steps). With few problems the ranks "
    "say little: intervals are wide and a profile has as many steps as problems.", label="tab:arena-conclusions",
    scale=scale, wrap=["conclusion"]) if conclusions else "\\emph{No method ran at this scale.}\n")
section.number("baselines", len(BASELINES), "{:d}")
section.finish()
