# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # ALSALS: Armijo line search along the Adam direction
#
# Run by Snakemake through `script:` (the generic rule `paper_report`); `snakemake.input.manifests` are the current
# plan's batch manifests of this paper, `snakemake.input.extra` the sweeps' winners and the equal-compute budgets
# (workflow/rules/alsals.smk). Writes into paper/generated/<scale>/alsals/.
# To explore interactively: `jupytext --to notebook workflow/notebooks/alsals.py`.

# %%
import json
import math
from pathlib import Path

import pandas as pd

from optrepro.report import alsals as report
from optrepro.report import figures, tables
from optrepro.report.section import Section
from optrepro.report.tables import DASH
from optrepro.report.verdicts import judge_all
from optrepro.workflow import paper_config

section = Section.from_snakemake(snakemake)  # noqa: F821 (injected by Snakemake)
scale = section.scale
# one row per (run, arm that asked for it): the claims and tables see every arm of a shared run; section.runs keeps
# one row per run, so the compute sentence counts each run once
runs = report.planned_runs(section.runs, list(snakemake.input.manifests))  # noqa: F821
pconfig = paper_config(Path("config"), "alsals", scale)
TASKS = [t["name"] for t in pconfig["tasks"]]
MAIN = [t for t in TASKS if any(t in c.cells for c in section.claims)]  # the claims' tasks; the rest are ablations
ARMS = list(pconfig["arms"])
LINE_SEARCHES = [a for a in ARMS if pconfig["arms"][a].get("optimizer") in ("alsals", "adamsls", "adasls", "sls")]
extra = [Path(p) for p in snakemake.input.extra]  # noqa: F821
choices = {json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in extra if p.name.endswith("_lr.json")}
budgets = {json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in extra
           if p.name.endswith("_budget.json")}
finals = runs[runs["tags.stage"].isin(["main", "tuned"])] if not runs.empty else runs  # every run but the sweep
usable = finals[finals["status"].isin(["ok", "diverged"])] if not finals.empty else finals


def mean_sd(values: pd.Series, digits: int = 4, factor: float = 1.0) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna() * factor
    if values.empty:
        return DASH
    text = f"{values.mean():.{digits}g}" if digits else f"{values.mean():.0f}"
    return text + (f" ± {values.std(ddof=1):.2g}" if len(values) > 1 else "")


