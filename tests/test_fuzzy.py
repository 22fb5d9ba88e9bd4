"""Fuzzy second-order method: FD curvature on quadratics, the controller against scikit-fuzzy, the optimizer."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from optrepro.optim.fuzzy import FuzzySecondOrder
from optrepro.optim.fuzzy_controller import DEFAULT_BETA3_RULES, DEFAULT_LR_RULES, default_system


def quadratic(n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    hessian = a @ a.T + torch.diag(torch.rand(n, generator=gen, dtype=torch.float64) + 0.5)
    w = nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64))

    def closure(backward=True):
        w.grad = None
        with torch.enable_grad():
            loss = 0.5 * w @ hessian @ w
            loss.backward()
        return loss.detach()
    return w, hessian, closure


def probe(fd_mode, seed=0):
    w, hessian, closure = quadratic()
    opt = FuzzySecondOrder([w], fd_mode=fd_mode, fuzzy=False, seed=seed)
    closure()
    grads = [w.grad.clone()]
    return opt.hessian_probe(closure, [w], grads)[0], hessian


def test_literal_reading_gives_row_sums_not_the_diagonal():
    estimate, hessian = probe("ones")
    assert torch.allclose(estimate, hessian.sum(1), atol=1e-8)  # (H 1)_i: the bias the dossier computes
    assert not torch.allclose(estimate, torch.diagonal(hessian), atol=0.1)


def test_rademacher_estimate_is_unbiased():
    estimates = torch.stack([probe("rademacher", seed)[0] for seed in range(150)])
    _, hessian = probe("rademacher")
    diag = torch.diagonal(hessian)
    error = (estimates.mean(0) - diag).norm() / diag.norm()
    single = (estimates[0] - diag).norm() / diag.norm()
    assert error < 0.1 < single  # the average converges, one probe does not


def test_controller_matches_scikit_fuzzy():
    skfuzzy = pytest.importorskip("skfuzzy")
    from skfuzzy import control as ctrl
    ours = default_system()
    terms = ("low", "mid", "high")

    def variable(kind, name, lo, hi):
        universe = np.linspace(lo, hi, 101)
        var = kind(universe, name)
        mid = (lo + hi) / 2
        for term, abc in zip(terms, ((lo, lo, mid), (lo, mid, hi), (mid, hi, hi))):
            var[term] = skfuzzy.trimf(universe, list(abc))
        return var
    x1, x2 = variable(ctrl.Antecedent, "x1", -1, 1), variable(ctrl.Antecedent, "x2", 0, 1)
    lr, b3 = variable(ctrl.Consequent, "lr", -4, -2), variable(ctrl.Consequent, "b3", 0.5, 0.999)
    rules = [ctrl.Rule(x1[terms[i]] & x2[terms[j]], out[terms[table[i][j]]])
             for i in range(3) for j in range(3) for out, table in ((lr, DEFAULT_LR_RULES), (b3, DEFAULT_BETA3_RULES))]
    sim = ctrl.ControlSystemSimulation(ctrl.ControlSystem(rules))
    rng = np.random.default_rng(0)
    for a, b in zip(rng.uniform(-0.95, 0.95, 40), rng.uniform(0.02, 0.98, 40)):
        sim.input["x1"], sim.input["x2"] = a, b
        sim.compute()
        out = ours(a, b)
        assert abs(out["log10_lr"] - sim.output["lr"]) <= 0.01 * 2  # within 1 % of the universe
        assert abs(out["beta3"] - sim.output["b3"]) <= 0.01 * 0.499


def test_optimizer_descends_and_round_trips():
    w, hessian, closure = quadratic()
    opt = FuzzySecondOrder([w], fd_mode="rademacher", total_steps=200, fuzzy_every=10, lr=0.3, lr_min=0.05, lr_max=1.0)
    first = float(closure())
    for _ in range(20):
        opt.step(closure)
    assert float(closure()) < 0.5 * first
    assert opt.internals()["fuzzy_calls"] == 2
    w2 = nn.Parameter(w.detach().clone())
    opt2 = FuzzySecondOrder([w2], fd_mode="rademacher", total_steps=200, fuzzy_every=10, lr=0.3, lr_min=0.05, lr_max=1.0)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.internals() == opt.internals()


def test_bad_choices():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="Valid choices: ones, rademacher, update"):
        FuzzySecondOrder(p, fd_mode="hutchinson", total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        FuzzySecondOrder(p)
