"""Reference tests: every TF-1 switch and every own optimizer against its formula, written out step by step in
plain torch (float64, fixed gradients), plus single-tensor vs foreach agreement for the own classes."""
from __future__ import annotations

import math

import pytest
import torch

from optrepro import optim
from optrepro.optim.adabelief import AdaBelief
from optrepro.optim.adabound import AdaBound, AMSBound
from optrepro.optim.lookahead import Lookahead
from optrepro.optim.tf1 import EpsHatAdam, TF1Nadam, TF1RMSprop

STEPS = 12
SHAPES = [(3, 4), (5,)]


def initial_params():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in SHAPES]


def gradients():
    """Fixed gradients per step; some entries tiny so eps placement matters."""
    gen = torch.Generator().manual_seed(2)
    out = []
    for t in range(STEPS):
        step = []
        for shape in SHAPES:
            g = torch.randn(shape, generator=gen, dtype=torch.float64)
            g.view(-1)[0] = 1e-9 * (t + 1)  # a near-zero coordinate
            step.append(g)
        out.append(step)
    return out


def run(make_optimizer, lrs=None):
    """Trajectory of the parameters under `make_optimizer(params)` with the fixed gradients."""
    params = [p.clone().requires_grad_(True) for p in initial_params()]
    opt = make_optimizer(params)
    for t, grads in enumerate(gradients()):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def close(actual, expected, rtol=1e-11, atol=1e-14):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


LRS = [1e-2 * (0.8 ** t) for t in range(STEPS)]  # a changing lr exercises how each method applies it


# --- Adam family -----------------------------------------------------------------------------------------

def tf_adam_reference(lr, b1, b2, eps, amsgrad=False, nesterov=False, lrs=None):
    """tf.train.AdamOptimizer (training_ops ApplyAdam): eps hat on the un-corrected root."""
    params = initial_params()
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    v_max = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients(), start=1):
        lr_now = lrs[t - 1] if lrs else lr
        lr_t = lr_now * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            v_max[i] = torch.maximum(v_max[i], v[i])
            root = torch.sqrt(v_max[i] if amsgrad else v[i])
            direction = b1 * m[i] + (1 - b1) * g if nesterov else m[i]
            params[i] = params[i] - lr_t * direction / (root + eps)
    return params


@pytest.mark.parametrize("amsgrad", [False, True])
def test_eps_hat_adam_matches_tf(amsgrad):
    name = "amsgrad" if amsgrad else "adam"
    eps = 1e-4  # large, so that eps hat vs torch's eps placement is visible
    actual = run(lambda ps: optim.build(name, ps, lr=1e-2, eps=eps), lrs=LRS)
    close(actual, tf_adam_reference(1e-2, 0.9, 0.999, eps, amsgrad=amsgrad, lrs=LRS))
    # ...and it is not torch's placement
    torch_semantics = run(lambda ps: optim.build(name, ps, lr=1e-2, eps=eps, semantics="torch"), lrs=LRS)
    assert not torch.allclose(torch_semantics[0], actual[0], rtol=1e-9, atol=0)


@pytest.mark.parametrize("impl", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_eps_hat_adam_on_every_torch_path(impl):
    actual = run(lambda ps: EpsHatAdam(ps, lr=1e-2, eps=1e-4, **impl))
    close(actual, tf_adam_reference(1e-2, 0.9, 0.999, 1e-4))


def test_torch_semantics_is_torch_adam():
    actual = run(lambda ps: optim.build("adam", ps, lr=1e-2, eps=1e-4, semantics="torch"))
    expected = run(lambda ps: torch.optim.Adam(ps, lr=1e-2, eps=1e-4, foreach=False))
    close(actual, expected)


@pytest.mark.parametrize("foreach", [False, True])
def test_tf1_nadam_matches_tf_contrib(foreach):
    actual = run(lambda ps: TF1Nadam(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-4, foreach=foreach), lrs=LRS)
    close(actual, tf_adam_reference(1e-2, 0.9, 0.99, 1e-4, nesterov=True, lrs=LRS))
    built = run(lambda ps: optim.build("nadam", ps, lr=1e-2, beta2=0.99, eps=1e-4), lrs=LRS)
    close(built, actual)
    assert isinstance(optim.build("nadam", initial_params(), semantics="torch"), torch.optim.NAdam)


# --- RMSProp ---------------------------------------------------------------------------------------------

def tf_rmsprop_reference(lr, decay, eps, momentum=0.0, centered=False, lrs=None):
    """tf.train.RMSPropOptimizer: ms starts at ones, eps inside the root, lr inside the momentum buffer."""
    params = initial_params()
    ms = [torch.ones_like(p) for p in params]
    mg = [torch.zeros_like(p) for p in params]
    mom = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients()):
        lr_now = lrs[t] if lrs else lr
        for i, g in enumerate(grads):
            ms[i] = decay * ms[i] + (1 - decay) * g * g
            if centered:
                mg[i] = decay * mg[i] + (1 - decay) * g
                denom = torch.sqrt(ms[i] - mg[i] * mg[i] + eps)
            else:
                denom = torch.sqrt(ms[i] + eps)
            mom[i] = momentum * mom[i] + lr_now * g / denom
            params[i] = params[i] - mom[i]
    return params


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, False), (0.0, True), (0.9, True)])
def test_tf1_rmsprop_matches_tf(foreach, momentum, centered):
    actual = run(lambda ps: TF1RMSprop(ps, lr=1e-2, alpha=0.9, eps=1e-3, momentum=momentum, centered=centered,
                                       foreach=foreach), lrs=LRS)
    close(actual, tf_rmsprop_reference(1e-2, 0.9, 1e-3, momentum, centered, lrs=LRS))


