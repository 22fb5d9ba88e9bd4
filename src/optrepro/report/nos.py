"""The NOS section's analysis (torch-free): the search's summaries beside the authors' log, and the evaluation's
re-runs as tables. workflow/notebooks/nos.py draws and writes; the numbers come from here.

- `search_rates(summary, published)`: our search's rates and fitness summaries beside the counts of the
  authors' released log (paper/published/nos.csv, tier authors-output), one row per quantity.
- `chain_frame(summary)`: fitness over steps per particle (step 0 = the particle's re-score on the evolution
  proxy), with the fresh-seed re-scores of the winner's-curse control.
- `integrity_rows(summary)`: the integrity check's rejection rate, the compute it saved and the false-rejection
  sample.
- `evaluation_frame(runs)` / `evaluation_table(frame, problem)`: the winners' re-runs per problem and arm, with
  both the final-epoch test accuracy and the max-over-epochs validation accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from optrepro.nos.evaluation import RERUN, arms as all_arms

DASH = "--"


def _published(published: pd.DataFrame, metric: str) -> float | None:
    rows = published[(published["cell"] == "nos_search_log") & (published["metric"] == metric)]
    return float(rows["value"].iloc[0]) if len(rows) else None


def _ratio(num, den) -> float:
    return num / den if num is not None and den else math.nan


def _median(values) -> float:
    values = [v for v in values if v is not None and v >= 0]
    return float(np.median(values)) if values else math.nan


def search_rates(summary: Mapping[str, Any], published: pd.DataFrame) -> pd.DataFrame:
    """quantity | ours | authors' log: rates as fractions, fitness as validation accuracy (ours on the proxy of
    this scale; the authors' on the CIFAR-10 proxies)."""
    p = lambda m: _published(published, m)  # noqa: E731
    pool, evo = summary["pool"], summary["evolution"]
    chains = summary["chains"]
    n_particles = len(chains)
    chosen = evo["chosen_steps"]
    children = [f for c in chains for f in c["fitness"][1:]]
    rows = [
        ("pool genomes that pass the fitness protocol", _ratio(pool["passed"], pool["evaluated"]),
         _ratio(p("pool_passed"), p("pool_candidates")), "rate"),
        ("mutant evaluations that fail", _ratio(evo["slot_evaluations_failed"], evo["slot_evaluations"]),
         _ratio(p("child_evaluations_failed"), p("child_evaluations")), "rate"),
        ("mutant slots whose every attempt fails", _ratio(evo["slots_all_attempts_failed"], evo["slots"]),
         _ratio(p("slots_all_attempts_failed"), (p("chosen_steps") or 0) * 7), "rate"),
        ("particle re-scores that fail", _ratio(sum(1 for c in chains if c["fitness"][0] < 0), n_particles),
         _ratio(p("particle_rescores_failed"), p("particles")), "rate"),
    ]
    for kind in ("nesterov", "momentum", "none"):
        rows.append((f"chosen steps with momentum type {kind}", _ratio(evo["chosen_momentum"][kind], chosen),
                     _ratio(p(f"chosen_{kind}"), p("chosen_steps")), "rate"))
    rows += [
        ("best pool fitness", pool["best_fitness"], p("pool_best_fitness"), "fitness"),
        ("median particle re-score", _median(c["fitness"][0] for c in chains), p("particle_rescore_fitness"),
         "fitness"),
        ("median final particle", _median(evo["final_fitness"]), p("final_fitness"), "fitness"),
        ("best final particle", max((f for f in evo["final_fitness"] if f is not None), default=math.nan),
         p("final_best_fitness"), "fitness"),
        ("best mutant (a step's winner)", max(children, default=math.nan), p("best_child_fitness"), "fitness"),
    ]
    frame = pd.DataFrame(rows, columns=["quantity", "ours", "authors", "kind"])
    return frame.astype({"ours": float, "authors": float})


