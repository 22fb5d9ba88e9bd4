"""The verdict engine: docs/replication.md's six verdicts for registered claims, from runs and published rows.

    verdicts = judge_all(claims, runs, published, scale="full")     # family corrections applied
    verdict = judge(claim, runs, published, scale="full")           # one claim, its own family

Rules as implemented (docs/report.md has the full text):
- Runs: the frame from `aggregate.collect_runs`, filtered to the scale, the claim's `select`, the cell
  (`cell_key` column) and the arm (`tags.arm`). Failed / missing runs are dropped; a diverged run counts with its
  recorded value when that is finite, else it is dropped; every drop is written in the notes.
- Pairing: arms share seeds when their `seed` keys overlap; the test is then paired on the common seeds (runs
  without a partner are dropped, with a note). Otherwise Welch's test. n <= 16 also gets an exact sign-flip or
  permutation p (reported; the decision uses the t-interval, because an exact test on 5 pairs cannot reach 0.05).
- `not assessed (smoke)`: at smoke scale always; at full scale when a cell has fewer than `min_seeds` usable
  seeds (pairs, or runs in the smaller arm). The statistics are still computed (the code path runs) but the
  verdict says nothing; `Verdict.label` names the reason ("not assessed (n = 3 < 5 seeds)").
- `not run`: a tested cell with no usable run in one of the arms (at smoke scale this too reads `not assessed
  (smoke)`, its reason naming the cells the smoke plan leaves out).
- `not testable`: the claim declares `not_testable` (what it would need that our runs cannot give).
- Per testable cell: estimate = method - baseline; p = two-sided t p-value of 0; p_equivalence = TOST p within
  +-delta_star; p_contra = min(p_equivalence, p if the estimate has the wrong sign else 1).
- Multiplicity (per family, method holm | bh | none): superiority p-values are adjusted over the family's
  hypotheses (every cell of a claim that is not every_cell; one intersection-union p = max over cells for an
  every_cell claim), and the p_contra values over every tested cell of the family.
- A cell is contradicted when its adjusted p_contra < alpha (interval inside +-delta_star, or significant in the
  wrong direction: equivalence wins over a significant effect smaller than delta_star); replicated when its
  adjusted superiority p < alpha in the claimed direction and the baseline check passed; else inconclusive,
  with the smallest detectable effect (80 % power, unadjusted alpha).
- Claim verdict: one cell -> that cell's. every_cell -> contradicted if any cell is; else not run / not assessed
  if any cell is; replicated if the adjusted intersection-union p < alpha, every cell's effect is in the claimed
  direction and every baseline check passed; else inconclusive. Several cells, not every_cell -> not assessed /
  not run if any cell is; the common verdict if all cells agree; else inconclusive, the notes counting cells.
- Baseline check (claims with `baseline_check`): our baseline's mean is within the tolerance of the published
  baseline (a row of a verified tier); with a published n of 1 or unknown, the published value must fall in our
  95 % prediction interval widened by the tolerance. Only `replicated` needs it; a failure is noted either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

from optrepro.problems.registry import check_scale
from optrepro.report import stats
from optrepro.report.claims import Claim, ClaimSet, Family
from optrepro.report.published import VERIFIED_TIERS, find_published
from optrepro.report.validation import InputError

REPLICATED = "replicated"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable"
NOT_RUN = "not run"
NOT_ASSESSED = "not assessed (smoke)"
VERDICTS = (REPLICATED, CONTRADICTED, INCONCLUSIVE, NOT_TESTABLE, NOT_RUN, NOT_ASSESSED)
USABLE_STATUSES = ("ok", "diverged")
POWER = 0.8


@dataclass
class Verdict:
    """One claim's verdict (cell=None) or one cell's. Effects are method - baseline in the metric's units."""
    claim_id: str
    verdict: str
    scale: str
    cell: str | None = None
    estimate: float | None = None
    interval: tuple[float, float] | None = None        # at 1 - alpha, adjusted for multiplicity
    interval_95: tuple[float, float] | None = None     # unadjusted 95 %
    p: float | None = None
    p_adjusted: float | None = None
    p_exact: float | None = None
    p_equivalence: float | None = None
    p_contra_adjusted: float | None = None
    g: float | None = None
    sde: float | None = None                           # smallest detectable effect (inconclusive cells)
    n: int | None = None
    n_method: int | None = None
    n_baseline: int | None = None
    paired: bool | None = None
    mean_method: float | None = None
    mean_baseline: float | None = None
    relative_pct: float | None = None                  # 100 (m - b) / |b|, signed: > 0 in the claimed direction
    published_method: float | None = None
    published_baseline: float | None = None
    published_effect: float | None = None
    baseline_check: bool | None = None                 # None: the claim has none
    published_in_prediction_interval: bool | None = None
    reason: str = ""                                   # why not assessed / not run / not testable
    notes: list[str] = field(default_factory=list)
    cells: list["Verdict"] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.verdict == NOT_ASSESSED and self.scale != "smoke" and self.reason:
            return f"not assessed ({self.reason})"
        return self.verdict

    def as_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k not in ("cells", "notes")}
        row.update(label=self.label, notes="; ".join(self.notes))
        return row