def test_rmsprop_registry_switch():
    tf1 = run(lambda ps: optim.build("rmsprop", ps, lr=1e-2, eps=1e-3))
    close(tf1, tf_rmsprop_reference(1e-2, 0.9, 1e-3))
    torch_semantics = run(lambda ps: optim.build("rmsprop", ps, lr=1e-2, eps=1e-3, semantics="torch"))
    close(torch_semantics, run(lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.9, eps=1e-3)))
    assert not torch.allclose(tf1[0], torch_semantics[0])


# --- AdaGrad, AdaDelta, momentum: torch's classes with TF's defaults --------------------------------------

def test_adagrad_tf_defaults():
    """TF AdagradOptimizer: accum starts at 0.1, theta -= lr g / sqrt(accum), no eps."""
    params = initial_params()
    accum = [torch.full_like(p, 0.1) for p in params]
    for grads in gradients():
        for i, g in enumerate(grads):
            accum[i] = accum[i] + g * g
            params[i] = params[i] - 0.01 * g / torch.sqrt(accum[i])
    close(run(lambda ps: optim.build("adagrad", ps)), params)


def test_adadelta_tf_defaults():
    """TF ApplyAdadelta with TF's defaults lr 1e-3, rho 0.95, eps 1e-8."""
    lr, rho, eps = 1e-3, 0.95, 1e-8
    params = initial_params()
    accum = [torch.zeros_like(p) for p in params]
    accum_update = [torch.zeros_like(p) for p in params]
    for grads in gradients():
        for i, g in enumerate(grads):
            accum[i] = rho * accum[i] + (1 - rho) * g * g
            update = torch.sqrt(accum_update[i] + eps) / torch.sqrt(accum[i] + eps) * g
            accum_update[i] = rho * accum_update[i] + (1 - rho) * update * update
            params[i] = params[i] - lr * update
    close(run(lambda ps: optim.build("adadelta", ps)), params)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_and_nag_match_tf(nesterov):
    """TF MomentumOptimizer: accum <- mu accum + g; theta -= lr accum (Nesterov: lr (g + mu accum))."""
    mu = 0.99
    params = initial_params()
    accum = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients()):
        for i, g in enumerate(grads):
            accum[i] = mu * accum[i] + g
            params[i] = params[i] - LRS[t] * ((g + mu * accum[i]) if nesterov else accum[i])
    close(run(lambda ps: optim.build("nag" if nesterov else "momentum", ps), lrs=LRS), params)


# --- AdaBelief, AdaBound, Lookahead ----------------------------------------------------------------------

def adabelief_reference(lr, b1, b2, eps, rectify):
    params = initial_params()
    m = [torch.zeros_like(p) for p in params]
    s = [torch.zeros_like(p) for p in params]
    rho_inf = 2 / (1 - b2) - 1
    for t, grads in enumerate(gradients(), start=1):
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            s[i] = b2 * s[i] + (1 - b2) * (g - m[i]) ** 2 + eps
            m_hat = m[i] / (1 - b1 ** t)
            s_hat_root = torch.sqrt(s[i] / (1 - b2 ** t))
            rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
            if rectify and rho_t < 5:
                params[i] = params[i] - lr * m_hat
                continue
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) \
                if rectify else 1.0
            params[i] = params[i] - lr * r * m_hat / (s_hat_root + eps)
    return params


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("rectify", [False, True])
def test_adabelief_matches_formula(foreach, rectify):
    b2 = 0.9  # rho_t crosses 5 at step 6 of the test's 12 steps, so both rectify branches run
    actual = run(lambda ps: AdaBelief(ps, lr=1e-2, betas=(0.9, b2), eps=1e-6, rectify=rectify, foreach=foreach))
    close(actual, adabelief_reference(1e-2, 0.9, b2, 1e-6, rectify))


