"""The verdict engine and its statistics on fixtures with known answers (docs/replication.md)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from optrepro.report import stats
from optrepro.report.claims import Claim, ClaimSet, Family, Quantity, parse_claims
from optrepro.report.published import PUBLISHED_DIR, load_published
from optrepro.report.validation import InputError
from optrepro.report.verdicts import (CONTRADICTED, INCONCLUSIVE, NOT_ASSESSED, NOT_RUN, NOT_TESTABLE, REPLICATED,
                                      judge, judge_all, verdict_frame)


def make_claim(**overrides) -> Claim:
    base = dict(id="c", paper="core", statement="method beats baseline",
                quantity=Quantity(metric="accuracy", split="test", value="final", aggregation="mean", points=True),
                method="m", baseline="b", direction="greater", delta_star=0.01, cells=("p1",), family="f",
                every_cell=False, min_seeds=5)
    base.update(overrides)
    return Claim(**base)


def make_runs(values: dict[tuple[str, str], list[float]], scale: str = "full", seeds=None,
              column: str = "final.test.accuracy", status=None) -> pd.DataFrame:
    """{(cell, arm): [value per seed]} -> a frame shaped like aggregate.collect_runs's."""
    rows = []
    for (cell, arm), vals in values.items():
        for i, v in enumerate(vals):
            seed = seeds[i] if seeds is not None else i
            rows.append({"run_id": f"{cell}-{arm}-{i}", "status": (status or {}).get((cell, arm, i), "ok"),
                         "problem": cell, "scale": scale, "tags.arm": arm, "seed": f"{seed}-{seed}-{seed}",
                         column: v})
    return pd.DataFrame(rows)


RNG = np.random.default_rng(12345)
BASE = 0.80 + 0.02 * RNG.standard_normal(8)          # seed-to-seed spread shared by both arms


def strong(n=5, effect=0.05):
    return list(BASE[:n] + effect + 0.002 * RNG.standard_normal(n)), list(BASE[:n])


# --- the CaAdam fixture -------------------------------------------------------------------------------------

def caadam_row(published, cell, arm, metric=None):
    metric = metric or ("rmse" if cell.startswith("california") else "accuracy")
    row = published[(published["cell"] == cell) & (published["arm"] == arm) & (published["metric"] == metric)]
    assert len(row) == 1, (cell, arm)
    return row.iloc[0]


def test_caadam_published_mean_sd_n_reproduce_the_authors_t():
    """CIFAR-10 ResNet-20, CaAdam-Add vs Adam, n = 30 each: the notebooks' Student t = 12.70, p = 2.16e-18."""
    published = load_published([PUBLISHED_DIR / "caadam.csv"])
    add, adam = caadam_row(published, "cifar10_resnet20", "CaAdam-Add"), caadam_row(published, "cifar10_resnet20", "Adam")
    assert (add["n"], adam["n"]) == (30, 30)
    assert add["tier"] == adam["tier"] == "authors-output"
    t, df, p = stats.student_t_from_summary(add["value"], add["sd"], add["n"], adam["value"], adam["sd"], adam["n"])
    assert round(t, 2) == 12.70
    assert df == 58
    assert p == pytest.approx(2.16e-18, rel=5e-3)
    # the published sd is the sample sd: with ddof = 0 sds converted to ddof = 1 the t would be 12.49
    assert round(t / math.sqrt(30 / 29), 2) != 12.70


# t and relative improvement (%) against Adam from the authors' notebooks (remigenet/CaAdam@ce14f7e results/*.ipynb),
# typed independently of the CSV
CAADAM_T = {
    "cifar10_resnet20": {"CaAdam-Add": (12.70, 2.845), "CaAdam-Mul": (18.89, 4.093), "CaAdam-Depth": (7.56, 2.204),
                         "AdamW": (-2.49, -0.928), "Adamax": (-35.53, -13.672), "Nadam": (-2.21, -0.816)},
    "cifar100_resnet20": {"CaAdam-Add": (6.04, 2.721), "CaAdam-Mul": (20.00, 5.973), "CaAdam-Depth": (17.32, 5.480),
                          "AdamW": (3.19, 1.024), "Adamax": (-39.92, -17.205), "Nadam": (-0.82, -0.388)},
    "fmnist56_resnet20": {"CaAdam-Add": (2.66, 0.310), "CaAdam-Mul": (-0.23, -0.025), "CaAdam-Depth": (3.61, 0.393),
                          "AdamW": (1.24, 0.152), "Adamax": (-6.36, -0.758), "Nadam": (2.16, 0.232)},
}