@dataclass
class _Cell:
    """Work in progress for one cell, before the family adjustment decides it."""
    claim: Claim
    verdict: Verdict
    comparison: Any = None                   # stats.Comparison | _MedianComparison | None
    pending: bool = False                    # testable: waits for the family adjustment
    p_contra: float = 1.0


@dataclass(frozen=True)
class _MedianComparison:
    """Median of paired differences: sign-test p-values and order-statistic intervals."""
    diffs: np.ndarray
    base: stats.Comparison

    def __getattr__(self, name):
        return getattr(self.base, name)

    @property
    def estimate(self) -> float:
        return float(np.median(self.diffs))

    @property
    def p(self) -> float:
        nonzero = self.diffs[self.diffs != 0]
        if len(nonzero) == 0:
            return 1.0
        return float(sps.binomtest(int((nonzero > 0).sum()), len(nonzero)).pvalue)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        _, low, high = stats.median_paired_interval(self.diffs, level)
        return low, high

    def p_equivalence(self, margin: float) -> float:
        n = len(self.diffs)
        above = int((self.diffs > -margin).sum())   # evidence against H0: median <= -margin
        below = int((self.diffs < margin).sum())    # evidence against H0: median >= margin
        return max(float(sps.binom.sf(above - 1, n, 0.5)), float(sps.binom.sf(below - 1, n, 0.5)))

    def smallest_detectable_effect(self, alpha: float = 0.05, power: float = POWER) -> float | None:
        return None  # no closed form for the sign test; the notes say so


def _select_runs(claim: Claim, runs: pd.DataFrame, scale: str) -> pd.DataFrame:
    if runs.empty:
        return runs
    needed = [claim.cell_key, "tags.arm", "seed", *claim.select]
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise InputError(f"claim {claim.id!r}: column {missing[0]!r} is not in the runs frame. Columns: "
                         f"{', '.join(map(str, runs.columns))}")
    mask = pd.Series(True, index=runs.index)
    if "scale" in runs.columns:
        mask &= runs["scale"] == scale
    for column, value in claim.select.items():
        mask &= runs[column] == value
    return runs[mask]


def _arm_values(claim: Claim, rows: pd.DataFrame, arm: str, notes: list[str]) -> pd.Series:
    """The claim's quantity per seed for one arm, usable runs only."""
    column = claim.quantity.column
    rows = rows[rows["tags.arm"] == arm]
    unusable = rows[~rows["status"].isin(USABLE_STATUSES)]
    if len(unusable):
        counts = unusable["status"].value_counts().to_dict()
        notes.append(f"{arm}: dropped {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))} run(s)")
    rows = rows[rows["status"].isin(USABLE_STATUSES)]
    if rows.empty:
        return pd.Series(dtype=float)
    if column not in rows.columns:
        raise InputError(f"claim {claim.id!r}: quantity column {column!r} is not in the runs frame (metric "
                         f"{claim.quantity.metric!r}, split {claim.quantity.split!r}). Metric columns: "
                         f"{', '.join(c for c in rows.columns if c.count('.') == 2 and c.split('.')[0] in ('final', 'best', 'max', 'smoothed', 'at_best_valid'))}")
    duplicated = rows["seed"][rows["seed"].duplicated()]
    if len(duplicated):
        raise InputError(f"claim {claim.id!r}: arm {arm!r} has several runs with seed {duplicated.iloc[0]!r} "
                         f"in one cell; the selection is ambiguous (narrow it with the claim's `select`, e.g. "
                         f"tags.stage)")
    values = pd.to_numeric(rows.set_index("seed")[column], errors="coerce").astype(float)
    diverged = rows.set_index("seed")["status"] == "diverged"
    if diverged.any():
        notes.append(f"{arm}: {int(diverged.sum())} diverged run(s)")
    bad = ~np.isfinite(values)
    if bad.any():
        notes.append(f"{arm}: dropped {int(bad.sum())} run(s) without a finite {column}")
    return values[~bad]


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _published(claim: Claim, published: pd.DataFrame, cell: str, arm: str | None, notes: list[str]):
    if arm is None or published is None:
        return None
    row = find_published(published, claim, cell, arm)
    if row is None:
        notes.append(f"no published row for {arm!r} in cell {cell!r}")
        return None
    if row["tier"] not in VERIFIED_TIERS:
        notes.append(f"published {arm!r} is tier {row['tier']!r}: shown, not judged")
        return None
    return row


