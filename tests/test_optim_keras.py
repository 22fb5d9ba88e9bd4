"""Keras 3's Adam, AdamW, Adamax and Nadam (the CaAdam notebooks' baselines) against Keras's update rules written
out step by step in float64 (keras/src/optimizers/{adam,adamw,adamax,nadam}.py at Keras 3.5.0, one global step
count t = iterations + 1), with a changing learning rate, large eps and near-zero gradient entries so that the
eps placement and the lr path are visible; each class on every torch path it has."""
from __future__ import annotations

import math

import pytest
import torch

from optrepro import optim
from optrepro.optim.keras import KerasAdamax

STEPS = 15
SHAPES = [(3, 4), (5,)]
LRS = [1e-2 * (0.8 ** t) for t in range(STEPS)]  # what ReduceLROnPlateau would do to the lr variable
EPS = 1e-4  # large, so that where eps enters shows


def initial_params():
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in SHAPES]


def gradients():
    gen = torch.Generator().manual_seed(4)
    out = []
    for t in range(STEPS):
        step = []
        for shape in SHAPES:
            g = torch.randn(shape, generator=gen, dtype=torch.float64)
            g.view(-1)[0] = 1e-9 * (t + 1)  # a near-zero coordinate: eps dominates there
            step.append(g)
        out.append(step)
    return out


def run(make_optimizer):
    params = [p.clone().requires_grad_(True) for p in initial_params()]
    opt = make_optimizer(params)
    for lr, grads in zip(LRS, gradients()):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def close(actual, expected):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-14)


def keras(update):
    """Apply `update(t, lr, g, theta, slots) -> theta` over the fixed gradients; slots: per-variable state dict."""
    params = initial_params()
    slots = [{} for _ in params]
    for t, (lr, grads) in enumerate(zip(LRS, gradients()), start=1):
        params = [update(t, lr, g, theta, s) for g, theta, s in zip(grads, params, slots)]
    return params


def keras_adam(b1=0.9, b2=0.999, eps=EPS, wd=None):
    def update(t, lr, g, theta, s):
        if wd is not None:  # BaseOptimizer._apply_weight_decay, before the step, with the current lr
            theta = theta - theta * wd * lr
        m, v = s.get("m", torch.zeros_like(g)), s.get("v", torch.zeros_like(g))
        alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        s["m"] = m + (g - m) * (1 - b1)
        s["v"] = v + (g * g - v) * (1 - b2)
        return theta - s["m"] * alpha / (torch.sqrt(s["v"]) + eps)

    return keras(update)


def keras_adamax(b1=0.9, b2=0.999, eps=EPS):
    def update(t, lr, g, theta, s):
        m, u = s.get("m", torch.zeros_like(g)), s.get("u", torch.zeros_like(g))
        s["m"] = m + (g - m) * (1 - b1)
        s["u"] = torch.maximum(b2 * u, torch.abs(g))
        return theta - lr * s["m"] / ((1 - b1 ** t) * (s["u"] + eps))

    return keras(update)


def keras_nadam(b1=0.9, b2=0.999, eps=EPS):
    params = initial_params()
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    u_product = 1.0  # one variable per optimizer, advanced once per step before the variables are updated
    for t, (lr, grads) in enumerate(zip(LRS, gradients()), start=1):
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t1 = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_product = u_product * u_t
        for i, g in enumerate(grads):
            m[i] = m[i] + (g - m[i]) * (1 - b1)
            v[i] = v[i] + (g * g - v[i]) * (1 - b2)
            m_hat = u_t1 * m[i] / (1 - u_product * u_t1) + (1 - u_t) * g / (1 - u_product)
            v_hat = v[i] / (1 - b2 ** t)
            params[i] = params[i] - m_hat * lr / (torch.sqrt(v_hat) + eps)
    return params


TORCH_ADAM_PATHS = [{"foreach": False}, {"foreach": True}, {"fused": True}]