def test_every_transcribed_caadam_accuracy_row_reproduces_its_t_and_improvement():
    published = load_published([PUBLISHED_DIR / "caadam.csv"])
    for cell, arms in CAADAM_T.items():
        adam = caadam_row(published, cell, "Adam")
        for arm, (t_published, rel_published) in arms.items():
            row = caadam_row(published, cell, arm)
            t, _, _ = stats.student_t_from_summary(row["value"], row["sd"], 30, adam["value"], adam["sd"], 30)
            assert abs(t - t_published) <= 0.006, (cell, arm, t)
            rel = 100 * (row["value"] - adam["value"]) / adam["value"]
            assert rel == pytest.approx(rel_published, abs=1e-3), (cell, arm, rel)  # printed to 3 decimals


def test_caadam_california_rows_reproduce_the_published_improvement():
    """RMSE: improvement = -relative change (lower is better), to the three decimals printed."""
    expected = {"64_32": (0.614, 2.068, 0.408), "128_64_32": (1.768, 2.871, 1.260),
                "128_128_64": (1.143, 2.238, 0.987), "256_128_64_32": (1.153, 1.434, 0.925),
                "128x5": (1.071, 1.442, 1.079), "1024_256_64_16": (0.493, -0.257, 0.495)}
    published = load_published([PUBLISHED_DIR / "caadam.csv"])
    for config, improvements in expected.items():
        cell = f"california_mlp_{config}"
        adam = caadam_row(published, cell, "Adam")
        for arm, improvement in zip(("CaAdam-Add", "CaAdam-Mul", "CaAdam-Depth"), improvements):
            row = caadam_row(published, cell, arm)
            assert -100 * (row["value"] - adam["value"]) / adam["value"] == pytest.approx(improvement, abs=1e-3), (cell, arm)


# --- statistics against hand-computed values ----------------------------------------------------------------

def test_holm_and_bh_match_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> running max 0.06
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 -> running min from the top
    np.testing.assert_allclose(stats.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    with pytest.raises(KeyError, match="bonferroni.*Valid choices: bh, holm, none"):
        stats.adjust(p, "bonferroni")


def test_prediction_interval_for_a_single_published_value():
    # mean 3, sd 1.5811, t_{0.975, 4} = 2.776445, sqrt(1 + 1/5) = 1.095445 -> half-width 4.80889
    low, high = stats.prediction_interval([1, 2, 3, 4, 5])
    assert low == pytest.approx(3 - 4.80889, abs=1e-4) and high == pytest.approx(3 + 4.80889, abs=1e-4)
    # wider than the mean's 95 % interval (half-width 1.9632)
    assert high - 3 > 2 * 1.9632
    with pytest.raises(ValueError, match="at least 2 runs"):
        stats.prediction_interval([1.0])


def test_hedges_g_exact_tests_and_detectable_effect_by_hand():
    # means 4 and 2, pooled sd sqrt(2.5), J = 1 - 3/15 = 0.8
    assert stats.hedges_g([2, 4, 6], [1, 2, 3]) == pytest.approx(0.8 * 2 / math.sqrt(2.5))
    assert stats.exact_sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    assert stats.exact_permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20)
    # normal limit: (1.959964 + 0.841621) * se
    assert stats.smallest_detectable_effect(1.0, 1e9) == pytest.approx(2.801585, abs=1e-5)


def test_tost_agrees_with_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(50):
        est, se, df, margin = rng.normal(0, 0.5), rng.uniform(0.05, 0.5), int(rng.integers(2, 30)), 0.6
        low, high = stats.t_interval(est, se, df, 0.90)
        assert (stats.tost_p(est, se, df, margin) < 0.05) == (-margin < low and high < margin)


