"""Line searches: clean/as-run trial semantics with StepClosure, Armijo acceptance, slope estimate, state."""
import copy
import math

import pytest
import torch
from torch import nn

from optrepro.closure import NoiseRNG, StepClosure, batchnorm_buffers
from optrepro.optim.line_search import ALSALS, SLS, AdaSLS, AdamSLS
from optrepro.problems.base import Output

ALL = [SLS, AdaSLS, AdamSLS, ALSALS]


def regression_forward(model, batch, carry):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return Output(loss=loss, sums={"loss": loss.detach() * len(x)}, count=len(x), carry=carry)


def bn_dropout_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 1))


def data(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, x @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)


def record_dropout_masks(model):
    masks = []
    model[2].register_forward_hook(lambda m, inp, out: masks.append(((out == 0) & (inp[0] != 0)).clone()))
    return masks


def test_alsals_clean_mode_keeps_batchnorm_and_replays_dropout():
    batch = data()
    single = bn_dropout_model()
    StepClosure(single, regression_forward, [batch], noise=NoiseRNG("cpu"))(backward=True)  # one gradient evaluation only
    model = bn_dropout_model()
    masks = record_dropout_masks(model)
    opt = ALSALS(model.parameters(), mode="clean")
    closure = StepClosure(model, regression_forward, [batch], noise=NoiseRNG("cpu"), trial_batchnorm=opt.trial_batchnorm)
    opt.step(closure)
    assert closure.calls >= 3  # gradient, slope probe, trial
    for ours, reference in zip(batchnorm_buffers(model), batchnorm_buffers(single)):
        assert torch.equal(ours, reference)
    assert len(masks) == closure.calls and all(torch.equal(m, masks[0]) for m in masks)
    assert masks[0].any()


def test_alsals_as_run_mode_moves_batchnorm_at_trial_points():
    batch = data()
    single = bn_dropout_model()
    StepClosure(single, regression_forward, [batch], noise=NoiseRNG("cpu"))(backward=True)
    model = bn_dropout_model()
    opt = ALSALS(model.parameters(), mode="as-run")
    assert opt.trial_batchnorm == "moving"
    opt.step(StepClosure(model, regression_forward, [batch], noise=NoiseRNG("cpu"), trial_batchnorm=opt.trial_batchnorm))
    running_mean = batchnorm_buffers(model)[0]
    assert not torch.equal(running_mean, batchnorm_buffers(single)[0])
    assert int(batchnorm_buffers(model)[2]) > 1  # num_batches_tracked counted every trial forward


def quadratic(dim=5, dtype=torch.float64):
    torch.manual_seed(3)
    a = torch.randn(dim, dim, dtype=dtype)
    hessian = a @ a.T / dim + torch.eye(dim, dtype=dtype)
    w = nn.Parameter(torch.randn(dim, dtype=dtype))

    def closure(backward=True):
        if backward:
            w.grad = None
        with torch.enable_grad() if backward else torch.no_grad():
            loss = 0.5 * w @ hessian @ w
            if backward:
                loss.backward()
        return loss.detach()
    return w, hessian, closure


def test_sls_step_satisfies_armijo_and_reset_options():
    w, hessian, closure = quadratic()
    opt = SLS([w], init_step_size=10.0, c=0.1, reset_option=2)
    w0 = w.detach().clone()
    loss0 = float(0.5 * w0 @ hessian @ w0)
    g = hessian @ w0
    opt.step(closure)
    eta = opt.internals()["step_size"]
    assert torch.allclose(w.detach(), w0 - eta * g)
    assert float(0.5 * w.detach() @ hessian @ w.detach()) <= loss0 - 0.1 * eta * float(g @ g) + 1e-12
    assert opt.internals()["last_backtracks"] > 0  # 10 is far too long a step for this quadratic
    assert float(eta / 10.0) == pytest.approx(0.9 ** opt.internals()["last_backtracks"])


def reset_by_hand(option, eta, init, gamma, n):
    """The step the search starts from: option 0 keeps eta, 1 multiplies it by gamma**(1/n), 2 restarts at init."""
    return {0: eta, 1: eta * gamma ** (1.0 / n), 2: init}[option]


