"""Fuzzy second-order method: FD curvature on quadratics, the controller against scikit-fuzzy, the optimizer."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from optrepro import optim
from optrepro.optim.fuzzy import FuzzySecondOrder
from optrepro.optim.fuzzy_controller import (DEFAULT_BETA3_RULES, DEFAULT_LR_RULES, RULE_BASES, FuzzySystem,
                                             rule_system)
from optrepro.train import _autocast


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
    assert torch.allclose(estimate, hessian.sum(1), atol=1e-8)  # (H 1)_i: the bias of the literal reading
    assert not torch.allclose(estimate, torch.diagonal(hessian), atol=0.1)


def test_rademacher_estimate_is_unbiased():
    estimates = torch.stack([probe("rademacher", seed)[0] for seed in range(150)])
    _, hessian = probe("rademacher")
    diag = torch.diagonal(hessian)
    error = (estimates.mean(0) - diag).norm() / diag.norm()
    single = (estimates[0] - diag).norm() / diag.norm()
    assert error < 0.1 < single  # the average converges, one probe does not


@pytest.mark.parametrize("rule_base", sorted(RULE_BASES))
def test_controller_matches_scikit_fuzzy(rule_base):
    """Every registered rule base, on its registry universes, against scikit-fuzzy's Mamdani system (min AND,
    min implication, max aggregation, centroid on the same 101-point universes)."""
    skfuzzy = pytest.importorskip("skfuzzy")
    from skfuzzy import control as ctrl
    ours = rule_system(rule_base)
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
    tables = RULE_BASES[rule_base]
    rules = [ctrl.Rule(x1[terms[i]] & x2[terms[j]], out[terms[table[i][j]]])
             for i in range(3) for j in range(3) for out, table in ((lr, tables["log10_lr"]), (b3, tables["beta3"]))]
    sim = ctrl.ControlSystemSimulation(ctrl.ControlSystem(rules))
    rng = np.random.default_rng(0)
    outputs = []
    for a, b in zip(rng.uniform(-0.95, 0.95, 40), rng.uniform(0.02, 0.98, 40)):
        sim.input["x1"], sim.input["x2"] = a, b
        sim.compute()
        out = ours(a, b)
        assert abs(out["log10_lr"] - sim.output["lr"]) <= 0.01 * 2  # within 1 % of the universe
        assert abs(out["beta3"] - sim.output["b3"]) <= 0.01 * 0.499
        outputs.append(out["log10_lr"])
    assert np.ptp(outputs) > 0.3  # the grid exercises the rules: the lr moves across its universe


def test_rule_bases_differ_and_are_checked():
    # the alternatives are a sensitivity test: each ignores one input, the default uses both
    grid = [(x1, x2) for x1 in (-0.8, 0.0, 0.8) for x2 in (0.1, 0.5, 0.9)]
    lr = {name: [rule_system(name)(*x)["log10_lr"] for x in grid] for name in RULE_BASES}
    assert len({tuple(np.round(v, 6)) for v in lr.values()}) == len(RULE_BASES)
    loss_only = rule_system("loss_only")
    assert loss_only(0.8, 0.1) == loss_only(0.8, 0.9)  # x2 ignored
    progress_only = rule_system("progress_only")
    assert progress_only(-0.8, 0.3) == progress_only(0.8, 0.3)  # x1 ignored
    with pytest.raises(ValueError, match="Valid choices: default, loss_only, progress_only"):
        rule_system("aggressive")
    with pytest.raises(ValueError, match="rule_base"):
        FuzzySecondOrder([nn.Parameter(torch.zeros(2))], total_steps=10, rule_base="aggressive")


def test_rule_base_reaches_the_controller():
    trajectories = {}
    for name in RULE_BASES:
        model, closure = mlp_closure()
        opt = optim.build("fuzzy_second_order", model, total_steps=30, fuzzy_every=3, rule_base=name)
        lrs = []
        for _ in range(30):
            opt.step(closure)
            lrs.append(opt.internals()["lr"])
        trajectories[name] = lrs
    assert len({tuple(v) for v in trajectories.values()}) == len(RULE_BASES)


def test_internals_are_the_controllers_outputs_when_it_runs():
    model, closure = mlp_closure()
    opt = optim.build("fuzzy_second_order", model, total_steps=20, fuzzy_every=4)
    opt.step(closure)
    first = opt.internals()
    assert set(first) == {"lr", "beta3", "loss_ema", "fuzzy_calls", "controller_step", "clamped_fraction"}
    assert first["fuzzy_calls"] == 0 and first["controller_step"] == 0
    for _ in range(8):
        opt.step(closure)
    s = opt.internals()
    assert s["fuzzy_calls"] == 2 and s["controller_step"] == 8
    assert s["lr"] == opt.param_groups[0]["lr"] and s["beta3"] == opt.param_groups[0]["beta3"]
    # without the controller: only the curvature clamp, and the group's lr is the step size
    model, closure = mlp_closure()
    fd = optim.build("fd_second_order", model)
    fd.step(closure)
    assert set(fd.internals()) == {"clamped_fraction"}
    with pytest.raises(ValueError, match="fuzzy_every"):
        optim.build("fd_second_order", model, fuzzy_every=10)  # the controller's knobs are not its own
    with pytest.raises(ValueError, match="'fuzzy'"):
        optim.build("fuzzy_second_order", model, fuzzy=False)  # the declaration holds for every spec


def test_clamped_fraction_counts_the_denominators_below_eps():
    w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    curvature = torch.tensor([1.0, 1e-6, 2.0, -1e-7], dtype=torch.float64)  # two below eps_curv = 1e-4

    def closure(backward=True):
        w.grad = None
        with torch.enable_grad():
            (0.5 * (curvature * w * w).sum()).backward()
    opt = FuzzySecondOrder([w], fuzzy=False, fd_mode="ones", beta3=0.5)
    opt.step(closure)
    assert opt.internals()["clamped_fraction"] == 0.5


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


def mlp_closure(seed=0, precision="fp32"):
    """fp32 MLP (autocast only casts fp32), fixed batch; the forward in the training loop's autocast for
    `precision`, as the trainer's closure runs it: its full_precision option turns that autocast off."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)

    def closure(backward=True, full_precision=False):
        for p in model.parameters():
            p.grad = None
        with torch.enable_grad():
            with _autocast({"precision": precision}, torch.device("cpu"), full_precision):
                loss = ((model(x) - y) ** 2).mean()
            loss.backward()
        return loss.detach()
    return model, closure