def status_counts(frame: pd.DataFrame) -> str:
    counts = frame["status"].value_counts().to_dict()
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def unique(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run (a run two arms share appears once in the appendix of runs behind a table)."""
    return frame.drop_duplicates("run_id") if "run_id" in frame.columns else frame


def task_rows(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    return frame[frame["tags.experiment"] == task] if not frame.empty else frame


section.number("runs", len(section.runs), "{:d}")
section.number("tasks", len(TASKS), "{:d}")
section.number("main-tasks", len(MAIN), "{:d}")
section.number("arms", len(ARMS), "{:d}")

# %% [markdown]
# ## Protocol per task: seeds, length, the scripts' c and Adam lr, the tuned lr, the equal-compute budget

# %%
protocol = []
for task in TASKS:
    t = next(x for x in pconfig["tasks"] if x["name"] == task)
    mine = task_rows(finals, task)
    als = mine[mine["tags.arm"] == "alsals"]
    first = mine.iloc[0] if len(mine) else None
    choice, budget = choices.get(task), budgets.get(task)
    protocol.append({
        "task": task,
        "seeds": len(set(mine["tags.seed"])) if len(mine) else 0,
        "epochs": int(first["epochs"]) if first is not None else DASH,
        "batch": f"{int(first['batch_size'])}/{int(first['grad_accum'])}" if first is not None else DASH,
        "c": (f"{als['optimizer.hparams.c'].iloc[0]:g}" if len(als) else DASH),
        "lr scripts": f"{(t.get('hparams') or {}).get('adam_authors', {}).get('lr', float('nan')):g}"
        if "adam_authors" in t["arms"] else DASH,
        "lr tuned": f"{choice['hparams']['lr']:g}" if choice else DASH,
        "equal epochs": (f"{budget['epochs']} ({budget['ratio']:.2f})" if budget else DASH),
    })
section.write_table("protocol.tex", tables.latex_table(
    pd.DataFrame(protocol), caption="Protocol per task: seeds and epochs of the final runs; batch: examples per "
    "step / micro-batches; c: the scripts' c of ALSALS; lr scripts, lr tuned: Adam's learning rate in the scripts "
    "and the one the sweep chose; equal epochs: the equal-compute Adam's epochs (in brackets: its pass units over "
    "ALSALS's measured mean). BERT-base on the GLUE tasks, ResNet-50 on CIFAR and ImageNet (ResNet-34 in the "
    "ablations named so), GPT-2 small on OpenWebText.", label="tab:alsals-protocol", scale=scale),
    runs=unique(finals))
pd.DataFrame(protocol)

# %% [markdown]
# ## Final training loss and test accuracy per task and arm

# %%
final_rows = []
for task in TASKS:
    mine = task_rows(finals, task)
    for arm in [a for a in ARMS if a in set(mine["tags.arm"])]:
        frame = mine[mine["tags.arm"] == arm]
        ok = frame[frame["status"].isin(["ok", "diverged"])]
        final_rows.append({"task": task, "arm": arm, "runs": status_counts(frame),
                           "train loss": mean_sd(ok["final.train.loss"]),
                           "test acc. (%)": mean_sd(ok["final.test.accuracy"], 4, 100.0),
                           "units/step": mean_sd(ok["cost_units"] / ok["steps"], 3)})
final_frame = pd.DataFrame(final_rows, columns=["task", "arm", "runs", "train loss", "test acc. (%)", "units/step"])
section.write_table("final.tex", tables.latex_table(
    final_frame, caption="Final training loss (after the last epoch, evaluation mode) and test accuracy per task "
    "and arm, mean ± sd over seeds; units/step: pass units per optimizer step (forward+backward 1, forward 1/3); "
    "runs: by status (diverged runs count with their last finite values).", label="tab:alsals-final", scale=scale),
    runs=unique(finals))
final_frame

# %% [markdown]
# ## The follow-up table's final losses beside ours (never judged; ours stay empty at smoke scale)

# %%
FOLLOW_UP = {"adam": "ADAM", "adamsls": "ADAM SLS", "sls": "SGD SLS"}
pub = section.published
rows = []
for task in TASKS:
    for arm, name in FOLLOW_UP.items():
        hit = pub[(pub["cell"] == task) & (pub["arm"] == name) & (pub["metric"] == "loss")]
        if hit.empty:
            continue
        ours_arm = arm if arm != "adam" or task in choices else "adam_authors"
        ours = task_rows(usable, task)
        ours = ours[ours["tags.arm"] == ours_arm]
        rows.append({"task": task, "published arm": name, "published": f"{hit['value'].iloc[0]:.4g}",
                     "tier": hit["tier"].iloc[0], "our arm": ours_arm,
                     "ours": mean_sd(ours["final.train.loss"]) if scale != "smoke" else DASH})
section.write_table("published.tex", tables.latex_table(
    pd.DataFrame(rows, columns=["task", "published arm", "published", "tier", "our arm", "ours"]),
    caption="Final training loss in the follow-up paper's table (arXiv 2407.20650; tier "
    "follow-up: the authors' SaLSa paper, one number per task, run count and lr not stated; it labels CIFAR's "
    "model ResNet34, our ablation tasks) beside ours (mean over seeds; adam: the tuned Adam, the scripts' lr "
    "where no sweep ran). Printed for orientation, never judged.", label="tab:alsals-published", scale=scale),
    runs=unique(usable))

# %% [markdown]
# ## Forward passes, backward passes, pass units, backtracks and probe bumps per step (line searches)

# %%
rates = report.pass_rates(usable) if not usable.empty else pd.DataFrame(columns=["run_id"])
with_rates = usable.merge(rates, on="run_id") if not usable.empty else usable
pass_rows = []
for task in TASKS:
    mine = task_rows(with_rates, task)
    for arm in [a for a in LINE_SEARCHES if a in set(mine["tags.arm"])]:
        frame = mine[mine["tags.arm"] == arm]
        pass_rows.append({"task": task, "arm": arm, "forward": mean_sd(frame["forward_per_step"], 3),
                          "backward": mean_sd(frame["backward_per_step"], 3),
                          "units": mean_sd(frame["units_per_step"], 3),
                          "backtracks": mean_sd(frame["backtracks_per_step"], 3),
                          "probe bumps": mean_sd(frame["probe_bumps_per_step"], 2)})
pass_frame = pd.DataFrame(pass_rows, columns=["task", "arm", "forward", "backward", "units", "backtracks",
                                              "probe bumps"])
section.write_table("passes.tex", tables.latex_table(
    pass_frame, caption="Per optimizer step, mean ± sd over seeds: forward and backward passes over the step's "
    "batch (all its micro-batches), pass units (forward+backward 1, forward 1/3), backtracks of the search, and "
    "ALSALS's slope-probe bumps (eps x 10 while the finite difference is exactly 0). From result.json and the "
    "optimizer's counters.", label="tab:alsals-passes", scale=scale, font_size="footnotesize"),
    runs=unique(usable))
als = with_rates[with_rates["tags.arm"] == "alsals"] if not with_rates.empty else with_rates
section.number("alsals-units-per-step", float(als["units_per_step"].mean()) if len(als) else float("nan"), "{:.2f}")
section.number("alsals-backtracks-per-step", float(als["backtracks_per_step"].mean()) if len(als) else float("nan"),
               "{:.2f}")
pass_frame

# %% [markdown]
# ## The Adam learning-rate sweep (validation split carved from the training data)

# %%
sweep_rows = []
for task, choice in sorted(choices.items(), key=lambda kv: TASKS.index(kv[0]) if kv[0] in TASKS else 99):
    for cand in sorted(choice["candidates"], key=lambda c: c["lr"]):
        sweep_rows.append({"task": task, "lr": f"{cand['lr']:g}",
                           "final valid loss": f"{cand['value']:.4g}" if cand["value"] is not None else "diverged",
                           "runs": ", ".join(cand["status"]),
                           "chosen": "yes" if cand["lr"] == choice["hparams"]["lr"] else ""})
section.write_table("sweep.tex", tables.latex_table(
    pd.DataFrame(sweep_rows, columns=["task", "lr", "final valid loss", "runs", "chosen"]),
    caption="Adam's learning-rate sweep per task: final loss on the validation split carved from the training data "
    "(mean over the sweep's seeds); the lowest is re-run with every seed on the full training data.",
    label="tab:alsals-sweep", scale=scale),
    runs=unique(runs[runs["tags.stage"] == "tune"] if not runs.empty else runs))
section.number("sweep-runs", int((runs["tags.stage"] == "tune").sum()) if not runs.empty else 0, "{:d}")

# %% [markdown]
# ## Equal compute: Adam given ALSALS's measured pass units

# %%
equal_rows = []
for task, budget in sorted(budgets.items(), key=lambda kv: TASKS.index(kv[0]) if kv[0] in TASKS else 99):
    mine = task_rows(usable, task)
    loss = {arm: mean_sd(mine[mine["tags.arm"] == arm]["final.train.loss"])
            for arm in ("alsals", "adam", "adam_equal_compute")}
    equal_rows.append({"task": task, "ALSALS units": f"{budget['mean_units']:.1f}",
                       "Adam epochs": budget["epochs"], "ratio": f"{budget['ratio']:.3f}",
                       "loss ALSALS": loss["alsals"], "loss Adam": loss["adam"],
                       "loss Adam eq.": loss["adam_equal_compute"]})
section.write_table("equal.tex", tables.latex_table(
    pd.DataFrame(equal_rows, columns=["task", "ALSALS units", "Adam epochs", "ratio", "loss ALSALS", "loss Adam",
                                      "loss Adam eq."]),
    caption="Equal compute: ALSALS's mean measured pass units per run, the epochs the tuned Adam gets for them "
    "(rounded to whole epochs; ratio: Adam's units over ALSALS's), and the final training losses of ALSALS, the "
    "tuned Adam at the task's length and the tuned Adam at equal compute (eq.).", label="tab:alsals-equal",
    scale=scale, font_size="footnotesize"), runs=unique(usable))

# %% [markdown]
# ## Ablations: the other reading of each register entry that ran

# %%
ABLATIONS = [  # (register id, what, the reading's arm, the alternative's arm), compared on every task
    ("alsals-trial-batchnorm", "BatchNorm at trial points: as-run vs clean", "alsals", "alsals_as_run"),
    ("alsals-c-value", "one c (0.1) vs the scripts' c", "alsals", "alsals_one_c"),
    ("alsals-bert-adam-lr", "Adam at the scripts' lr vs tuned", "adam", "adam_authors"),
    ("alsals-adamsls-speed-up", "Adam+SLS speed_up on vs off", "adamsls", "adamsls_speed_up"),
]
abl_rows = []
for entry, what, reading, alternative in ABLATIONS:
    for task in TASKS:
        mine = task_rows(usable, task)
        a, b = (mine[mine["tags.arm"] == arm].set_index("tags.seed")["final.train.loss"]
                for arm in (reading, alternative))
        common = a.index.intersection(b.index)
        if len(common):
            diff = (b.loc[common] - a.loc[common]).astype(float)
            abl_rows.append({"register": entry, "ablation": what, "task": task, "n": len(common),
                             "Δ train loss": mean_sd(diff, 3)})
for entry, what, task, base in (("alsals-resnet-depth", "ResNet-34 vs ResNet-50", "cifar10_resnet34", "cifar10"),
                                ("alsals-resnet-depth", "ResNet-34 vs ResNet-50", "cifar100_resnet34", "cifar100"),
                                ("alsals-glue-dropout", "dropout 0.1 vs 0", "mrpc_dropout", "mrpc")):
    for arm in ARMS:
        a = task_rows(usable, base)
        b = task_rows(usable, task)
        a = a[a["tags.arm"] == arm].set_index("tags.seed")["final.train.loss"]
        b = b[b["tags.arm"] == arm].set_index("tags.seed")["final.train.loss"]
        common = a.index.intersection(b.index)
        if len(common):
            abl_rows.append({"register": entry, "ablation": f"{what} ({arm})", "task": base, "n": len(common),
                             "Δ train loss": mean_sd((b.loc[common] - a.loc[common]).astype(float), 3)})
section.write_table("ablations.tex", tables.latex_table(
    pd.DataFrame(abl_rows, columns=["register", "ablation", "task", "n", "Δ train loss"]),
    caption="Ablations of the ambiguity register (entries by id): the alternative reading's final training loss "
    "minus the reading's, paired on seeds, mean ± sd.", label="tab:alsals-ablations",
    scale=scale, wrap=["ablation"]), runs=unique(usable))

# %% [markdown]
# ## Figures: step size over training, loss against steps and pass units, final loss against wall time

# %%
def panels(n: int):
    """A grid of small panels, one per task, with room for a shared legend below."""
    cols = min(4, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = figures.new_figure(6.2, 1.75 * rows + 0.7, nrows=rows, ncols=cols, squeeze=False,
                                   layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def y_axis(ax, values) -> None:
    """Log scale with decade ticks when the values span a decade or more, else a linear scale with few ticks."""
    from matplotlib import ticker

    values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if values and max(values) / min(values) >= 10:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, numticks=4))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(3))
        ax.yaxis.set_major_formatter(ticker.ScalarFormatter(useOffset=False))
    ax.xaxis.set_major_locator(ticker.MaxNLocator(3, integer=True))


def finish(fig, axes, ylabel: str, name: str) -> None:
    """The y label on the first column, one legend below all panels, and the figure saved as `name`."""
    for ax in axes[::4]:
        ax.set_ylabel(ylabel)
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
                   frameon=False)
    figures.save_figure(fig, section.path(name), scale)


def mean_curve(series: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """Mean over runs at the x values every run has (runs of one arm share their evaluation steps)."""
    common = set.intersection(*(set(x for x, _ in s) for s in series)) if series else set()
    xs = sorted(common)
    return xs, [sum(dict(s)[x] for s in series) / len(series) for x in xs]


run_tasks = [t for t in MAIN if not task_rows(usable, t).empty]
step_tasks = [t for t in run_tasks if set(task_rows(usable, t)["tags.arm"]) & set(LINE_SEARCHES)]
fig, axes = panels(len(step_tasks))
for ax, task in zip(axes, step_tasks):
    mine = task_rows(usable, task)
    seen = []
    for arm in [a for a in LINE_SEARCHES if a in set(mine["tags.arm"])]:
        traces = [report.optimizer_trace(d) for d in mine[mine["tags.arm"] == arm]["dir"]]
        xs, ys = mean_curve([t for t in traces if t])
        if xs:
            ax.plot(xs, ys, color=figures.colour(arm), label=arm, linewidth=1.0)
            seen += ys
    y_axis(ax, seen)
    ax.set_title(task)
    ax.set_xlabel("step")
finish(fig, axes, "step size", "step_size.pdf")

for x_index, name, xlabel in ((0, "loss_steps.pdf", "step"), (1, "loss_units.pdf", "pass units")):
    fig, axes = panels(len(run_tasks))
    for ax, task in zip(axes, run_tasks):
        mine = task_rows(usable, task)
        seen = []
        for arm in [a for a in ARMS if a in set(mine["tags.arm"])]:
            curves = [[(c[x_index], c[2]) for c in report.loss_curve(d)] for d in mine[mine["tags.arm"] == arm]["dir"]]
            seen += [y for c in curves for _, y in c]
            if x_index == 1:  # runs of one arm spend different units: each run's own curve, thin
                for k, curve in enumerate(c for c in curves if c):
                    ax.plot(*zip(*curve), color=figures.colour(arm), linewidth=0.8, label=arm if k == 0 else None)
            else:
                xs, ys = mean_curve([c for c in curves if c])
                if xs:
                    ax.plot(xs, ys, color=figures.colour(arm), label=arm, linewidth=1.0)
        y_axis(ax, seen)
        ax.set_title(task)
        ax.set_xlabel(xlabel)
    finish(fig, axes, "train loss", name)

fig, axes = panels(len(run_tasks))
for ax, task in zip(axes, run_tasks):
    mine = task_rows(usable, task)
    for arm in [a for a in ARMS if a in set(mine["tags.arm"])]:
        frame = mine[mine["tags.arm"] == arm]
        ax.scatter(frame["wall_time_s"], frame["final.train.loss"], s=9, color=figures.colour(arm), label=arm)
    y_axis(ax, list(mine["final.train.loss"]))
    ax.set_title(task)
    ax.set_xlabel("wall time (s)")
finish(fig, axes, "final train loss", "loss_wall.pdf")

# %% [markdown]
# ## Verdicts of the registered claims (paper/claims/alsals.yaml), the register, verdicts.json

# %%
verdict_list = section.finish(judge_all(section.claims, runs, section.published, scale))
[v.as_row() for v in verdict_list]
