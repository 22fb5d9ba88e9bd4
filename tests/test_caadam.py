"""CaAdam: factors by hand for each strategy and mode, gamma=0 == torch Adam, state round-trip."""
import copy
import math

import pytest
import torch
from torch import nn

from optrepro.optim.caadam import CaAdam, caadam_factors


def mlp(hidden=(64, 32), inputs=8):
    layers, width = [], inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 1))


def by_kind(factors):
    kernels = [v for k, v in factors.items() if k.endswith("weight")]
    biases = [v for k, v in factors.items() if k.endswith("bias")]
    return kernels, biases


def test_reference_mode_reproduces_keras_name_collision():
    # MLP [64,32] on 8 inputs: kernels 512, 2048, 32 -> min 32, median 512, max 2048, LAST kernel 32.
    # Keras keyed counts by short name, so every kernel takes the last kernel's count (the authors' caadam/caadam.py).
    kernels, biases = by_kind(caadam_factors(mlp(), "additive", "reference"))
    assert kernels == pytest.approx([1.95] * 3)
    assert biases == pytest.approx([1 + 0.95 * 512 / (512 - 32)] * 3)  # c = 0 -> 2.0133
    assert biases[0] == pytest.approx(2.0133, abs=1e-4)
    kernels, biases = by_kind(caadam_factors(mlp(), "multiplicative", "reference"))
    assert kernels == pytest.approx([5.0] * 3)
    assert biases[0] == pytest.approx(5.5663, abs=1e-4)
    depth = list(caadam_factors(mlp(), "depth", "reference").values())
    assert depth == pytest.approx([1.7818, 1.5874, 1.4142, 1.2599, 1.1225, 1.0], abs=1e-4)


def test_described_mode_uses_each_tensors_own_count():
    factors = caadam_factors(mlp(), "additive", "described", gamma=0.95)
    # kernel 0: c = 512 = median -> 1; kernel 1: c = 2048 = max -> 1 - gamma; kernel 2: c = 32 = min -> 1 + gamma
    assert factors["0.weight"] == pytest.approx(1.0)
    assert factors["2.weight"] == pytest.approx(0.05)
    assert factors["4.weight"] == pytest.approx(1.95)
    assert factors["2.bias"] == factors["2.weight"]  # one_d="owner": biases follow their layer
    mul = caadam_factors(mlp(), "multiplicative", "described", gamma=5.0)
    assert (mul["0.weight"], mul["2.weight"], mul["4.weight"]) == pytest.approx((1.0, 5.0, 5.0))  # non-monotone
    depth = caadam_factors(mlp(), "depth", "described", gamma=1.0)  # 3 layers: weight and bias share a depth
    assert depth["0.weight"] == depth["0.bias"] == pytest.approx(2 ** (2 / 3))
    assert depth["4.bias"] == pytest.approx(1.0)
    exempt = caadam_factors(mlp(), "additive", "described", one_d="exempt")
    assert exempt["2.bias"] == 1.0


def test_median_tie_is_guarded_not_nan():
    # three equal kernels and one larger: median == c_min, the authors' 0/0 case
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 8))
    for mode in ("reference", "described"):
        for strategy in ("additive", "multiplicative"):
            values = caadam_factors(model, strategy, mode).values()
            assert all(math.isfinite(v) for v in values), (mode, strategy)


def test_tied_and_frozen_parameters():
    model = mlp()
    model[0].bias.requires_grad_(False)
    factors = caadam_factors(model, "depth", "reference")
    assert "0.bias" not in factors and len(factors) == 5
    tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert len(caadam_factors(tied, "additive", "described")) == 3  # the shared weight counted once


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.h, self.dec = nn.Embedding(50, 8), nn.Linear(8, 8), nn.Linear(8, 50)
        self.dec.weight = self.emb.weight


def test_described_tied_decoder_bias_follows_the_tied_kernel():
    # named_parameters lists emb.weight, h.weight, h.bias, dec.bias: dec's kernel is the embedding's (c = 400)
    factors = caadam_factors(TiedLM(), "additive", "described", gamma=0.95)
    assert factors["emb.weight"] == pytest.approx(0.05)  # 400 = c_max
    assert factors["dec.bias"] == factors["emb.weight"]  # not S = 1 as for a norm layer
    assert factors["h.bias"] == factors["h.weight"] == pytest.approx(1.95)
    depth = caadam_factors(TiedLM(), "depth", "described", gamma=1.0)  # emb, h, dec: the tied kernel at emb's depth
    assert (depth["emb.weight"], depth["h.weight"], depth["dec.bias"]) == pytest.approx((2 ** (2 / 3), 2 ** (1 / 3), 1.0))