def _prepare_cell(claim: Claim, cell: str, rows: pd.DataFrame, published: pd.DataFrame, scale: str) -> _Cell:
    notes: list[str] = []
    v = Verdict(claim_id=claim.id, verdict=NOT_RUN, scale=scale, cell=cell, notes=notes)
    work = _Cell(claim=claim, verdict=v)
    cell_rows = rows[rows[claim.cell_key] == cell] if not rows.empty else rows

    pub_m = _published(claim, published, cell, claim.published_method, notes)
    pub_b = _published(claim, published, cell, claim.published_baseline, notes)
    if pub_m is not None:
        v.published_method = float(pub_m["value"])
    if pub_b is not None:
        v.published_baseline = float(pub_b["value"])
    if pub_m is not None and pub_b is not None:
        v.published_effect = float(pub_m["value"] - pub_b["value"])

    if cell_rows.empty:
        v.reason = "no runs at this scale"
        return work
    method = _arm_values(claim, cell_rows, claim.method, notes)
    baseline = _arm_values(claim, cell_rows, claim.baseline, notes)
    if method.empty or baseline.empty:
        empty = [a for a, s in ((claim.method, method), (claim.baseline, baseline)) if s.empty]
        v.reason = f"no usable run of {' and '.join(empty)}"
        return work

    common = method.index.intersection(baseline.index)
    if len(common):
        unpaired = len(method) + len(baseline) - 2 * len(common)
        if unpaired:
            notes.append(f"paired on {len(common)} shared seeds; {unpaired} run(s) without a partner dropped")
        method, baseline = method.loc[common], baseline.loc[common]
        v.paired, v.n = True, len(common)
    else:
        v.paired, v.n = False, min(len(method), len(baseline))
    v.n_method, v.n_baseline = len(method), len(baseline)
    v.mean_method, v.mean_baseline = float(method.mean()), float(baseline.mean())

    if v.n >= 2:
        comparison = (stats.paired_comparison(method.values, baseline.values) if v.paired
                      else stats.welch_comparison(method.values, baseline.values))
        if claim.quantity.aggregation == "median":
            if not v.paired:
                raise InputError(f"claim {claim.id!r}: median aggregation needs arms that share seeds "
                                 f"(a paired design); cell {cell!r} has none in common")
            comparison = _MedianComparison(diffs=method.values - baseline.values, base=comparison)
        work.comparison = comparison
        v.estimate, v.p, v.p_exact = comparison.estimate, comparison.p, comparison.p_exact
        v.interval_95 = comparison.interval(0.95)
        v.g = comparison.hedges_g
        v.p_equivalence = comparison.p_equivalence(claim.delta_star)
        wrong_sign = claim.sign * comparison.estimate < 0
        work.p_contra = min(v.p_equivalence, comparison.p if wrong_sign else 1.0)
        if v.mean_baseline != 0:
            v.relative_pct = 100 * claim.sign * (v.mean_method - v.mean_baseline) / abs(v.mean_baseline)
        _check_baseline(claim, v, baseline.values, pub_b)
        _check_published_in_pi(v, method.values, pub_m, claim.method)

    if scale == "smoke":
        v.verdict, v.reason = NOT_ASSESSED, "smoke scale"
    elif v.n < claim.min_seeds:
        v.verdict, v.reason = NOT_ASSESSED, f"n = {v.n} < {claim.min_seeds} seeds"
    else:
        work.pending = True
    return work