def first_step_curvature(outer_autocast: bool, precision: str = "fp32"):
    model, closure = mlp_closure(precision=precision)
    opt = FuzzySecondOrder(model.parameters(), fuzzy=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer_autocast):
        opt.step(closure)
    return torch.cat([opt.state[p]["exp_avg_curv"].flatten() for p in model.parameters()])


def test_probe_runs_in_fp32_under_an_outer_autocast():
    # both gradients of the finite difference (g0 and g at w + r v) in fp32; bf16 rounding / r
    # would swamp the curvature
    reference = first_step_curvature(outer_autocast=False)
    assert torch.allclose(first_step_curvature(outer_autocast=True), reference, rtol=1e-5, atol=1e-6)


def test_probe_runs_in_fp32_when_the_training_loop_runs_bf16():
    # the trainer's forward enters its own bf16 autocast inside the closure; during the probe it stands down
    reference = first_step_curvature(outer_autocast=False)
    assert torch.allclose(first_step_curvature(outer_autocast=False, precision="bf16"), reference,
                          rtol=1e-5, atol=1e-6)


def test_probe_restores_weights_bit_exactly():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(100_000) * 0.05)
    before = p.detach().clone()

    def closure(backward=True):
        p.grad = None
        with torch.enable_grad():
            (p ** 2).sum().backward()
    opt = FuzzySecondOrder([p], fuzzy=False)
    closure()
    opt.hessian_probe(closure, [p], [p.grad.clone()])
    assert torch.equal(p.detach(), before)  # +r v then -r v would leave rounding drift


def test_controller_lr_is_written_into_the_param_groups():
    model, closure = mlp_closure()
    opt = FuzzySecondOrder(model.parameters(), total_steps=40, fuzzy_every=5, lr=0.05, lr_min=1e-3, lr_max=0.1)
    for _ in range(5):
        opt.step(closure)
    s = opt.internals()
    assert s["fuzzy_calls"] == 1 and s["lr"] != 0.05
    assert all(g["lr"] == s["lr"] and g["beta3"] == s["beta3"] for g in opt.param_groups)
    # the update uses the controller's lr: an outer schedule writing group["lr"] has no effect (register entry
    # fuzzy-lr-schedule)
    twin_model, twin_closure = mlp_closure()
    twin = FuzzySecondOrder(twin_model.parameters(), total_steps=40, fuzzy_every=5, lr=0.05, lr_min=1e-3, lr_max=0.1)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    twin_model.load_state_dict(model.state_dict())
    for g in twin.param_groups:
        g["lr"] = 123.0
    opt.step(closure)
    twin.step(twin_closure)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin_model.parameters()))


@pytest.mark.parametrize("fd_mode", ["ones", "update"])
def test_no_host_reads_between_controller_calls(monkeypatch, fd_mode):
    # read the loss only every fuzzy_every steps (a GPU sync otherwise); the clamped count waits too
    model, closure = mlp_closure()
    opt = FuzzySecondOrder(model.parameters(), fd_mode=fd_mode, total_steps=20, fuzzy_every=5)

    def forbidden(*args, **kwargs):
        raise AssertionError("device value read on the host between controller calls")
    with monkeypatch.context() as patch:
        for name in ("__float__", "__int__", "__index__", "__bool__", "item", "tolist"):
            patch.setattr(torch.Tensor, name, forbidden)
        for _ in range(4):
            opt.step(closure)
    opt.step(closure)  # the controller call reads the loss EMA
    assert opt.internals()["fuzzy_calls"] == 1
    assert 0.0 <= opt.internals()["clamped_fraction"] <= 1.0