def test_reference_mode_statistics_are_over_the_optimizers_parameters():
    # MLP [64,32]: the optimizer gets layers 0 and 2 only. Keras computed over its var_list: kernels 512, 2048 ->
    # min 512, median 1280, max 2048, last 2048; biases c = 0; d_m = 4 tensors
    model = mlp()
    first_two = [model[0].weight, model[0].bias, model[2].weight, model[2].bias]
    opt = CaAdam(model, strategy="additive", mode="reference", params=first_two)
    assert sorted(opt.factors) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert (opt.factor_of(model[0].weight), opt.factor_of(model[2].weight)) == pytest.approx((0.05, 0.05))
    assert opt.factor_of(model[0].bias) == pytest.approx(1 + 0.95 * 1280 / (1280 - 512))
    assert caadam_factors(model, "additive", "reference", params=first_two) == opt.factors
    depth = CaAdam(model, strategy="depth", mode="reference", params=first_two)
    assert depth.factor_of(model[2].bias) == pytest.approx(1.0) and depth.factor_of(model[0].weight) == pytest.approx(2 ** 0.75)
    # adding the last layer gives the whole model's var_list, hence the whole model's factors
    opt.add_param_group({"params": [model[4].weight, model[4].bias]})
    assert opt.factors == pytest.approx(caadam_factors(model, "additive", "reference"))
    assert opt.factor_of(model[0].weight) == pytest.approx(1.95)
    # described mode reads the whole model's structure whatever the optimizer gets
    described = CaAdam(model, strategy="additive", mode="described", params=first_two)
    assert described.factor_of(model[0].weight) == pytest.approx(1.0)


@pytest.mark.parametrize("strategy,gamma", [("additive", 0.0), ("depth", 0.0), ("multiplicative", 1.0)])
def test_neutral_gamma_matches_torch_adam(strategy, gamma):
    torch.manual_seed(0)
    model = mlp((16, 8))
    reference = mlp((16, 8))
    reference.load_state_dict(model.state_dict())
    ours = CaAdam(model, lr=1e-2, strategy=strategy, gamma=gamma, mode="described")
    theirs = torch.optim.Adam(reference.parameters(), lr=1e-2)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    for _ in range(100):
        for net, opt in ((model, ours), (reference, theirs)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_factor_scales_the_step():
    torch.manual_seed(0)
    model = mlp((4,))
    start = [p.detach().clone() for p in model.parameters()]
    opt = CaAdam(model, lr=1e-3, strategy="multiplicative", mode="reference")
    model(torch.randn(5, 8)).sum().backward()
    opt.step()
    for (name, p), p0 in zip(model.named_parameters(), start):
        # Adam's first step moves every coordinate by lr (up to eps) times the factor
        moved = (p - p0).abs()
        assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], 1e-3 * opt.factors[name]), rtol=1e-3)


def keras_eps_hat_adam(params, grads_per_step, factors, lr, betas, eps, amsgrad):
    """The authors' Keras update_step written out (caadam/caadam.py), each tensor counting its own steps t:
    alpha = lr * S * sqrt(1 - b2^t) / (1 - b1^t); m, v as Adam's; theta -= alpha * m / (sqrt(v) + eps), with
    v replaced by its running max under amsgrad. A tensor whose gradient is None is skipped that step."""
    b1, b2 = betas
    params = [p.detach().clone() for p in params]
    state = [dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p), v_max=torch.zeros_like(p)) for p in params]
    for grads in grads_per_step:
        for p, g, s, factor in zip(params, grads, state, factors):
            if g is None:
                continue
            s["t"] += 1
            t = s["t"]
            alpha = lr * factor * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            s["v_max"] = torch.maximum(s["v_max"], s["v"])
            p -= alpha * s["m"] / ((s["v_max"] if amsgrad else s["v"]).sqrt() + eps)
    return params


def _eps_hat_run(model, grads_per_step, **kwargs):
    opt = CaAdam(model, lr=1e-2, eps=1e-3, eps_hat=True, strategy="multiplicative", mode="described", **kwargs)
    start = [p.detach().clone() for p in model.parameters()]
    for grads in grads_per_step:
        for p, g in zip(model.parameters(), grads):
            p.grad = None if g is None else g.clone()
        opt.step()
    factors = [opt.factor_of(p) for p in model.parameters()]
    return opt, start, factors


