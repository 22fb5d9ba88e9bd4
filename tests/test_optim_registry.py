"""One suite over every registered optimizer: learning, resume, schedulers, param groups, frozen params, float64,
refused hyperparameters, search spaces as data, and every declaration the training loop reads (OptimizerInfo)
checked against the optimizer's behaviour.

Entries added by other papers work here too: structure-aware optimizers (info.needs_model) get the model,
closure-based ones (info.closure != "none") get `step(closure)` in both closure forms: the one-argument form
(zeroes the grads, computes the loss, runs backward and returns the loss; closure(backward=False) is a forward
pass under torch.no_grad; create_graph=True keeps the gradients' graph) and torch's zero-argument form, which for
Hessian-vector-product optimizers (closure="hvp") back-propagates with create_graph=True, as their users write it.
"""
from __future__ import annotations

import io
import math
import sys

import pytest
import torch
from torch import nn

from optrepro import optim
from optrepro.closure import StepClosure, batchnorm_buffers
from optrepro.optim.registry import DISTRIBUTIONS, LR_MULTIPLIER, search_space
from optrepro.plan import make_spec
from optrepro.problems.base import Output
from optrepro.registry import UnknownNameError

NAMES = optim.available()
CLOSURE_NAMES = [n for n in NAMES if optim.info(n).requires_closure]
# (name, closure form): every optimizer in the one-argument form, closure optimizers in torch's form too
NAME_FORMS = [pytest.param(n, "backward", id=n) for n in NAMES] + \
             [pytest.param(n, "torch", id=f"{n}-torch-closure") for n in CLOSURE_NAMES]

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


RUN_LENGTH = 200  # the run length the training loop would give to run-length hyperparameters
# closure optimizers whose every evaluation is a gradient (no forward-only trial point): the fuzzy method and its
# controller-off twin (a second gradient for the finite difference), AdaHessian (one gradient, kept with its graph)
GRADIENT_EVALUATIONS_ONLY = {"fuzzy_second_order", "fd_second_order", "adahessian"}


def build(name, model, params=None, **overrides):
    hparams = optim.info(name).fill_run_length({**TEST_HPARAMS.get(name, {}), **overrides}, RUN_LENGTH)
    if optim.info(name).needs_model or params is None:
        return optim.build(name, model, **hparams)
    return optim.build(name, params, **hparams)


def loss_of(model, data):
    x, y = data
    return nn.functional.mse_loss(model(x), y)


def closure_of(form, opt, model, data, hvp=False):
    """The step's closure in `form`: "backward" (the one-argument form) or "torch" (no arguments; with `hvp`, it
    back-propagates with create_graph=True)."""
    def closure(backward=True, create_graph=False):
        if not backward:
            with torch.no_grad():
                return loss_of(model, data)
        opt.zero_grad()
        with torch.enable_grad():
            loss = loss_of(model, data)
            if create_graph:  # autograd.grad, as StepClosure: no param -> grad -> graph cycle
                params = [p for p in model.parameters() if p.requires_grad]
                for p, g in zip(params, torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)):
                    p.grad = g
            else:
                loss.backward()
        return loss.detach()

    return closure if form == "backward" else (lambda: closure(create_graph=hvp))


def torch_form(name, closure):
    """A StepClosure in torch's zero-argument form, as a user of `name` would write it."""
    return lambda: closure(create_graph=optim.info(name).closure == "hvp")


def step(name, opt, model, data, form="backward") -> float:
    """One optimizer step as the training loop does it; returns the loss before the step."""
    if optim.info(name).requires_closure:
        loss = opt.step(closure_of(form, opt, model, data, hvp=optim.info(name).closure == "hvp"))
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