def adabound_reference(lr, b1, b2, final_lr, gamma, eps, amsbound, lrs):
    params = initial_params()
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    v_max = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients(), start=1):
        scaled_final = final_lr * lrs[t - 1] / lr
        lower = scaled_final * (1 - 1 / (gamma * t + 1))
        upper = scaled_final * (1 + 1 / (gamma * t))
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            v_max[i] = torch.maximum(v_max[i], v[i])
            root = torch.sqrt(v_max[i] if amsbound else v[i])
            eta = lrs[t - 1] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) / (root + eps)
            params[i] = params[i] - eta.clamp(lower, upper) * m[i]
    return params


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cls", [AdaBound, AMSBound])
def test_adabound_matches_formula(foreach, cls):
    lrs = [1e-2] + LRS[1:]  # lr at construction = LRS[0] = 1e-2 = base_lr
    gamma = 0.1  # fast-closing bounds, so clipping is active at both ends during the test
    actual = run(lambda ps: cls(ps, lr=1e-2, betas=(0.9, 0.999), final_lr=0.05, gamma=gamma, eps=1e-8,
                                foreach=foreach), lrs=lrs)
    close(actual, adabound_reference(1e-2, 0.9, 0.999, 0.05, gamma, 1e-8, cls.amsbound, lrs))


@pytest.mark.parametrize("foreach", [False, True])
def test_lookahead_matches_formula(foreach):
    lr, mu, alpha, k = 1e-2, 0.9, 0.3, 4
    params = initial_params()
    slow = [p.clone() for p in params]
    buf = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients(), start=1):
        for i, g in enumerate(grads):
            buf[i] = mu * buf[i] + g
            params[i] = params[i] - lr * buf[i]
        if t % k == 0:
            for i in range(len(params)):
                slow[i] = slow[i] + alpha * (params[i] - slow[i])
                params[i] = slow[i].clone()
    actual = run(lambda ps: Lookahead(torch.optim.SGD(ps, lr=lr, momentum=mu, foreach=False), alpha=alpha, k=k,
                                      foreach=foreach))
    close(actual, params)


def test_lookahead_tf1_semantics_matches_formula():
    """The TF-1 wrapper: its counter starts at 0 and a synchronisation replaces the inner step on steps 0, k, 2k,
    ...; the inner optimizer's step never advances (RAdam stays un-rectified at step 1, lr m / (1 - beta1))."""
    lr, b1, b2, alpha, k = 1e-2, 0.9, 0.999, 0.3, 4
    params = initial_params()
    slow = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients()):
        if t % k == 0:
            for i in range(len(params)):
                slow[i] = slow[i] + alpha * (params[i] - slow[i])
                params[i] = slow[i].clone()
            continue
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            params[i] = params[i] - lr * m[i] / (1 - b1)
    for inner in (lambda ps: torch.optim.RAdam(ps, lr=lr, betas=(b1, b2), foreach=False),
                  lambda ps: RAdam(ps, lr=lr, betas=(b1, b2))):
        close(run(lambda ps: Lookahead(inner(ps), alpha=alpha, k=k, semantics="tf1")), params)
    with pytest.raises(ValueError, match="tf1, torch"):
        Lookahead(torch.optim.SGD(initial_params(), lr=lr), semantics="keras")


def test_lookahead_tf1_momentum_skips_the_gradient_of_sync_steps():
    lr, mu, alpha, k = 1e-2, 0.9, 0.5, 3
    params = initial_params()
    slow = [p.clone() for p in params]
    buf = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(gradients()):
        if t % k == 0:
            for i in range(len(params)):
                slow[i] = slow[i] + alpha * (params[i] - slow[i])
                params[i] = slow[i].clone()
            continue  # the buffer is untouched: the gradient of a synchronisation step is dropped
        for i, g in enumerate(grads):
            buf[i] = mu * buf[i] + g
            params[i] = params[i] - lr * buf[i]
    close(run(lambda ps: Lookahead(torch.optim.SGD(ps, lr=lr, momentum=mu, foreach=False), alpha=alpha, k=k,
                                   semantics="tf1")), params)


# --- the compiled fused kernels (optim/_compiled.py) and optrepro's RAdam ----------------------------------

from optrepro.optim import _compiled, crowded_valley  # noqa: E402
from optrepro.optim.radam import RAdam  # noqa: E402

LONG_STEPS = 100
# more tensors than a compiled chunk holds, of several ranks, plus the ones the compiled path leaves to the
# eager path: a one-element tensor and a non-contiguous one
MIXED_SHAPES = [(3, 4), (5,), (7, 3), (2, 2, 3), (9,), (4,), (6, 6), (3,), (11,), (2, 3, 2, 2), (1,), "t(4, 3)"]