def test_clip_rho_bounds_the_per_coordinate_step():
    moves = {}
    for clip in (None, 0.01):
        model, closure = mlp_closure()
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        FuzzySecondOrder(model.parameters(), lr=1.0, fuzzy=False, clip_rho=clip).step(closure)
        moves[clip] = (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).abs().max()
    assert moves[0.01] <= 0.01 * (1 + 1e-6) < moves[None]
    with pytest.raises(ValueError, match="clip_rho"):
        FuzzySecondOrder(model.parameters(), fuzzy=False, clip_rho=0.0)


@pytest.mark.parametrize("relative_step", [False, True])
def test_relative_step(relative_step):
    # f = sum(w^4)/4, g = w^3: the forward difference with step h is 3 w^2 + 3 w h + h^2 exactly (float64)
    w = nn.Parameter(torch.tensor([2.0, -0.5, 1e-5, 0.0, 30.0], dtype=torch.float64))

    def closure(backward=True):
        w.grad = None
        with torch.enable_grad():
            (w ** 4 / 4).sum().backward()
    r = 1e-3
    opt = FuzzySecondOrder([w], r=r, fuzzy=False, relative_step=relative_step)
    closure()
    estimate = opt.hessian_probe(closure, [w], [w.grad.clone()])[0]
    x = w.detach()
    h = r * x.abs().clamp_min(1e-3) if relative_step else torch.full_like(x, r)
    assert torch.allclose(estimate, 3 * x ** 2 + 3 * x * h + h ** 2, rtol=1e-6, atol=1e-12)


def test_custom_fuzzy_system():
    # a rule base that always says "high lr": the lr climbs by the capped ratio per call up to lr_max
    always_high = FuzzySystem(input_ranges=((-1.0, 1.0), (0.0, 1.0)),
                              output_ranges={"log10_lr": (-3.0, -1.0), "beta3": (0.5, 0.999)},
                              rules={"log10_lr": [[2] * 3] * 3, "beta3": DEFAULT_BETA3_RULES})
    model, closure = mlp_closure()
    opt = FuzzySecondOrder(model.parameters(), lr=1e-3, total_steps=100, fuzzy_every=2, max_lr_ratio=2.0,
                           fuzzy_system=always_high)
    for _ in range(2):
        opt.step(closure)
    assert opt.internals()["lr"] == pytest.approx(2e-3)  # the default system would not choose the top term here
    with pytest.raises(ValueError, match="not both"):
        FuzzySecondOrder(model.parameters(), total_steps=10, fuzzy_system=always_high, rule_base="loss_only")
    default = FuzzySecondOrder(model.parameters(), lr=1e-3, total_steps=100, fuzzy_every=2, max_lr_ratio=2.0)
    assert default.controller is not always_high
    bad = FuzzySystem(input_ranges=((-1.0, 1.0), (0.0, 1.0)), output_ranges={"lr": (0.0, 1.0)},
                      rules={"lr": DEFAULT_LR_RULES})
    with pytest.raises(ValueError, match="log10_lr"):
        FuzzySecondOrder(model.parameters(), total_steps=10, fuzzy_system=bad)


def test_diagonal_accuracy_table_measures_the_optimizers_probe():
    from optrepro.optim.diag_accuracy import diagonal_accuracy, fd_estimates, spd_quadratic

    hessian = spd_quadratic(60, 100.0, seed=1)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert torch.allclose(hessian, hessian.T) and float(eigenvalues.max() / eigenvalues.min()) == pytest.approx(100.0)
    # the literal reading is the row sums (fp32 finite difference of an exact quadratic: rounding only)
    ones = fd_estimates(hessian, "ones", 1)[0]
    assert torch.allclose(ones, hessian.sum(1), rtol=1e-3, atol=1e-2)
    rows = {(r["reading"], r["probes"]): r for r in diagonal_accuracy(dims=(60,), conditions=(100.0,),
                                                                      probes=(1, 100), seed=1)}
    diag = torch.diagonal(hessian)
    literal = float((hessian.sum(1) - diag).norm() / diag.norm())
    assert rows[("ones", 1)]["relative_error"] == pytest.approx(literal, rel=1e-3)
    # the unbiased reading converges as probes are averaged; the literal one has nothing to average
    assert rows[("rademacher", 100)]["relative_error"] < 0.5 * rows[("rademacher", 1)]["relative_error"]
    assert rows[("rademacher", 100)]["relative_error"] < 0.5 * rows[("ones", 1)]["relative_error"]
    assert rows[("hutchinson", 100)]["relative_error"] < 0.5 * rows[("hutchinson", 1)]["relative_error"]
    assert rows[("rademacher", 100)]["negative_fraction"] <= rows[("ones", 1)]["negative_fraction"]