@pytest.mark.parametrize("name, form", NAME_FORMS)
def test_loss_falls(name, form):
    data = make_data()
    model = Net()
    opt = build(name, model)
    with torch.no_grad():
        initial = float(loss_of(model, data))
    for _ in range(STEPS):
        step(name, opt, model, data, form)
    with torch.no_grad():
        final = float(loss_of(model, data))
    assert math.isfinite(final)
    assert final < 0.95 * initial, f"{name}: loss {initial:.4f} -> {final:.4f}"


@pytest.mark.parametrize("name, form", NAME_FORMS)
def test_resume_is_bit_identical(name, form):
    data = make_data()
    before, after = 7, 6  # crosses Lookahead's k=5 synchronisations on both sides of the checkpoint

    model = Net()
    opt = build(name, model)
    for _ in range(before + after):
        step(name, opt, model, data, form)
    uninterrupted = snapshot(model)

    model = Net()
    opt = build(name, model)
    for _ in range(before):
        step(name, opt, model, data, form)
    model_state, opt_state = roundtrip(model.state_dict()), roundtrip(opt.state_dict())
    del model, opt

    resumed_model = Net(seed=1)  # different init: everything must come from the checkpoint
    resumed_model.load_state_dict(model_state)
    resumed_opt = build(name, resumed_model)
    resumed_opt.load_state_dict(opt_state)
    for _ in range(after):
        step(name, resumed_opt, resumed_model, data, form)
    for a, b in zip(uninterrupted, snapshot(resumed_model)):
        assert torch.equal(a, b), f"{name}: resumed run differs by {float((a - b).abs().max())}"


def two_groups(model):
    return [{"params": model.body[0].parameters()}, {"params": model.body[2].parameters(), "lr": 0.0}]


@pytest.mark.parametrize("name", [n for n in NAMES if optim.info(n).lr_schedule == "group_lr"])
def test_lr_scheduler_drives_every_group(name):
    """lr_schedule="group_lr": the step size is each group's lr, so torch's schedulers (and the loop) drive it
    (the one group of a param_groups="one" optimizer, every group of the others)."""
    data = make_data()
    info = optim.info(name)
    model = Net()
    one_group = info.needs_model or info.param_groups == "one"
    if one_group:
        opt = build(name, model)
    else:
        opt = build(name, model, params=two_groups(model))
        assert len(opt.param_groups) == 2
    base = [group["lr"] for group in opt.param_groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5 ** epoch)
    frozen_group = [p.detach().clone() for p in model.body[2].parameters()]
    for i in range(1, 4):
        step(name, opt, model, data)
        scheduler.step()
        for group, lr0 in zip(opt.param_groups, base):
            assert group["lr"] == pytest.approx(lr0 * 0.5 ** i)
    if not one_group:
        # lr = 0 in the second group: it must not move (its gradient is not zero)
        for before, p in zip(frozen_group, model.body[2].parameters()):
            assert torch.equal(before, p), f"{name}: a group with lr=0 moved"
    # ...and the schedule reaches the update: a run with a constant lr ends elsewhere
    scheduled = snapshot(model)
    model = Net()
    opt = build(name, model) if one_group else build(name, model, params=two_groups(model))
    for _ in range(3):
        step(name, opt, model, data)
    assert any(not torch.equal(a, b) for a, b in zip(scheduled, snapshot(model)))


def trajectory(name, scale_group=None, steps=6) -> list[torch.Tensor]:
    """Parameters after `steps` steps; scale_group(group, i) may edit each group before step i."""
    data = make_data()
    model = Net()
    opt = build(name, model)
    for i in range(steps):
        if scale_group is not None:
            for group in opt.param_groups:
                scale_group(group, i)
        step(name, opt, model, data)
    return snapshot(model)


def _halve_lr(group, i):
    if "lr" in group:
        group["lr"] = group.get("initial_lr_for_test", group.setdefault("initial_lr_for_test", group["lr"])) * 0.5


