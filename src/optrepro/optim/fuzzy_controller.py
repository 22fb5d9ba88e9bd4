"""The fuzzy controller of the fuzzy second-order method (Bensadok & Babar, arXiv 2403.15416), by hand.

The paper's rule base (arXiv 2403.15416, §3 onward) could not be read: the rule bases here are our own
illustrative ones, given as data (`FuzzySystem`, `RULE_BASES`) so that a spec picks one by name (the
optimizer's `rule_base`) and another rule base or universe can be swapped in.
Mamdani inference: min AND, min implication, max aggregation, centroid over a sampled output universe; each
variable has triangular terms with shoulders at the universe ends (as skfuzzy.trimf). Pure numpy, a few
microseconds per call; tests check it against scikit-fuzzy.

Inputs: x1 = relative change of the EMA-smoothed loss over the last `fuzzy_every` steps, clipped to [-1, 1];
x2 = training progress t/T in [0, 1]. Outputs: log10(lr) on [log10 lr_min, log10 lr_max] and beta3 on
[beta3_min, beta3_max].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from optrepro.registry import unknown

TERMS = ("low", "mid", "high")


def three_terms(lo: float, hi: float) -> tuple[tuple[float, float, float], ...]:
    mid = (lo + hi) / 2
    return ((lo, lo, mid), (lo, mid, hi), (mid, hi, hi))


def trimf(x: np.ndarray, abc: tuple[float, float, float]) -> np.ndarray:
    """Triangular membership as skfuzzy.trimf (a == b or b == c makes a shoulder)."""
    a, b, c = abc
    x = np.asarray(x, dtype=float)
    y = np.zeros_like(x)
    if a != b:
        m = (a < x) & (x < b)
        y[m] = (x[m] - a) / (b - a)
    if b != c:
        m = (b < x) & (x < c)
        y[m] = (c - x[m]) / (c - b)
    y[x == b] = 1.0
    return y


@dataclass
class FuzzySystem:
    input_ranges: tuple[tuple[float, float], tuple[float, float]]
    output_ranges: dict[str, tuple[float, float]]
    rules: dict[str, list[list[int]]]  # output -> 3x3 table of term indices, rows x1 term, columns x2 term
    resolution: int = 101
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name, table in self.rules.items():
            if name not in self.output_ranges:
                raise unknown("output of a rule table", name, self.output_ranges)
            if np.shape(table) != (3, 3) or not np.isin(table, (0, 1, 2)).all():
                raise ValueError(f"rule table {name!r} must be 3x3 of term indices 0 (low), 1 (mid), 2 (high)")
        self._in_terms = [three_terms(*r) for r in self.input_ranges]
        self._out = {}
        for name, (lo, hi) in self.output_ranges.items():
            universe = np.linspace(lo, hi, self.resolution)
            memberships = np.stack([trimf(universe, abc) for abc in three_terms(lo, hi)])  # (3, N)
            self._out[name] = (universe, memberships, np.asarray(self.rules[name]))

    def __call__(self, x1: float, x2: float) -> dict[str, float]:
        lo1, hi1 = self.input_ranges[0]
        lo2, hi2 = self.input_ranges[1]
        x1, x2 = min(max(x1, lo1), hi1), min(max(x2, lo2), hi2)
        mu1 = np.array([trimf(np.array([x1]), abc)[0] for abc in self._in_terms[0]])
        mu2 = np.array([trimf(np.array([x2]), abc)[0] for abc in self._in_terms[1]])
        firing = np.minimum.outer(mu1, mu2)  # (3, 3): AND = min
        out = {}
        for name, (universe, memberships, table) in self._out.items():
            # strength of each output term = max firing over the rules that conclude it
            strength = np.array([firing[table == k].max(initial=0.0) for k in range(3)])
            aggregated = np.minimum(strength[:, None], memberships).max(axis=0)
            total = aggregated.sum()
            out[name] = float((aggregated * universe).sum() / total) if total > 0 else float(universe.mean())
        return out


# Rule bases, by name (the optimizer's `rule_base` hyperparameter). Each gives, per output, a 3x3 table of term
# indices: rows x1 = low/mid/high (loss falling / flat / rising), columns x2 = low/mid/high (early / middle / late
# in training). All three are our own (the paper's rule base could not be read); the two alternatives are the
# sensitivity test of the register entry fuzzy-rule-base: each keeps one input and drops the other.
RULE_BASES: dict[str, dict[str, list[list[int]]]] = {
    # both inputs: a falling loss early -> high lr, low beta3; a rising loss late -> low lr, high beta3
    "default": {"log10_lr": [[2, 1, 1], [1, 1, 0], [1, 0, 0]],
                "beta3": [[0, 1, 2], [1, 1, 2], [1, 2, 2]]},
    # feedback only (x2 ignored): lr follows the loss trend, beta3 smooths more when the loss rises
    "loss_only": {"log10_lr": [[2, 2, 2], [1, 1, 1], [0, 0, 0]],
                  "beta3": [[1, 1, 1], [1, 1, 1], [2, 2, 2]]},
    # progress only (x1 ignored): a schedule in rule form, lr high -> mid -> low, beta3 low -> mid -> high
    "progress_only": {"log10_lr": [[2, 1, 0], [2, 1, 0], [2, 1, 0]],
                      "beta3": [[0, 1, 2], [0, 1, 2], [0, 1, 2]]},
}
DEFAULT_LR_RULES = RULE_BASES["default"]["log10_lr"]
DEFAULT_BETA3_RULES = RULE_BASES["default"]["beta3"]


def rule_system(rule_base: str = "default", lr_min: float = 1e-4, lr_max: float = 1e-2, beta3_min: float = 0.5,
                beta3_max: float = 0.999) -> FuzzySystem:
    """The controller for a named rule base: inputs x1 in [-1, 1], x2 in [0, 1]; outputs log10(lr) on
    [log10 lr_min, log10 lr_max] and beta3 on [beta3_min, beta3_max]."""
    if rule_base not in RULE_BASES:
        raise unknown("rule_base (the fuzzy controller's rules)", rule_base, RULE_BASES)
    if not 0 < lr_min < lr_max:
        raise ValueError(f"need 0 < lr_min < lr_max (got {lr_min}, {lr_max})")
    if not 0 <= beta3_min < beta3_max < 1:
        raise ValueError(f"need 0 <= beta3_min < beta3_max < 1 (got {beta3_min}, {beta3_max})")
    return FuzzySystem(input_ranges=((-1.0, 1.0), (0.0, 1.0)),
                       output_ranges={"log10_lr": (float(np.log10(lr_min)), float(np.log10(lr_max))),
                                      "beta3": (beta3_min, beta3_max)},
                       rules={name: [list(row) for row in table] for name, table in RULE_BASES[rule_base].items()})


def default_system(lr_min: float = 1e-4, lr_max: float = 1e-2, beta3_min: float = 0.5,
                   beta3_max: float = 0.999) -> FuzzySystem:
    return rule_system("default", lr_min, lr_max, beta3_min, beta3_max)
