"""One suite over every registered optimizer: learning, resume, schedulers, param groups, frozen params, float64,
refused hyperparameters, and search spaces as data.

Entries added by other papers work here too: structure-aware optimizers (info.needs_model) get the model,
closure-based ones (info.requires_closure) get `step(closure)` with a closure that zeroes the grads, computes the
loss, runs backward and returns the loss; closure(backward=False) is a forward pass under torch.no_grad.
"""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from optrepro import optim
from optrepro.optim.registry import DISTRIBUTIONS, search_space
from optrepro.registry import UnknownNameError

NAMES = optim.available()

# The one-shot defaults of a few optimizers move too little in a short test (AdaDelta's TF default lr is 1e-3,
# and its first steps are ~sqrt(eps) in size): a larger lr shows that the update has the right sign.
TEST_HPARAMS = {"adadelta": {"lr": 1.0}}
STEPS = 100


def make_data(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=gen, dtype=dtype)
    y = (x @ torch.randn(6, 1, generator=gen, dtype=dtype)).tanh() + 0.5
    return x, y


class Net(nn.Module):
    """A small MLP with one frozen layer and one parameter that never gets a gradient."""

    def __init__(self, dtype=torch.float32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)
        self.frozen = nn.Linear(6, 6).to(dtype)
        self.frozen.requires_grad_(False)
        self.unused = nn.Parameter(torch.ones(3, dtype=dtype))  # grad stays None

    def forward(self, x):
        return self.body(self.frozen(x))


# Run-dependent hyperparameters (default None) that the training loop fills in from the run's length.
RUN_HPARAMS = {"total_steps": 200}


def build(name, model, params=None, **overrides):
    defaults = optim.info(name).defaults
    run = {k: v for k, v in RUN_HPARAMS.items() if k in defaults and defaults[k] is None}
    hparams = {**run, **TEST_HPARAMS.get(name, {}), **overrides}
    if optim.info(name).needs_model or params is None:
        return optim.build(name, model, **hparams)
    return optim.build(name, params, **hparams)


def loss_of(model, data):
    x, y = data
    return nn.functional.mse_loss(model(x), y)