@pytest.mark.parametrize("name", NAMES)
def test_lr_schedule_declaration_matches_the_step(name):
    """What the loop does with a schedule factor of 0.5 (OptimizerInfo.lr_schedule) changes the step exactly when
    the declaration says it does; a refused schedule is refused at plan time."""
    info = optim.info(name)
    plain = trajectory(name)
    if info.lr_schedule == "group_lr":
        scaled = trajectory(name, _halve_lr)
        assert any(not torch.equal(a, b) for a, b in zip(plain, scaled)), f"{name}: group['lr'] has no effect"
    elif info.lr_schedule == "multiplier":
        same = trajectory(name, lambda group, i: group.__setitem__(LR_MULTIPLIER, 1.0))
        scaled = trajectory(name, lambda group, i: group.__setitem__(LR_MULTIPLIER, 0.5))
        assert all(torch.equal(a, b) for a, b in zip(plain, same))
        assert any(not torch.equal(a, b) for a, b in zip(plain, scaled)), f"{name}: the multiplier has no effect"
    else:  # refused: the method owns its step size; an lr written into its groups changes nothing...
        assert info.owns_step_size
        scaled = trajectory(name, _halve_lr)
        assert all(torch.equal(a, b) for a, b in zip(plain, scaled)), f"{name}: group['lr'] changes the step"
        # ...so the plan refuses an outer schedule or an lr controller, and accepts the rest
        spec = dict(paper="core", problem="digits_mlp", scale="smoke", optimizer=name)
        with pytest.raises(ValueError, match="sets its own step size.*schedule 'cosine'"):
            make_spec(**spec, schedule={"name": "cosine"})
        with pytest.raises(ValueError, match="controller 'reduce_on_plateau'"):
            make_spec(**spec, controllers=[{"name": "reduce_on_plateau"}])
        make_spec(**spec, controllers=[{"name": "early_stopping"}])


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_declaration(name):
    """param_groups="one": a second group is refused, naming the reason; "many": groups keep their own settings
    (test_lr_scheduler_drives_every_group checks that a group with lr 0 stays put)."""
    info = optim.info(name)
    model = Net()
    groups = two_groups(model)
    if info.param_groups == "one":
        with pytest.raises(ValueError, match="supports one parameter group"):
            build(name, model, params=groups)
        opt = build(name, model)
        with pytest.raises(ValueError, match="supports one parameter group"):
            opt.add_param_group({"params": [model.unused]})
    elif not info.needs_model:
        assert len(build(name, model, params=groups).param_groups) == 2


def _needs(name, key, **switch) -> bool:
    """Whether building `name` with `key` left at None fails, naming it."""
    try:
        optim.build(name, Net(), **TEST_HPARAMS.get(name, {}), **switch)
    except ValueError as error:
        return key in str(error)
    return False


@pytest.mark.parametrize("name", NAMES)
def test_run_length_declaration(name):
    """A hyperparameter the optimizer cannot do without the run's length (at its defaults, or with one of its
    boolean switches on, e.g. NOS's use_decay) is declared in run_length_hparams, which the loop fills (a spec's
    own value is kept); every other hyperparameter works at its default."""
    info = optim.info(name)
    switches = [k for k, v in info.defaults.items() if v is False]
    for key, default in info.defaults.items():
        needed = default is None and (_needs(name, key) or any(_needs(name, key, **{k: True}) for k in switches))
        if needed:
            assert key in info.run_length_hparams, f"{name}: {key} needs the run length but is not declared"
    for key in info.run_length_hparams:
        assert info.fill_run_length({}, 7)[key] == 7 and info.fill_run_length({key: 3}, 7)[key] == 3
        build(name, Net())  # with the run length filled in
    if not info.run_length_hparams:
        optim.build(name, Net(), **TEST_HPARAMS.get(name, {}))