def mixed_params(dtype):
    gen = torch.Generator().manual_seed(3)
    params = []
    for shape in MIXED_SHAPES:
        if shape == "t(4, 3)":
            params.append(torch.randn(4, 3, generator=gen, dtype=dtype).t().requires_grad_())
        else:
            params.append(torch.randn(shape, generator=gen, dtype=dtype).requires_grad_())
    return params


def long_run(make_optimizer, dtype=torch.float64):
    """LONG_STEPS steps on mixed_params with fresh random gradients and a decaying lr (a schedule)."""
    params = mixed_params(dtype)
    opt = make_optimizer(params)
    base = [group["lr"] for group in opt.param_groups]
    gen = torch.Generator().manual_seed(4)
    for t in range(LONG_STEPS):
        for group, lr in zip(opt.param_groups, base):
            group["lr"] = lr * 0.99 ** t
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    return [p.detach() for p in params]


def assert_agree(actual, expected, dtype):
    rtol = 1e-6 if dtype == torch.float64 else 1e-4
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=1e-12 if dtype == torch.float64 else 1e-7)


CV_HPARAMS = {"lr": 1e-2, "beta2": 0.99, "weight_decay": 1e-3}  # rho_t crosses 5 early; decay exercised
COMPILED_CASES = [
    ("adabelief", {"rectify": False, "eps": 1e-6}), ("adabelief", {"rectify": True, "eps": 1e-6}),
    ("adabound", {"gamma": 0.1}), ("amsbound", {"gamma": 0.1}), ("lookahead_radam", {"k": 3}),
]


def reference_of(name, hparams):
    """The eager reference: the class's single-tensor path, or torch's RAdam inside Lookahead."""
    if name == "lookahead_radam":
        return lambda ps: Lookahead(torch.optim.RAdam(ps, lr=hparams["lr"], betas=(hparams["beta1"],
                                                                                   hparams["beta2"]),
                                                      eps=hparams["eps"], weight_decay=hparams["weight_decay"],
                                                      foreach=False),
                                    alpha=hparams["alpha"], k=hparams["k"], semantics=hparams["semantics"])
    return lambda ps: getattr(crowded_valley, name)(ps, **hparams)


def check_compiled_against_reference(name, extra, backend, dtype):
    hparams = optim.resolve_hparams(name, {**CV_HPARAMS, **extra})
    compiled = long_run(lambda ps: getattr(crowded_valley, name)(ps, **hparams, compile=backend), dtype)
    assert_agree(compiled, long_run(reference_of(name, hparams), dtype), dtype)


@pytest.mark.parametrize("name,extra", COMPILED_CASES)
def test_compiled_path_matches_reference_traced(name, extra):
    """The compiled path's kernels, chunking, padding and eager fallback, traced by dynamo without code
    generation (backend "eager", fast): 100 steps within 1e-6 relative of the eager reference."""
    check_compiled_against_reference(name, extra, "eager", torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,extra", COMPILED_CASES)
def test_compiled_path_matches_reference_inductor(name, extra, dtype):
    """The same with inductor's generated code (compile=True; seconds of compilation per kernel and dtype)."""
    check_compiled_against_reference(name, extra, True, dtype)


def test_compiled_path_runs_the_kernel_without_recompiling():
    kernel = _compiled.fused_kernel("adabelief", "eager")
    counters = torch._dynamo.utils.counters["stats"]
    long_run(lambda ps: AdaBelief(ps, lr=1e-2, compile="eager"))
    assert (torch.device("cpu"), torch.float64) in kernel._seen
    graphs = counters["unique_graphs"]
    # other shapes, ranks, lr and step counts: the same graph
    gen = torch.Generator().manual_seed(5)
    params = [torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_()
              for shape in [(13, 2, 2), (17,), (5, 5), (8, 1, 3, 3)]]
    opt = AdaBelief(params, lr=3e-3, compile="eager")
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.step()
    assert counters["unique_graphs"] == graphs


@pytest.mark.parametrize("foreach", [False, True])
def test_radam_matches_torch(foreach):
    """optrepro's RAdam (Lookahead(RAdam)'s inner optimizer) against torch.optim.RAdam, 100 steps."""
    make = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-7, weight_decay=1e-3)
    actual = long_run(lambda ps: RAdam(ps, **make, foreach=foreach))
    assert_agree(actual, long_run(lambda ps: torch.optim.RAdam(ps, **make, foreach=False)), torch.float64)


def test_compile_is_an_instance_setting_and_checked():
    opt = AdaBelief(initial_params(), compile="eager")
    assert "compile" not in opt.param_groups[0] and "compile" not in opt.state_dict()["param_groups"][0]
    with pytest.raises(ValueError, match="compile='fast'"):
        AdaBelief(initial_params(), compile="fast")