def _grads(model, steps, late=()):
    """Gradients of the size of eps (1e-3), where the eps placement matters; tensors in `late` get none at step 0."""
    gen = torch.Generator().manual_seed(3)
    return [[None if (t == 0 and i in late) else 1e-3 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
             for i, p in enumerate(model.parameters())] for t in range(steps)]


@pytest.mark.parametrize("path", [{}, {"foreach": False}, {"foreach": True}])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_eps_hat_matches_the_keras_update_written_out(path, amsgrad):
    torch.manual_seed(0)
    model = mlp((6, 4)).double()
    grads = _grads(model, 8)
    opt, start, factors = _eps_hat_run(model, grads, amsgrad=amsgrad, **path)
    assert bool(opt.param_groups[0]["fused"]) == (path == {})
    assert len(set(factors)) > 1
    expected = keras_eps_hat_adam(start, grads, factors, 1e-2, (0.9, 0.999), 1e-3, amsgrad)
    for p, want, p0 in zip(model.parameters(), expected, start):
        assert (want - p0).abs().max() > 1e-3  # moved: the comparison is not trivial
        assert torch.allclose(p, want, rtol=0, atol=1e-13), (p - want).abs().max()


@pytest.mark.parametrize("path", [{}, {"foreach": False}])
def test_eps_hat_uses_each_tensors_own_step_count(path):
    # the last layer's tensors (indices 4, 5) get their first gradient one step late: their eps_t must come from
    # their own step count, not from the first tensor's
    torch.manual_seed(0)
    model = mlp((6, 4)).double()
    grads = _grads(model, 6, late={4, 5})
    opt, start, factors = _eps_hat_run(model, grads, **path)
    steps = [float(opt.state[p]["step"]) for p in model.parameters()]
    assert steps == [6.0] * 4 + [5.0] * 2
    expected = keras_eps_hat_adam(start, grads, factors, 1e-2, (0.9, 0.999), 1e-3, False)
    for p, want in zip(model.parameters(), expected):
        assert torch.allclose(p, want, rtol=0, atol=1e-13), (p - want).abs().max()


def test_eps_hat_is_a_default_for_added_groups_and_loaded_adam_state():
    model = mlp((4,))
    opt = CaAdam(model, mode="described", eps_hat=True, params=[model[0].weight, model[0].bias])
    opt.add_param_group({"params": [model[2].weight, model[2].bias]})
    assert opt.defaults["eps_hat"] is True and opt.param_groups[1]["eps_hat"] is True
    model(torch.randn(3, 8)).sum().backward()
    opt.step()
    assert opt.state[model[2].weight]["step"] == 1
    with pytest.raises(ValueError, match="not a trainable parameter"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))]})
    assert len(opt.param_groups) == 2
    # torch.optim.Adam's state_dict has no eps_hat: it loads as torch's form, and a neutral CaAdam then tracks Adam
    torch.manual_seed(0)
    model, twin = mlp((4,)), mlp((4,))
    twin.load_state_dict(model.state_dict())
    x = torch.randn(6, 8)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(x).sum().backward()
    adam.step()
    twin.load_state_dict(model.state_dict())
    ours = CaAdam(twin, lr=1e-2, strategy="additive", gamma=0.0, eps_hat=True)
    ours.load_state_dict(copy.deepcopy(adam.state_dict()))
    assert ours.param_groups[0]["eps_hat"] is False
    for _ in range(3):
        for net, o in ((model, adam), (twin, ours)):
            o.zero_grad()
            net(x).sum().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=0)


def test_state_dict_round_trip_and_bad_choices():
    torch.manual_seed(0)
    model = mlp((4,))
    opt = CaAdam(model, strategy="depth")
    x = torch.randn(6, 8)
    model(x).sum().backward()
    opt.step()
    clone = mlp((4,))
    clone.load_state_dict(model.state_dict())
    opt2 = CaAdam(clone, strategy="depth")
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch aliases same-device tensors otherwise
    for net, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        net(x).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="Valid choices: additive, depth, multiplicative"):
        CaAdam(model, strategy="addtive")
    with pytest.raises(ValueError, match="mode"):
        CaAdam(model, mode="as-run")
    with pytest.raises(TypeError):
        CaAdam(list(model.parameters()))