def chain_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """particle | step | fitness | reeval_fitness (NaN where the evaluation failed: the code scores it -1)."""
    rows = []
    for c in summary["chains"]:
        reeval = c.get("reeval_fitness") or [None] * len(c["fitness"])
        for step, (f, r) in enumerate(zip(c["fitness"], reeval)):
            rows.append({"particle": c["particle"], "step": step,
                         "fitness": f if f is not None and f >= 0 else math.nan,
                         "reeval_fitness": r if r is not None and r >= 0 else math.nan,
                         "momentum": c["momentum"][step], "text": c["text"][step]})
    return pd.DataFrame(rows, columns=["particle", "step", "fitness", "reeval_fitness", "momentum", "text"])


def integrity_rows(summary: Mapping[str, Any]) -> dict[str, float]:
    """The integrity check in numbers: the share of structurally valid draws it rejected, the training steps
    scoring those would have cost (the mean cost of a scored rejected genome x rejections) against the pool's
    own training steps, and the false-rejection rate of the scored sample (rejected genomes that pass the
    fitness protocol)."""
    draws = summary["pool"]["draws"]
    check = summary.get("integrity_check") or {}
    valid_draws = draws["drawn"] - draws.get("cyclic", 0) - draws.get("repeated", 0)
    saved = check.get("train_steps_saved")
    pool_steps = summary["pool"]["train_steps"]
    return {"drawn": draws["drawn"], "rejected": draws["failed_integrity"],
            "rejection_rate": _ratio(draws["failed_integrity"], valid_draws),
            "sample": check.get("sample", 0), "sample_passed": check.get("sample_passed_surrogate", 0),
            "false_rejection_rate": check.get("false_rejection_rate") if check.get("sample") else math.nan,
            "train_steps_saved": saved if saved is not None else math.nan,
            "pool_train_steps": pool_steps, "saved_vs_pool": _ratio(saved, pool_steps)}


def evaluation_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The winners' re-runs: one row per run with problem, arm, seed, lr, status and both accuracies."""
    columns = ["problem", "arm", "seed", "lr", "status", "test_final", "valid_max", "run_id", "dir"]
    if runs.empty or "tags.stage" not in runs.columns:
        return pd.DataFrame(columns=columns)
    rerun = runs[(runs["tags.stage"] == RERUN) & runs["status"].isin(["ok", "diverged"])]
    return pd.DataFrame({
        "problem": rerun["problem"], "arm": rerun["tags.arm"], "seed": rerun["tags.seed"],
        "lr": rerun["optimizer.hparams.lr"], "status": rerun["status"],
        "test_final": rerun.get("final.test.accuracy", pd.Series(np.nan, index=rerun.index)).astype(float),
        "valid_max": rerun.get("max.valid.accuracy", pd.Series(np.nan, index=rerun.index)).astype(float),
        "run_id": rerun["run_id"], "dir": rerun["dir"]}, columns=columns).reset_index(drop=True)


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna() * 100
    if values.empty:
        return DASH
    return f"{values.mean():.2f}" + (f" ± {values.std():.2f}" if len(values) > 1 else "")


def evaluation_table(frame: pd.DataFrame, problem: str, searched: int = 9) -> pd.DataFrame:
    """Per arm on one problem (arms in the order of optrepro.nos.evaluation.arms): the selected rate, the runs,
    the final test accuracy and the max-over-epochs validation accuracy (%, mean ± sd over seeds), the mean
    difference to Adam's final test accuracy (pp), and the published value (none could be read)."""
    cell = frame[frame["problem"] == problem]
    order = [a for a in all_arms(searched) if a in set(cell["arm"])]
    adam = cell[cell["arm"] == "adam"]["test_final"].mean() if (cell["arm"] == "adam").any() else math.nan
    rows = []
    for arm in order:
        g = cell[cell["arm"] == arm]
        lrs = sorted(set(g["lr"]))
        diff = (g["test_final"].mean() - adam) * 100
        rows.append({"arm": arm, "lr": ", ".join(f"{x:g}" for x in lrs), "n": len(g),
                     "diverged": int((g["status"] == "diverged").sum()),
                     "test, final (%)": _mean_sd(g["test_final"]), "valid, max (%)": _mean_sd(g["valid_max"]),
                     "vs Adam (pp)": DASH if arm == "adam" or not math.isfinite(diff) else f"{diff:+.2f}",
                     "published": DASH})
    return pd.DataFrame(rows, columns=["arm", "lr", "n", "diverged", "test, final (%)", "valid, max (%)",
                                       "vs Adam (pp)", "published"])