def _check_baseline(claim: Claim, v: Verdict, ours: np.ndarray, pub_b) -> None:
    if claim.baseline_tolerance is None:
        return
    tol = claim.baseline_tolerance
    if pub_b is None:
        v.baseline_check = False
        v.notes.append("baseline check failed: no verified published baseline value")
        return
    published = float(pub_b["value"])
    n_pub = pub_b["n"]
    if pd.isna(n_pub) or int(n_pub) == 1:
        low, high = stats.prediction_interval(ours)
        v.baseline_check = bool(low - tol <= published <= high + tol)
        detail = f"published {_fmt(published)} (n = {'?' if pd.isna(n_pub) else 1}) vs our 95 % prediction " \
                 f"interval [{_fmt(low)}, {_fmt(high)}] +- {_fmt(tol)}"
    else:
        v.baseline_check = bool(abs(float(np.mean(ours)) - published) <= tol)
        detail = f"ours {_fmt(float(np.mean(ours)))} vs published {_fmt(published)} +- {_fmt(tol)}"
    v.notes.append(f"baseline check {'passed' if v.baseline_check else 'failed'}: {detail}")


def _check_published_in_pi(v: Verdict, ours: np.ndarray, pub_m, arm: str) -> None:
    """A published method value with n = 1 or unknown n is compared with our 95 % prediction interval."""
    if pub_m is None or not (pd.isna(pub_m["n"]) or int(pub_m["n"]) == 1):
        return
    low, high = stats.prediction_interval(ours)
    v.published_in_prediction_interval = bool(low <= float(pub_m["value"]) <= high)
    v.notes.append(f"published {arm} {_fmt(float(pub_m['value']))} (single value) "
                   f"{'inside' if v.published_in_prediction_interval else 'outside'} our 95 % prediction "
                   f"interval [{_fmt(low)}, {_fmt(high)}]")


def _adjusted_interval(comparison, p: float, p_adj: float, alpha: float) -> tuple[float, float]:
    """The interval consistent with the adjusted decision: level 1 - alpha * p / p_adj, which excludes 0
    exactly when p_adj < alpha (Holm and BH keep p_adj >= p)."""
    level = 1 - alpha if p_adj <= 0 or p <= 0 else 1 - alpha * p / p_adj
    return comparison.interval(min(max(level, 1 - alpha), 1 - 1e-12))


def _decide_cell(work: _Cell, p_sup_adj: float, p_contra_adj: float, family: Family) -> None:
    v, claim, c = work.verdict, work.claim, work.comparison
    alpha = family.alpha
    v.p_adjusted, v.p_contra_adjusted = p_sup_adj, p_contra_adj
    v.interval = _adjusted_interval(c, v.p, p_sup_adj, alpha)
    claimed_side = claim.sign * v.estimate > 0
    if p_contra_adj < alpha:
        v.verdict = CONTRADICTED
        if claimed_side and p_sup_adj < alpha:
            v.notes.append(f"significant but inside +-delta_star = {_fmt(claim.delta_star)}: no meaningful effect")
    elif p_sup_adj < alpha and claimed_side:
        if v.baseline_check is False:
            v.verdict = INCONCLUSIVE
            v.notes.append("effect significant, but the baseline check failed")
        else:
            v.verdict = REPLICATED
    else:
        v.verdict = INCONCLUSIVE
    if v.verdict == INCONCLUSIVE:
        v.sde = c.smallest_detectable_effect(alpha, POWER)
        if v.sde is None:
            v.notes.append("no smallest detectable effect for the median (sign test)")
        else:
            v.notes.append(f"smallest detectable effect {_fmt(v.sde)} (80 % power, alpha = {alpha})")


def _summarize(claim: Claim, cells: list[_Cell], scale: str, iut_p_adj: float | None, alpha: float) -> Verdict:
    verdicts = [w.verdict for w in cells]
    if len(verdicts) == 1 and not claim.every_cell:
        only = replace(verdicts[0], cell=None, cells=verdicts, notes=list(verdicts[0].notes))
        return only
    claim_verdict = Verdict(claim_id=claim.id, verdict=INCONCLUSIVE, scale=scale, cells=verdicts)
    kinds = [v.verdict for v in verdicts]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in VERDICTS if kinds.count(k))
    if claim.every_cell and CONTRADICTED in kinds:
        claim_verdict.verdict = CONTRADICTED
        failing = [v.cell for v in verdicts if v.verdict == CONTRADICTED]
        claim_verdict.notes.append(f"every-cell claim fails in {', '.join(failing)}")
    elif NOT_ASSESSED in kinds:
        claim_verdict.verdict = NOT_ASSESSED
        claim_verdict.reason = next(v.reason for v in verdicts if v.verdict == NOT_ASSESSED)
    elif NOT_RUN in kinds:
        claim_verdict.verdict = NOT_RUN
        claim_verdict.reason = "cells not run: " + ", ".join(v.cell for v in verdicts if v.verdict == NOT_RUN)
    elif claim.every_cell:
        claim_verdict.p_adjusted = iut_p_adj
        all_direction = all(claim.sign * v.estimate > 0 for v in verdicts)
        baseline_ok = all(v.baseline_check is not False for v in verdicts)
        if iut_p_adj is not None and iut_p_adj < alpha and all_direction and baseline_ok:
            claim_verdict.verdict = REPLICATED
        elif iut_p_adj is not None and iut_p_adj < alpha and all_direction:
            claim_verdict.notes.append("significant in every cell, but a baseline check failed")
    elif len(set(kinds)) == 1:
        claim_verdict.verdict = kinds[0]
    claim_verdict.notes.append(f"cells: {counts}")
    return claim_verdict