def step(name, opt, model, data) -> float:
    """One optimizer step as the training loop does it; returns the loss before the step."""
    if optim.info(name).requires_closure:
        def closure(backward=True):
            if not backward:
                with torch.no_grad():
                    return loss_of(model, data)
            opt.zero_grad()
            with torch.enable_grad():
                loss = loss_of(model, data)
                loss.backward()
            return loss.detach()

        loss = opt.step(closure)
        return float(loss) if loss is not None else float(loss_of(model, data))
    opt.zero_grad()
    loss = loss_of(model, data)
    loss.backward()
    opt.step()
    return float(loss.detach())


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def roundtrip(state_dict):
    """Through torch.save/torch.load(weights_only=True), as a checkpoint goes."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls(name):
    data = make_data()
    model = Net()
    opt = build(name, model)
    with torch.no_grad():
        initial = float(loss_of(model, data))
    for _ in range(STEPS):
        step(name, opt, model, data)
    with torch.no_grad():
        final = float(loss_of(model, data))
    assert math.isfinite(final)
    assert final < 0.95 * initial, f"{name}: loss {initial:.4f} -> {final:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_identical(name):
    data = make_data()
    before, after = 7, 6  # crosses Lookahead's k=5 synchronisations on both sides of the checkpoint

    model = Net()
    opt = build(name, model)
    for _ in range(before + after):
        step(name, opt, model, data)
    uninterrupted = snapshot(model)

    model = Net()
    opt = build(name, model)
    for _ in range(before):
        step(name, opt, model, data)
    model_state, opt_state = roundtrip(model.state_dict()), roundtrip(opt.state_dict())
    del model, opt

    resumed_model = Net(seed=1)  # different init: everything must come from the checkpoint
    resumed_model.load_state_dict(model_state)
    resumed_opt = build(name, resumed_model)
    resumed_opt.load_state_dict(opt_state)
    for _ in range(after):
        step(name, resumed_opt, resumed_model, data)
    for a, b in zip(uninterrupted, snapshot(resumed_model)):
        assert torch.equal(a, b), f"{name}: resumed run differs by {float((a - b).abs().max())}"


@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_drives_every_group(name):
    data = make_data()
    info = optim.info(name)
    model = Net()
    if info.needs_model:
        opt = build(name, model)
    else:
        first, second = model.body[0], model.body[2]
        opt = build(name, model, params=[{"params": first.parameters()},
                                         {"params": second.parameters(), "lr": 0.0}])
        assert len(opt.param_groups) == 2
    if "lr" not in opt.param_groups[0]:
        pytest.skip(f"{name} has no lr in its param groups (it sets its own step size)")
    base = [group["lr"] for group in opt.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** epoch)
    frozen_group = [p.detach().clone() for p in model.body[2].parameters()]
    for i in range(1, 4):
        step(name, opt, model, data)
        scheduler.step()
        for group, lr0 in zip(opt.param_groups, base):
            assert group["lr"] == pytest.approx(lr0 * 0.5 ** i)
    if not info.needs_model and not info.requires_closure:
        # lr = 0 in the second group: it must not move (its gradient is not zero)
        for before, p in zip(frozen_group, model.body[2].parameters()):
            assert torch.equal(before, p), f"{name}: a group with lr=0 moved"
        # ...and the schedule reaches the update: a run with a constant lr ends elsewhere
        scheduled = snapshot(model)
        model = Net()
        opt = build(name, model)
        for _ in range(3):
            step(name, opt, model, data)
        assert any(not torch.equal(a, b) for a, b in zip(scheduled, snapshot(model)))


@pytest.mark.parametrize("name", NAMES)
def test_frozen_and_gradless_parameters_stay_put(name):
    data = make_data()
    model = Net()
    opt = build(name, model)
    frozen = [p.detach().clone() for p in model.frozen.parameters()]
    unused = model.unused.detach().clone()
    moving = snapshot(model.body)
    for _ in range(6):
        step(name, opt, model, data)
    for before, p in zip(frozen, model.frozen.parameters()):
        assert torch.equal(before, p)
    assert torch.equal(unused, model.unused)
    assert model.unused.grad is None
    assert any(not torch.equal(a, b) for a, b in zip(moving, snapshot(model.body)))


@pytest.mark.parametrize("name", NAMES)
def test_float64(name):
    data = make_data(torch.float64)
    model = Net(dtype=torch.float64)
    opt = build(name, model)
    with torch.no_grad():
        initial = float(loss_of(model, data))
    for _ in range(STEPS):
        step(name, opt, model, data)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
                assert value.dtype == torch.float64
    with torch.no_grad():
        assert float(loss_of(model, data)) < initial


@pytest.mark.parametrize("name", NAMES)
def test_unknown_hyperparameter_is_refused_by_name(name):
    with pytest.raises(UnknownNameError) as error:
        optim.build(name, Net(), not_a_hyperparameter=1.0)
    message = str(error.value)
    assert "not_a_hyperparameter" in message
    assert all(key in message for key in optim.info(name).defaults)


def test_unknown_optimizer_is_refused_with_the_choices():
    with pytest.raises(UnknownNameError) as error:
        optim.build("adamm", Net())
    assert "'adamm'" in str(error.value) and "adam" in str(error.value) and "sgd" in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_search_space_is_valid_data(name):
    info = optim.info(name)
    assert info.impl_version >= 1
    for version, space in info.search_space.items():
        assert set(space) <= set(info.defaults), f"{name} ({version}) tunes unknown keys"
        for key, dist in space.items():
            assert dist["type"] in DISTRIBUTIONS, f"{name}.{key}: {dist}"
            if dist["type"] == "choice":
                assert dist["values"]
            else:
                assert dist["low"] < dist["high"], f"{name}.{key}: {dist}"


CROWDED_VALLEY = ["sgd", "momentum", "nag", "adam", "amsgrad", "nadam", "radam", "adabelief", "adabound",
                  "amsbound", "adadelta", "adagrad", "rmsprop", "lookahead_momentum", "lookahead_radam"]


def test_crowded_valley_catalog():
    assert set(CROWDED_VALLEY) <= set(NAMES)
    # the one-shot defaults that differ from torch's are the published ones
    assert optim.info("adadelta").defaults["lr"] == 1e-3 and optim.info("adadelta").defaults["rho"] == 0.95
    assert optim.info("adagrad").defaults["initial_accumulator_value"] == 0.1
    assert optim.info("amsgrad").defaults["lr"] == 1e-2
    assert optim.info("adabelief").defaults["eps"] == 1e-14
    assert optim.info("rmsprop").defaults["semantics"] == "tf1"
    # only the momentum-type parameters changed between the study versions; AdaBelief is ICML-only
    assert search_space("momentum", "v1")["momentum"]["type"] == "log_uniform"
    assert search_space("momentum", "icml")["momentum"]["type"] == "one_minus_log_uniform"
    assert search_space("rmsprop", "icml")["alpha"]["type"] == "one_minus_log_uniform"
    assert search_space("adam", "v1") == search_space("adam", "icml")
    assert set(search_space("adabelief", "icml")) == {"lr", "beta1", "beta2"}
    with pytest.raises(UnknownNameError, match="icml"):
        search_space("adabelief", "v1")


def test_bad_semantics_is_refused():
    with pytest.raises(UnknownNameError, match="tf1"):
        optim.build("rmsprop", Net(), semantics="keras")