@pytest.mark.parametrize("cls", [SLS, AdaSLS, AdamSLS])
@pytest.mark.parametrize("option", [0, 1, 2])
def test_reset_options_give_the_exact_start_of_each_search(cls, option):
    # gamma**(1/n) = 2**(1/4) is no power of beta_b = 0.9, so eta / 0.9**backtracks tells the three options apart
    w, _, closure = quadratic()
    init, gamma, n = 10.0, 2.0, 4
    opt = cls([w], init_step_size=init, reset_option=option, gamma=gamma, n_batches_per_epoch=n)
    eta = init  # the stored step before step 1 is init_step_size; the reset is applied on step 1 too
    for _ in range(3):
        start = reset_by_hand(option, eta, init, gamma, n)
        opt.step(closure)
        eta = opt.internals()["step_size"]
        assert eta == pytest.approx(start * 0.9 ** opt.internals()["last_backtracks"], rel=1e-12)
    assert opt.internals()["backtracks"] > 0  # 10 is far too long a first step: backtracking was exercised


def test_adamsls_speed_up_moves_averages_only_on_searching_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    batch = data()
    opt = AdamSLS(model.parameters(), c=0.3, beta_s=0.99, speed_up=True)
    tracked = ("avg_pp_norm", "step_size_fast", "step_size_slow")
    skipped = 0
    for step in range(300):  # the slow EMA needs ~100s of steps before fast/slow is near 1 and searches are skipped
        before = opt.internals()
        rows = torch.randperm(64, generator=torch.Generator().manual_seed(step))[:16]
        opt.step(StepClosure(model, regression_forward, [(batch[0][rows], batch[1][rows])], noise=NoiseRNG("cpu")))
        after = opt.internals()
        if after["searched"] == before["searched"]:
            skipped += 1
            assert after["forward_evals"] == before["forward_evals"] + 1  # gradient only, no trial
            assert all(after[k] == before[k] for k in tracked), step
        else:
            assert all(after[k] != before[k] for k in tracked), step
    assert opt.internals()["searched"] >= 10 and skipped > 0  # always searches the first 10 steps, then skips


def test_adasls_searches_even_at_a_zero_gradient():
    # ada_sls has no small-gradient skip: the trial at distance 0 is evaluated and accepted at the reset step
    w, _, closure = quadratic()
    with torch.no_grad():
        w.zero_()  # the minimum: gradient 0
    opt = AdaSLS([w], init_step_size=1.0, reset_option=1, n_batches_per_epoch=500)
    opt.step(closure)
    s = opt.internals()
    assert s["forward_evals"] == 2 and s["last_backtracks"] == 0 and s["loss_next"] == s["loss"] == 0.0
    assert s["step_size"] == 2.0 ** (1 / 500)


def test_alsals_accepts_a_nan_trial_as_the_authors_code_does():
    # A NaN loss makes the smoothed Armijo comparison false, so the trial "passes" (alsals.yaml: alsals-nan-trial-accepted)
    w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

    def closure(backward=True):
        if backward:
            w.grad = None
        with torch.enable_grad() if backward else torch.no_grad():
            loss = (w ** 2).sum()
            loss = torch.where(w.abs().max() > 3, torch.tensor(float("nan"), dtype=w.dtype), loss)
            if backward:
                loss.backward()
        return loss.detach()

    opt = ALSALS([w], init_step_size=100.0)
    opt.step(closure)
    s = opt.internals()
    assert s["last_backtracks"] == 0 and s["step_size"] == pytest.approx(100.0 / 0.999)
    assert math.isnan(s["loss_next"]) and math.isnan(s["decrease_ema"])
    assert w.abs().max() > 3  # the far trial point, where the loss is NaN, was taken


def test_alsals_growth_and_smoothed_armijo_match_a_hand_computation():
    # Two steps on f(w) = 0.5 w^T H w, recomputed here from the authors' sls/Ken_sls.py::line_search
    w, hessian, closure = quadratic(dim=3)
    f = lambda x: float(0.5 * x @ hessian @ x)
    init, c = 1.5, 0.5  # here the raw (unsmoothed) test would take 18 backtracks at step 2, the smoothed one 2
    opt = ALSALS([w], init_step_size=init, c=c, probe_eps=1e-6)
    x = w.detach().clone()
    m, v, eta, slope_ema, dec_ema = torch.zeros_like(x), torch.zeros_like(x), init, 0.0, 0.0
    backtracks = []
    for t in (1, 2):
        g = hessian @ x
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        d = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
        eta = eta / 0.999  # growth before the probe
        slope = (f(x) - f(x - 1e-6 * d)) / 1e-6
        slope_ema = 0.99 * slope_ema + 0.01 * slope
        c_eff = c if slope_ema > 0 else 1 / c
        dec, k = f(x) - f(x - eta * d), 0
        while 0.99 * dec_ema + 0.01 * dec < c_eff * eta * slope_ema:  # the smoothed Armijo test
            eta, k = 0.9 * eta, k + 1
            dec = f(x) - f(x - eta * d)
        dec_ema = 0.99 * dec_ema + 0.01 * dec
        x = x - eta * d
        backtracks.append(k)

        opt.step(closure)
        s = opt.internals()
        assert s["last_backtracks"] == k
        assert s["step_size"] == pytest.approx(eta, rel=1e-12)
        assert s["slope_ema"] == pytest.approx(slope_ema, rel=1e-6)
        assert s["decrease_ema"] == pytest.approx(dec_ema, rel=1e-9)
        assert torch.allclose(w.detach(), x, rtol=0, atol=1e-12)
    assert backtracks == [5, 2]  # both steps backtrack, so the acceptance test itself is exercised