def test_median_interval_uses_order_statistics():
    d = np.arange(1.0, 11.0)   # n = 10: P(Binom(10, .5) <= 1) = 0.0107 <= 0.025 < P(<= 2): [d_(2), d_(9)]
    median, low, high = stats.median_paired_interval(d, 0.95)
    assert (median, low, high) == (5.5, 2.0, 9.0)


# --- verdicts ----------------------------------------------------------------------------------------------

def test_clear_effect_is_replicated_with_a_paired_test():
    m, b = strong()
    v = judge(make_claim(), make_runs({("p1", "m"): m, ("p1", "b"): b}), None, "full")
    assert v.verdict == REPLICATED and v.label == REPLICATED
    assert v.paired and v.n == 5
    assert v.estimate == pytest.approx(np.mean(np.subtract(m, b)))
    assert v.interval[0] > 0 and v.g > 0 and v.relative_pct > 0
    assert v.p_exact == pytest.approx(2 / 32)   # reported beside the t-test, not used to decide


def test_pairing_uses_the_shared_seed_spread():
    """A 1-point gain on a 2-point seed-to-seed spread: clear when paired, invisible to Welch."""
    m = list(BASE[:6] + 0.01 + 0.0005 * RNG.standard_normal(6))
    b = list(BASE[:6])
    paired = judge(make_claim(delta_star=0.002), make_runs({("p1", "m"): m, ("p1", "b"): b}), None, "full")
    runs = pd.concat([make_runs({("p1", "m"): m}, seeds=range(100, 106)), make_runs({("p1", "b"): b})])
    unpaired = judge(make_claim(delta_star=0.002), runs, None, "full")
    assert paired.paired and paired.verdict == REPLICATED
    assert unpaired.paired is False and unpaired.verdict == INCONCLUSIVE


def test_equivalence_is_contradicted_and_opposite_effect_is_contradicted():
    diffs = 0.0005 * np.array([1.0, -1.0, 0.5, -0.5, 0.2, -0.3])
    b = BASE[:6]
    v = judge(make_claim(), make_runs({("p1", "m"): list(b + diffs), ("p1", "b"): list(b)}), None, "full")
    assert v.verdict == CONTRADICTED and v.p_equivalence < 0.05
    m, base = strong(effect=-0.05)
    v = judge(make_claim(), make_runs({("p1", "m"): m, ("p1", "b"): base}), None, "full")
    assert v.verdict == CONTRADICTED and v.estimate < 0


def test_noisy_case_is_inconclusive_and_reports_the_smallest_detectable_effect():
    diffs = np.array([0.03, -0.04, 0.05, -0.01, 0.02])
    b = BASE[:5]
    v = judge(make_claim(), make_runs({("p1", "m"): list(b + diffs), ("p1", "b"): list(b)}), None, "full")
    assert v.verdict == INCONCLUSIVE
    se = diffs.std(ddof=1) / math.sqrt(5)
    assert v.sde == pytest.approx(stats.smallest_detectable_effect(se, 4))
    assert v.sde > abs(v.estimate)
    assert any("smallest detectable effect" in note for note in v.notes)


def test_every_cell_claim_with_one_failing_cell_is_contradicted():
    values = {}
    for cell in ("p1", "p2", "p3"):
        m, b = strong()
        values[(cell, "m")], values[(cell, "b")] = m, b
    values[("p3", "m")] = list(np.array(values[("p3", "b")]) + 0.0003 * np.array([1, -1, 0.5, -0.5, 0.1]))
    claim = make_claim(cells=("p1", "p2", "p3"), every_cell=True)
    v = judge(claim, make_runs(values), None, "full")
    assert v.verdict == CONTRADICTED
    assert [c.verdict for c in v.cells] == [REPLICATED, REPLICATED, CONTRADICTED]
    assert "p3" in v.notes[0]
    # without the failing cell every cell holds: replicated by intersection-union
    ok = {k: val for k, val in values.items() if k[0] != "p3"}
    assert judge(make_claim(cells=("p1", "p2"), every_cell=True), make_runs(ok), None, "full").verdict == REPLICATED
    # an inconclusive cell does not contradict, but the claim is not replicated
    noisy = dict(ok)
    noisy[("p3", "b")] = list(BASE[:5])
    noisy[("p3", "m")] = list(BASE[:5] + np.array([0.03, -0.04, 0.05, -0.01, 0.02]))
    v = judge(make_claim(cells=("p1", "p2", "p3"), every_cell=True), make_runs(noisy), None, "full")
    assert v.verdict == INCONCLUSIVE