def judge_all(claims: ClaimSet | Iterable[Claim], runs: pd.DataFrame, published: pd.DataFrame | None,
              scale: str, families: dict[str, Family] | None = None) -> list[Verdict]:
    """Verdicts for every claim, in order, with each family's multiplicity correction applied."""
    check_scale(scale)
    if isinstance(claims, ClaimSet):
        families = {**claims.families, **(families or {})}
        claims = claims.claims
    claims = list(claims)
    families = dict(families or {})
    for claim in claims:
        families.setdefault(claim.family, Family(name=claim.family, correction="holm"))

    prepared: dict[str, list[_Cell]] = {}
    for claim in claims:
        if claim.not_testable:
            continue
        rows = _select_runs(claim, runs, scale)
        prepared[claim.id] = [_prepare_cell(claim, cell, rows, published, scale) for cell in claim.tested_cells]

    iut_adjusted: dict[str, float] = {}
    for name, family in families.items():
        members = [c for c in claims if c.family == name and c.id in prepared]
        sup_keys, sup_p, contra_cells = [], [], []
        for claim in members:
            pending = [w for w in prepared[claim.id] if w.pending]
            contra_cells += pending
            if claim.every_cell:
                if pending and len(pending) == len(prepared[claim.id]):
                    direction_ok = all(claim.sign * w.verdict.estimate > 0 for w in pending)
                    sup_keys.append(("claim", claim.id))
                    sup_p.append(max(w.verdict.p for w in pending) if direction_ok else 1.0)
            else:
                for w in pending:
                    sup_keys.append(("cell", w))
                    sup_p.append(w.verdict.p)
        sup_adj = dict(zip(range(len(sup_keys)), stats.adjust(sup_p, family.correction)))
        contra_adj = stats.adjust([w.p_contra for w in contra_cells], family.correction)
        contra_of = {id(w): p for w, p in zip(contra_cells, contra_adj)}
        sup_of_cell = {}
        for i, (kind, key) in enumerate(sup_keys):
            if kind == "claim":
                iut_adjusted[key] = float(sup_adj[i])
            else:
                sup_of_cell[id(key)] = float(sup_adj[i])
        for claim in members:
            for w in prepared[claim.id]:
                if not w.pending:
                    continue
                # Intersection-union: an every-cell claim's cells are each tested at the unadjusted level;
                # the family correction applies to the claim's single IUT p-value.
                p_sup = w.verdict.p if claim.every_cell else sup_of_cell[id(w)]
                _decide_cell(w, p_sup, float(contra_of[id(w)]), family)

    out = []
    for claim in claims:
        if claim.not_testable:
            out.append(Verdict(claim_id=claim.id, verdict=NOT_TESTABLE, scale=scale, reason=claim.not_testable,
                               notes=[claim.not_testable]))
            continue
        verdict = _summarize(claim, prepared[claim.id], scale, iut_adjusted.get(claim.id),
                             families[claim.family].alpha)
        if scale == "smoke" and verdict.verdict == NOT_RUN:  # smoke judges nothing, run or not
            verdict.verdict, verdict.reason = NOT_ASSESSED, f"smoke scale; {verdict.reason or 'not run'}"
        out.append(verdict)
    return out


def judge(claim: Claim, runs: pd.DataFrame, published: pd.DataFrame | None, scale: str,
          family: Family | None = None) -> Verdict:
    """One claim as its own family (Holm over its cells unless `family` says otherwise)."""
    families = {claim.family: family} if family is not None else None
    return judge_all([claim], runs, published, scale, families)[0]


def verdict_frame(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """One row per claim and per cell of a multi-cell claim, for tables and tests."""
    rows = []
    for v in verdicts:
        rows.append(v.as_row())
        if len(v.cells) > 1:
            rows.extend(c.as_row() for c in v.cells)
    return pd.DataFrame(rows)