def test_alsals_finite_difference_slope_matches_directional_derivative():
    w, hessian, closure = quadratic()
    opt = ALSALS([w], probe_eps=1e-7)
    w0 = w.detach().clone()
    g = hessian @ w0
    direction = g / (g.abs() + 1e-8)  # Adam's first direction: m_hat/(sqrt(v_hat)+eps) = g/(|g|+eps)
    opt.step(closure)
    assert opt.internals()["slope"] == pytest.approx(float(g @ direction), rel=1e-5)
    assert opt.internals()["slope_ema"] == pytest.approx(0.01 * float(g @ direction), rel=1e-5)


def test_alsals_underflow_guard_bumps_probe():
    w, _, closure = quadratic(dtype=torch.float32)
    opt = ALSALS([w], probe_eps=1e-30)
    opt.step(closure)
    assert opt.internals()["numerical_error"] > 0
    assert opt.internals()["probe_eps"] > 1e-30


@pytest.mark.parametrize("cls", ALL)
def test_a_search_reads_the_host_once_per_loss_it_branches_on(cls, monkeypatch):
    # On a GPU each host read drains the device's queue. A step reads each trial's loss once, and the step's own
    # loss together with the first other number it needs (the SLS family's <g, P g>, ALSALS's probe loss);
    # ALSALS's cosine diagnostic stays on the device until internals() is read at a log point.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = data()
    opt = cls(model.parameters(), init_step_size=10.0)

    def closure(backward=True):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        if backward:
            loss.backward()
        return loss

    reads = []
    for method in ("__float__", "item", "tolist"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda t, *a, _original=original, **k: reads.append(1) or _original(t, *a, **k))
    per_step, expected = [], []
    for _ in range(5):
        reads.clear()
        evals = opt.scalars["forward_evals"]
        opt.step(closure)
        per_step.append(len(reads))
        # forward passes this step, less the one whose loss ALSALS reads with the step's own
        expected.append(opt.scalars["forward_evals"] - evals - (cls is ALSALS))
    monkeypatch.undo()
    assert per_step == expected
    assert opt.scalars["backtracks"] > 0  # a step of 10 is far too long: trials after the first were exercised
    if cls is ALSALS:
        cos = opt.internals()["cos_grad_momentum"]  # read here, at the "log point"
        assert isinstance(cos, float) and -1.0 <= cos <= 1.0 and cos != 0.0


@pytest.mark.parametrize("cls", ALL)
def test_loss_falls_and_internals_logged(cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    batch = data()
    opt = cls(model.parameters())
    losses = []
    for step in range(30):
        losses.append(float(opt.step(StepClosure(model, regression_forward, [batch], noise=NoiseRNG("cpu")))))
    assert losses[-1] < 0.5 * losses[0]
    internals = opt.internals()
    assert internals["step"] == 30 and internals["step_size"] > 0 and internals["forward_evals"] >= 60
    assert all(isinstance(v, float) for v in internals.values())


@pytest.mark.parametrize("cls", ALL)
def test_state_dict_round_trip(cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    batch = data()
    opt = cls(model.parameters())
    for step in range(3):
        opt.step(StepClosure(model, regression_forward, [batch], noise=NoiseRNG("cpu")))
    clone = copy.deepcopy(model)
    opt2 = cls(clone.parameters())
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.internals() == opt.internals()
    for net, o in ((model, opt), (clone, opt2)):
        o.step(StepClosure(net, regression_forward, [batch], noise=NoiseRNG("cpu")))
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_errors_name_the_bad_value():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="Valid choices: as-run, clean"):
        ALSALS(p, mode="asrun")
    with pytest.raises(ValueError, match="reset_option"):
        SLS(p, reset_option=5)
    with pytest.raises(ValueError, match="adagrad, adam, amsgrad"):
        AdaSLS(p, base_opt="sgd")
    with pytest.raises(RuntimeError, match="requires a closure"):
        SLS(p).step()