def test_smoke_scale_never_prints_a_verdict():
    m, b = strong()
    runs = make_runs({("p1", "m"): m, ("p1", "b"): b}, scale="smoke")
    v = judge(make_claim(), runs, None, "smoke")
    assert v.verdict == NOT_ASSESSED and v.label == "not assessed (smoke)"
    assert v.estimate is not None   # the code path ran
    # a claim whose cells the smoke plan leaves out says nothing either, and says which cells
    assert judge(make_claim(cells=("p1", "p2"), every_cell=True), runs, None, "smoke").verdict == NOT_ASSESSED
    left_out = judge(make_claim(cells=("p2", "p3"), every_cell=True), runs, None, "smoke")
    assert left_out.verdict == NOT_ASSESSED and "p2, p3" in left_out.reason


def test_too_few_seeds_at_full_scale_is_not_assessed_with_the_reason():
    m, b = strong(n=3)
    v = judge(make_claim(), make_runs({("p1", "m"): m, ("p1", "b"): b}), None, "full")
    assert v.verdict == NOT_ASSESSED and v.label == "not assessed (n = 3 < 5 seeds)"


def test_not_run_not_testable_and_runs_of_another_scale():
    m, b = strong()
    runs = make_runs({("p1", "m"): m, ("p1", "b"): b}, scale="smoke")
    assert judge(make_claim(), runs, None, "full").verdict == NOT_RUN   # smoke runs never count at full scale
    only_method = make_runs({("p1", "m"): m})
    v = judge(make_claim(), only_method, None, "full")
    assert v.verdict == NOT_RUN and "b" in v.reason
    v = judge(make_claim(not_testable="ImageNet is not available offline"), only_method, None, "full")
    assert v.verdict == NOT_TESTABLE


def test_failed_and_nonfinite_diverged_runs_are_dropped_with_a_note():
    m, b = strong(n=6)
    m[5] = float("nan")
    runs = make_runs({("p1", "m"): m, ("p1", "b"): b},
                     status={("p1", "m", 5): "diverged", ("p1", "b", 4): "failed"})
    v = judge(make_claim(), runs, None, "full")
    assert v.n == 4 and v.verdict == NOT_ASSESSED          # 4 shared usable seeds < 5
    notes = " ".join(v.notes)
    assert "1 failed" in notes and "diverged" in notes and "without a finite" in notes


def test_ambiguous_selection_is_refused():
    m, b = strong()
    runs = make_runs({("p1", "m"): m + m, ("p1", "b"): b + b}, seeds=list(range(5)) * 2)
    with pytest.raises(InputError, match="several runs with seed"):
        judge(make_claim(), runs, None, "full")
    with pytest.raises(InputError, match="tags.stage"):
        judge(make_claim(select={"tags.stage": "final"}), runs, None, "full")


def test_family_correction_changes_a_borderline_verdict():
    b = BASE[:5]
    diffs = 0.01 + 0.012 * np.array([-0.9, 0.3, -0.2, 0.9, 0.55])
    p = stats.paired_comparison(b + diffs, b).p
    assert 0.025 < p < 0.05      # significant alone, not after Holm over two equal p-values
    runs = make_runs({("p1", "m"): list(b + diffs), ("p1", "b"): list(b),
                      ("p2", "m"): list(b + diffs), ("p2", "b"): list(b)})
    claims = [make_claim(id="a", cells=("p1",), delta_star=0.001),
              make_claim(id="b", cells=("p2",), delta_star=0.001)]
    alone = judge_all(claims, runs, None, "full", families={"f": Family("f", "none")})
    holm = judge_all(claims, runs, None, "full", families={"f": Family("f", "holm")})
    assert [v.verdict for v in alone] == [REPLICATED, REPLICATED]
    assert [v.verdict for v in holm] == [INCONCLUSIVE, INCONCLUSIVE]
    assert holm[0].p_adjusted == pytest.approx(min(1.0, 2 * p))
    # the reported interval is the one the adjusted decision used: it reaches below 0
    assert holm[0].interval[0] < 0 < alone[0].interval[0]