def _net():
    """An MLP with a LayerNorm: a 1-D scale/shift that owns no kernel."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))


@pytest.mark.parametrize("mode", ["reference", "described"])
@pytest.mark.parametrize("strategy", ["additive", "multiplicative", "depth"])
def test_fused_fast_path_matches_reference_path(strategy, mode):
    # fast: the default (torch's fused kernel once per factor); reference: torch's functional Adam on its
    # for-loop path once per factor. 100 steps, equal within 1e-6 relative. lr 1e-3: with lr 1e-2 and factors ~5
    # this net trains in a chaotic regime where torch's own fused and for-loop Adam drift apart too.
    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(2)), torch.randn(32, 1)
    for kwargs in ({"lr": 1e-3, "eps": 1e-7, "eps_hat": True}, {"lr": 1e-3, "amsgrad": True, "weight_decay": 1e-2}):
        start = _net()
        fast_model, slow_model = copy.deepcopy(start), copy.deepcopy(start)
        fast = CaAdam(fast_model, strategy=strategy, mode=mode, **kwargs)
        slow = CaAdam(slow_model, strategy=strategy, mode=mode, foreach=False, **kwargs)
        assert fast.param_groups[0]["fused"] and not slow.param_groups[0]["fused"]
        assert len(set(fast.factors.values())) > 1
        for _ in range(100):
            for net, opt in ((fast_model, fast), (slow_model, slow)):
                opt.zero_grad()
                nn.functional.mse_loss(net(x), y).backward()
                opt.step()
        for a, b, a0 in zip(fast_model.parameters(), slow_model.parameters(), start.parameters()):
            assert (a - a0).abs().max() > 1e-2  # both moved far: equality is not trivial
            # relative to the tensor's scale: fused and for-loop Adam round differently (torch's own two differ alike)
            assert (a - b).abs().max() <= 1e-6 * a.abs().max(), (strategy, mode, kwargs, (a - b).abs().max())


def test_default_takes_the_fused_kernel_and_refuses_bad_params():
    model = mlp((4,))
    assert CaAdam(model).param_groups[0]["fused"]
    assert not CaAdam(model, foreach=True).param_groups[0]["fused"]
    with pytest.raises(ValueError, match="not a trainable parameter"):
        CaAdam(model, params=[nn.Parameter(torch.ones(2))])


@pytest.mark.parametrize("eps_hat", [False, True])
@pytest.mark.parametrize("strategy", ["multiplicative", "depth"])
def test_equals_torch_adam_with_one_group_per_factor_bit_for_bit(strategy, eps_hat):
    # CaAdam's definition through torch's public class: one fused Adam param group per distinct factor S with
    # lr * S (eps-hat: that step's eps / sqrt(1 - beta2^t)). CaAdam runs the same kernel on the same buckets.
    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(2)), torch.randn(32, 1)
    start = _net()
    ours_model, torch_model = copy.deepcopy(start), copy.deepcopy(start)
    ours = CaAdam(ours_model, lr=1e-2, strategy=strategy, eps=1e-7, eps_hat=eps_hat)
    by_factor: dict[float, list] = {}
    for (name, _), p in zip(ours_model.named_parameters(), torch_model.parameters()):
        by_factor.setdefault(ours.factors[name], []).append(p)
    assert len(by_factor) >= 2
    reference = torch.optim.Adam([{"params": ps, "lr": 1e-2 * f} for f, ps in by_factor.items()], eps=1e-7,
                                 fused=True)
    for t in range(1, 21):
        if eps_hat:
            for group in reference.param_groups:
                group["eps"] = 1e-7 / math.sqrt(1 - 0.999 ** t)
        for net, opt in ((ours_model, ours), (torch_model, reference)):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    for a, b, a0 in zip(ours_model.parameters(), torch_model.parameters(), start.parameters()):
        assert not torch.equal(a, a0) and torch.equal(a, b)


def test_eps_hat_needs_no_device_read_of_the_step_counts(monkeypatch):
    # the counts are mirrored on the host: a step reads no tensor back (on a GPU, no synchronisation)
    model = _net()
    opt = CaAdam(model, eps_hat=True, strategy="depth")
    x = torch.randn(4, 8)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a step read a tensor back to the host")

    for _ in range(3):
        opt.zero_grad()
        model(x).sum().backward()
        with monkeypatch.context() as m:
            for method in ("__float__", "__int__", "item", "tolist", "__bool__"):
                m.setattr(torch.Tensor, method, refuse)
            opt.step()
    assert [int(opt.state[p]["step"]) for p in model.parameters()] == [3] * len(list(model.parameters()))
    # after a load the counts come from the state once, and the next step continues from them
    twin = copy.deepcopy(model)
    opt2 = CaAdam(twin, eps_hat=True, strategy="depth")
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for net, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        net(x).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