@pytest.mark.parametrize("name", NAMES)
def test_closure_declaration(name):
    """closure="none" steps without a closure; a closure optimizer refuses to, and takes both closure forms with
    the same result: after several steps torch's zero-argument form gives the same parameters as the one-argument
    form, and pays one backward pass per evaluation, which the closure's pass counters record."""
    info = optim.info(name)
    data = make_data()
    if not info.requires_closure:
        model = Net()
        opt = build(name, model)
        opt.zero_grad()
        loss_of(model, data).backward()
        opt.step()
        return
    model = Net()
    with pytest.raises(RuntimeError, match="requires a closure"):
        build(name, model).step()
    forms = {}
    for form in ("backward", "torch"):
        model = Net()
        opt = build(name, model)
        for _ in range(5):
            step(name, opt, model, data, form)
        forms[form] = snapshot(model)
    for a, b in zip(forms["backward"], forms["torch"]):
        assert torch.equal(a, b), f"{name}: the closure forms differ by {float((a - b).abs().max())}"
    # pass counting through the loop's closure
    model = Net()
    opt = build(name, model)
    batch = make_data()

    def forward(model, batch, carry):
        loss = loss_of(model, batch)
        return Output(loss=loss, sums={}, count=len(batch[0]))

    counted = {}
    for form in ("backward", "torch"):
        closure = StepClosure(model, forward, [batch])
        opt.step(closure if form == "backward" else torch_form(name, closure))
        counted[form] = (closure.forward_passes, closure.backward_passes)
    assert counted["torch"][1] == counted["torch"][0], "torch's form back-propagates at every evaluation"
    if name in GRADIENT_EVALUATIONS_ONLY:
        assert counted["backward"][1] == counted["backward"][0] >= 1
    else:  # the one-argument form spares the backward pass at trial points
        assert counted["backward"][1] < counted["backward"][0]


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("name", CLOSURE_NAMES)
def test_trial_batchnorm_declaration(name):
    """The BatchNorm handling the registry declares for each setting is the optimizer's own, and through the
    loop's closure it holds: "frozen" counts one BatchNorm update per step, "moving" one per evaluation."""
    info = optim.info(name)
    table = info.trial_batchnorm if not isinstance(info.trial_batchnorm, str) else {None: {None: info.trial_batchnorm}}
    ((key, values),) = table.items()
    data = make_data()
    for value, declared in values.items():
        hparams = {} if key is None else {key: value}
        assert info.trial_batchnorm_for(hparams) == declared
        model = BatchNormNet()
        opt = build(name, model, **hparams)
        assert getattr(opt, "trial_batchnorm", declared) == declared

        def forward(model, batch, carry):
            return Output(loss=loss_of(model, batch), sums={}, count=len(batch[0]))

        closure = StepClosure(model, forward, [data], trial_batchnorm=declared)
        opt.step(closure)
        tracked = int(batchnorm_buffers(model)[2])
        assert closure.forward_passes > 1 or name in GRADIENT_EVALUATIONS_ONLY
        assert tracked == (1 if declared == "frozen" else closure.forward_passes), (name, value)


@pytest.mark.parametrize("name", NAMES)
def test_internals_declaration(name):
    """internals=True: internals() gives plain floats after a step (the loop logs them at log points)."""
    info = optim.info(name)
    model = Net()
    opt = build(name, model)
    step(name, opt, model, make_data())
    assert info.internals == callable(getattr(opt, "internals", None))
    if info.internals:
        values = opt.internals()
        assert values and all(isinstance(k, str) and isinstance(v, float) for k, v in values.items())


@pytest.mark.parametrize("name, form", NAME_FORMS)
def test_frozen_and_gradless_parameters_stay_put(name, form):
    data = make_data()
    model = Net()
    opt = build(name, model)
    frozen = [p.detach().clone() for p in model.frozen.parameters()]
    unused = model.unused.detach().clone()
    moving = snapshot(model.body)
    for _ in range(6):
        step(name, opt, model, data, form)
    for before, p in zip(frozen, model.frozen.parameters()):
        assert torch.equal(before, p)
    assert torch.equal(unused, model.unused)
    assert model.unused.grad is None
    assert any(not torch.equal(a, b) for a, b in zip(moving, snapshot(model.body)))