def published_frame(rows):
    cols = ["paper", "claim_id", "cell", "arm", "metric", "split", "statistic", "aggregation", "value", "sd", "n",
            "source", "tier", "note"]
    base = dict(paper="core", claim_id="c", metric="accuracy", split="test", statistic="final", aggregation="mean",
                sd=float("nan"), source="test", note="")
    frame = pd.DataFrame([{**base, **r} for r in rows], columns=cols)
    frame["n"] = frame["n"].astype("Int64")
    return frame


def test_baseline_check_gates_replicated_and_single_values_use_the_prediction_interval():
    m, b = strong()
    runs = make_runs({("p1", "m"): m, ("p1", "b"): b})
    claim = make_claim(baseline_tolerance=0.01, published_baseline="Base", published_method="Meth")
    good = published_frame([dict(cell="p1", arm="Base", value=float(np.mean(b)) + 0.005, n=30, tier="paper"),
                            dict(cell="p1", arm="Meth", value=float(np.mean(m)), n=1, tier="paper")])
    v = judge(claim, runs, good, "full")
    assert v.verdict == REPLICATED and v.baseline_check is True
    assert v.published_in_prediction_interval is True
    assert v.published_effect == pytest.approx(float(np.mean(m)) - float(np.mean(b)) - 0.005)
    bad = good.assign(value=[float(np.mean(b)) + 0.05, 2.0])
    v = judge(claim, runs, bad, "full")
    assert v.verdict == INCONCLUSIVE and v.baseline_check is False
    assert v.published_in_prediction_interval is False
    # a summary-tier baseline is shown but never judged: the check cannot pass
    v = judge(claim, runs, good.assign(tier="summary"), "full")
    assert v.baseline_check is False and v.verdict == INCONCLUSIVE


def test_up_to_claims_are_tested_at_the_named_cell_only():
    m, b = strong()
    values = {("best", "m"): m, ("best", "b"): b, ("named", "m"): list(np.array(b) + 0.0002), ("named", "b"): b}
    claim = make_claim(cells=("named", "best"), up_to_cell="named")
    v = judge(claim, make_runs(values), None, "full")
    assert v.verdict == CONTRADICTED and [c.cell for c in v.cells] == ["named"]


def test_median_aggregation_and_less_direction():
    b = BASE[:8]
    claim = make_claim(quantity=Quantity("loss", "test", "final", "median"), direction="less", min_seeds=8,
                       delta_star=0.001)
    runs = make_runs({("p1", "m"): list(b - 0.05), ("p1", "b"): list(b)}, column="final.test.loss")
    v = judge(claim, runs, None, "full")
    assert v.verdict == REPLICATED and v.estimate == pytest.approx(-0.05)
    assert v.p == pytest.approx(2 / 2 ** 8)  # sign test, all 8 differences negative


def test_judge_all_reads_families_from_the_claims_file_and_frames_cells():
    claims = parse_claims({
        "families": {"f": {"correction": "bh", "alpha": 0.05}},
        "claims": [{"id": "x", "paper": "core", "statement": "s",
                    "quantity": {"metric": "accuracy", "split": "test", "value": "final", "aggregation": "mean"},
                    "arms": {"method": "m", "baseline": "b"}, "direction": "greater", "delta_star": 0.01,
                    "cells": ["p1", "p2"], "family": "f", "every_cell": False, "min_seeds": 5}]})
    values = {}
    for cell in ("p1", "p2"):
        values[(cell, "m")], values[(cell, "b")] = strong()
    verdicts = judge_all(claims, make_runs(values), None, "full")
    assert isinstance(claims, ClaimSet) and verdicts[0].verdict == REPLICATED
    frame = verdict_frame(verdicts)
    assert frame["cell"].isna().tolist() == [True, False, False] and list(frame["cell"])[1:] == ["p1", "p2"]
    assert list(frame["verdict"]) == [REPLICATED] * 3
