"""Line searches: clean/as-run trial semantics with StepClosure, Armijo acceptance, slope estimate, state."""
import copy

import pytest
import torch
from torch import nn

from optrepro.closure import StepClosure, batchnorm_buffers
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
    StepClosure(single, regression_forward, [batch], [7])(backward=True)  # one gradient evaluation only
    model = bn_dropout_model()
    masks = record_dropout_masks(model)
    opt = ALSALS(model.parameters(), mode="clean")
    closure = StepClosure(model, regression_forward, [batch], [7], trial_batchnorm=opt.trial_batchnorm)
    opt.step(closure)
    assert closure.calls >= 3  # gradient, slope probe, trial
    for ours, reference in zip(batchnorm_buffers(model), batchnorm_buffers(single)):
        assert torch.equal(ours, reference)
    assert len(masks) == closure.calls and all(torch.equal(m, masks[0]) for m in masks)
    assert masks[0].any()


def test_alsals_as_run_mode_moves_batchnorm_at_trial_points():
    batch = data()
    single = bn_dropout_model()
    StepClosure(single, regression_forward, [batch], [7])(backward=True)
    model = bn_dropout_model()
    opt = ALSALS(model.parameters(), mode="as-run")
    assert opt.trial_batchnorm == "moving"
    opt.step(StepClosure(model, regression_forward, [batch], [7], trial_batchnorm=opt.trial_batchnorm))
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
    # reset_option 0 continues from the accepted step (no backtrack needed), option 2 restarts at 10
    keep = SLS([w], init_step_size=eta, reset_option=0)
    keep.step(closure)
    assert keep.internals()["step_size"] <= eta


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
def test_loss_falls_and_internals_logged(cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    batch = data()
    opt = cls(model.parameters())
    losses = []
    for step in range(30):
        losses.append(float(opt.step(StepClosure(model, regression_forward, [batch], [step]))))
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
        opt.step(StepClosure(model, regression_forward, [batch], [step]))
    clone = copy.deepcopy(model)
    opt2 = cls(clone.parameters())
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.internals() == opt.internals()
    for net, o in ((model, opt), (clone, opt2)):
        o.step(StepClosure(net, regression_forward, [batch], [9]))
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_errors_name_the_bad_value():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="Valid choices: clean, as-run"):
        ALSALS(p, mode="asrun")
    with pytest.raises(ValueError, match="reset_option"):
        SLS(p, reset_option=5)
    with pytest.raises(ValueError, match="adam, amsgrad, adagrad"):
        AdaSLS(p, base_opt="sgd")
    with pytest.raises(RuntimeError, match="requires a closure"):
        SLS(p).step()