def test_keras_adam_is_the_eps_hat_form():
    close(run(lambda ps: optim.build("keras_adam", ps, eps=EPS)), keras_adam())
    # ... which is not torch's placement of eps
    torch_adam = run(lambda ps: torch.optim.Adam(ps, eps=EPS, foreach=False))
    assert not torch.allclose(torch_adam[0], keras_adam()[0], rtol=1e-9, atol=0)


@pytest.mark.parametrize("path", TORCH_ADAM_PATHS)
def test_keras_adamw_decays_before_the_step_with_the_current_lr(path):
    from optrepro.optim.tf1 import EpsHatAdam

    expected = keras_adam(wd=0.004)
    close(run(lambda ps: EpsHatAdam(ps, eps=EPS, weight_decay=0.004, decoupled_weight_decay=True, **path)), expected)
    close(run(lambda ps: optim.build("keras_adamw", ps, eps=EPS)), expected)
    assert optim.info("keras_adamw").defaults["weight_decay"] == 0.004  # Keras 3's AdamW default
    # an L2 term in the gradient (coupled decay) is a different update
    coupled = run(lambda ps: EpsHatAdam(ps, eps=EPS, weight_decay=0.004, foreach=False))
    assert not torch.allclose(coupled[0], expected[0], rtol=1e-9, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_keras_adamax_adds_eps_outside_the_max(foreach):
    expected = keras_adamax()
    close(run(lambda ps: KerasAdamax(ps, eps=EPS, foreach=foreach)), expected)
    close(run(lambda ps: optim.build("keras_adamax", ps, eps=EPS)), expected)
    torch_adamax = run(lambda ps: torch.optim.Adamax(ps, eps=EPS, foreach=False))  # eps inside the max
    assert not torch.allclose(torch_adamax[0], expected[0], rtol=1e-9, atol=0)


@pytest.fixture
def float64_scalars():
    """torch keeps NAdam's running product mu_product as a scalar tensor of the default dtype (float32, as
    Keras's float32 variable): with float64 as the default the formula can be checked to float64 rounding."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("foreach", [False, True])
def test_keras_nadam_uses_the_096_power_t_momentum_schedule(foreach, float64_scalars):
    expected = keras_nadam()
    built = run(lambda ps: optim.build("keras_nadam", ps, eps=EPS))
    close(built, expected)
    close(run(lambda ps: torch.optim.NAdam(ps, eps=EPS, momentum_decay=1.0, foreach=foreach)), expected)
    # torch's default schedule (momentum_decay 4e-3) and TF-1's Nadam (the registered `nadam`) are other updates
    assert not torch.allclose(run(lambda ps: torch.optim.NAdam(ps, eps=EPS, foreach=False))[0], expected[0],
                              rtol=1e-9, atol=0)
    assert not torch.allclose(run(lambda ps: optim.build("nadam", ps, eps=EPS))[0], expected[0], rtol=1e-9, atol=0)


def test_keras_defaults_are_the_notebooks():
    for name in ("keras_adam", "keras_adamw", "keras_adamax", "keras_nadam"):
        d = optim.info(name).defaults
        assert (d["lr"], d["beta1"], d["beta2"], d["eps"]) == (1e-3, 0.9, 0.999, 1e-7), name


def test_caadam_with_a_neutral_factor_is_the_keras_adam_baseline():
    """The Adam arm and the CaAdam arms differ only by the factor S: CaAdam's registry defaults (eps 1e-7 in the
    eps-hat form) with gamma = 0 give keras_adam's update."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)).double()
    x = torch.randn(8, 4, dtype=torch.float64)
    trajectories = []
    for name, hparams in (("keras_adam", {}), ("caadam_additive", {"gamma": 0.0})):
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)).double()
        model.load_state_dict(net.state_dict())
        opt = optim.build(name, model, **hparams)
        for _ in range(5):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        trajectories.append([p.detach() for p in model.parameters()])
    close(*trajectories)