@pytest.mark.parametrize("name, form", NAME_FORMS)
def test_float64(name, form):
    data = make_data(torch.float64)
    model = Net(dtype=torch.float64)
    opt = build(name, model)
    with torch.no_grad():
        initial = float(loss_of(model, data))
    for _ in range(STEPS):
        step(name, opt, model, data, form)
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


@pytest.mark.parametrize("name, hparams, named", [
    ("adam", {"lr": True}, "'lr'"), ("adam", {"lr": "x"}, "'lr'"), ("adam", {"lr": -1.0}, "'lr'"),
    ("alsals", {"betas": (1.2, 0.9)}, "'betas'"), ("caadam_additive", {"gamma": -1.0}, "'gamma'"),
])
def test_build_refuses_a_bad_value_as_the_planner_does(name, hparams, named):
    # build is the practitioner's entry point: it must refuse what make_spec refuses, naming the key and what
    # is valid, not pass it to the optimizer (adam accepted lr=True; lr="x" gave a bare TypeError)
    with pytest.raises((ValueError, TypeError)) as error:
        optim.build(name, Net(), **hparams)
    message = str(error.value)
    assert named in message and f"optimizer {name!r}" in message and "valid" in message.lower()


def test_unknown_optimizer_is_refused_with_the_choices():
    with pytest.raises(UnknownNameError) as error:
        optim.build("adamm", Net())
    assert "'adamm'" in str(error.value) and "adam" in str(error.value) and "sgd" in str(error.value)


def test_an_unknown_study_version_is_refused_not_replaced_by_the_default_space():
    with pytest.raises(UnknownNameError, match=r"unknown study version 'v2'.*Valid choices: default, icml, v1"):
        search_space("adam", "v2")
    assert search_space("adam", "v1") == optim.info("adam").search_space.get("v1", search_space("adam", "default"))


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


def test_fused_is_asked_for_only_on_the_devices_of_the_class():
    # torch's fused Adagrad exists on CPU only; fused=True on CUDA raises (tests/test_gpu.py caught it on an H200)
    from optrepro.optim._base import fastest_torch_kwargs

    p = nn.Parameter(torch.zeros(3))
    assert fastest_torch_kwargs([p], True) == {"fused": True}
    assert fastest_torch_kwargs([p], True, ("cuda",)) == {"foreach": False}
    assert fastest_torch_kwargs([p], False) == {"foreach": False}
    assert optim.build("adagrad", nn.Linear(2, 1)).defaults["fused"] is True  # on CPU: torch's fused kernel


def test_every_catalog_module_of_a_package_registers_without_being_listed(tmp_path, monkeypatch):
    # A new catalog_*.py used to need a line in catalog.py too; left out, its entries were silently missing.
    from optrepro import registry
    from optrepro.registry import import_catalogs

    monkeypatch.setattr(registry, "_CATALOGS_IMPORTED", set())  # the process's record, restored afterwards
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("LOADED = []\n")
    for module in ("catalog_one", "catalog_two", "helpers"):
        (package / f"{module}.py").write_text(f"import fakepkg\nfakepkg.LOADED.append({module!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_catalogs("fakepkg")
    import fakepkg

    assert fakepkg.LOADED == ["catalog_one", "catalog_two"]  # every catalog, in name order; nothing else
    # every registry lookup calls import_catalogs: after the first, it must not list the package again (doing
    # so cost 0.1 ms per lookup and made the test suite a third slower)
    import pkgutil
    monkeypatch.setattr(pkgutil, "iter_modules", lambda *a, **k: pytest.fail("the package was listed again"))
    import_catalogs("fakepkg")
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fakepkg")
    for module in ("catalog_one", "catalog_two"):
        monkeypatch.delitem(sys.modules, f"fakepkg.{module}")
