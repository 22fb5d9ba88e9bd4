"""NOS expression optimizers: the Adam genome == torch Adam, final genomes build and train, text/LaTeX, decays."""
import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from optrepro.nos import space
from optrepro.nos.space import Genome, final_genome
from optrepro.optim.nos_expr import NOSExpression


def model_and_data(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 1)).to(dtype)
    x = torch.randn(64, 5, dtype=dtype)
    return model, x, x.sum(1, keepdim=True).sin()


def train(model, opt, x, y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_adam_genome_matches_torch_adam():
    model, x, y = model_and_data()
    reference = copy.deepcopy(model)
    train(model, NOSExpression(model.parameters(), genome="adam", lr=1e-2), x, y, 100)
    train(reference, torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-7), x, y, 100)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", space.FINAL_NAMES)
def test_every_final_genome_trains(name):
    model, x, y = model_and_data()
    lr = {"opt9": 1e-2, "opt10": 0.5}.get(name, 1e-2)  # i1e chains need SGD-scale steps (i1e(x) ~ x/2, at most 0.22)
    opt = NOSExpression(model.parameters(), genome=name, lr=lr, use_decay=True, total_steps=200,
                        warmup_steps=10, hold_steps=10)
    losses = train(model, opt, x, y, 60)
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-5:]) < losses[0]


def test_opt1_parenthesisations_differ():
    # first step: v_hat = g, s_hat = g^2, q = g. With g^2 = 1e-5 w the paper's r = |1e-5 w - (0.05 g^2 + 0.95 s_hat)|
    # is 0 and clips 1e-5 w to 0; the code's r = |1e-5 w - 0.05 g^2 + 0.95 s_hat| = 1.9e-5 leaves it alone.
    g = math.sqrt(1e-5)
    expected = {"paper": 1.0 - g, "code": 1.0 - g - 1e-5 / (1 + 1e-5)}
    for form, value in expected.items():
        w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
        opt = NOSExpression([w], genome="opt1", opt1_form=form, lr=1.0)
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert float(w.detach()) == pytest.approx(value, abs=1e-12), form


def test_hand_computed_opt10_step_with_and_without_decay():
    total = 50
    for use_decay in (False, True):
        w = nn.Parameter(torch.tensor([0.5, -3.0], dtype=torch.float64))
        opt = NOSExpression([w], genome="opt10", lr=0.1, use_decay=use_decay, total_steps=total)
        w.grad = torch.tensor([2.0, -1.0], dtype=torch.float64)
        opt.step()
        gain = space.decay_base(13, 0, total) * space.decay_base(2, 0, total) if use_decay else 1.0
        u = torch.special.i1e(torch.special.i1e(gain * w.grad))
        mu = 0.85  # cyclical momentum at t = 0 with no warmup: the rising branch starts at 0.85
        b = -0.1 * u
        expected = torch.tensor([0.5, -3.0], dtype=torch.float64) + mu * b - 0.1 * u
        assert torch.allclose(w.detach(), expected)


def _reference_final_step_rules(name, use_decay, w, grads, lr, total, warmup, hold):
    """The released final classes' updates written out in float64 (the authors' finalOptimizers.py), constant lr:
    every genome's operands, ops, decays, momentum and Nesterov form, independent of the genome interpreter.
    Where the interpreter guards a division with eps (register: nos-division-guard: the div of the update and
    of the LR multiplier erfc(erfc(a4)) / dtanh(a8)), so does this."""
    def a(k, t):
        return space.decay_base(k, t, total)

    def dtanh(x):
        return 1 - math.tanh(x) ** 2

    mus = np.concatenate((np.linspace(0.95, 0.85, warmup), np.linspace(0.85, 0.85, hold),
                          np.linspace(0.85, 0.95, total - warmup - hold)))
    w, v, s, ell, mom = w.clone(), *(torch.zeros_like(w) for _ in range(4))
    for t, g in enumerate(grads):
        v, s, ell = 0.9 * v + 0.1 * g, 0.99 * s + 0.01 * g * g, 0.999 * ell + 0.001 * g * g
        v_hat, s_hat, ell_hat = v / (1 - 0.9 ** (t + 1)), s / (1 - 0.99 ** (t + 1)), ell / (1 - 0.999 ** (t + 1))
        q, step = 0.3 * g + 0.7 * v_hat, lr
        lr_mult = math.erfc(math.erfc(a(4, t))) / (dtanh(a(8, t)) + 1e-7) if use_decay else 1.0
        if name in ("opt1", "opt2", "opt3"):
            if name == "opt1":  # the code's parentheses: |1e-5 w - 0.05 g^2 + 0.95 s_hat|
                r = (1e-5 * w - 0.05 * g ** 2 + 0.95 * s_hat).abs()
                c = torch.minimum(torch.maximum(1e-5 * w, -r), r)
            else:
                mix = 0.05 * g ** 2 + 0.95 * s_hat if name == "opt2" else 0.01 * g ** 3 + 0.99 * ell_hat
                c = 1e-5 * w / torch.sqrt(1 + (1e-5 * w - mix) ** 2)
            u = q + c / (1 + c.abs())
        elif name in ("opt4", "opt5"):
            c = torch.exp(v_hat).abs() * (math.atan(a(13, t)) if name == "opt4" else 1.0)
            u, step = q / (torch.minimum(torch.full_like(w, 2.0), c) + 1e-7), lr * lr_mult
        elif name == "opt6":
            c = ((dtanh(a(4, t)) if use_decay else 1.0) * torch.exp(1e-4 * w)).abs()
            u, step = q / (c + 1e-7), lr * lr_mult
        elif name in ("opt7", "opt8"):
            d = max(a(6, t), a(10, t)) if use_decay else 1.0
            u = (torch.tanh if name == "opt7" else torch.asinh)(d * torch.asinh(q))
        elif name == "opt9":
            u = (math.erfc(a(11, t)) if use_decay else 1.0) * g * torch.exp(torch.atan(0.05 * g ** 2 + 0.95 * s_hat))
        elif name == "opt10":
            u = torch.special.i1e(torch.special.i1e((a(13, t) * a(2, t) if use_decay else 1.0) * g))
        else:  # AdamClip variants 0..4 = A1..A5
            bound = {"a1": s_hat.sqrt() + 1e-7, "a2": torch.log(s_hat + 1e-7).abs(),
                     "a3": torch.log(s_hat + 1e-7).abs().sqrt(), "a4": torch.sigmoid(s_hat + 1e-7),
                     "a5": s_hat.sqrt() + 1e-7}[name]
            u = torch.minimum(torch.maximum(v_hat, -bound), bound)
            if name == "a5":
                u = u / max(float(u.norm()), 1.0)
        if name in ("opt9", "opt10"):  # Nesterov as their code: mom <- mu mom - lr u; w += mu mom - lr u
            mom = mus[t] * mom - step * u
            w = w + mus[t] * mom - step * u
        else:
            w = w - step * u
    return w


@pytest.mark.parametrize("use_decay", [False, True])
@pytest.mark.parametrize("name", [n for n in space.FINAL_NAMES if n != "adam"])
def test_final_genomes_match_the_authors_update_rules(name, use_decay):
    total, warmup, hold, lr = 40, 5, 5, 0.05
    torch.manual_seed(0)
    w0 = torch.randn(50, dtype=torch.float64) * 3
    grads = [torch.randn(50, dtype=torch.float64) * 0.5 for _ in range(total - 1)]
    w = nn.Parameter(w0.clone())
    opt = NOSExpression([w], genome=name, lr=lr, use_decay=use_decay, total_steps=total, warmup_steps=warmup,
                        hold_steps=hold)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    expected = _reference_final_step_rules(name, use_decay, w0, grads, lr, total, warmup, hold)
    assert torch.allclose(w.detach(), expected, rtol=0, atol=1e-10)


def test_decays_switch_off_and_need_total_steps():
    w = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="total_steps"):
        NOSExpression([w], genome="opt7", use_decay=True)
    NOSExpression([w], genome="opt7", use_decay=False)  # no decay, no momentum: no T needed
    with pytest.raises(ValueError, match="total_steps"):
        NOSExpression([w], genome="opt4")  # its internal atan(a13) stays on, as in the authors' code
    NOSExpression([w], genome="opt6")  # its dtanh(a4) is switched by use_decay, as in the authors' code
    # Opt7 with decays on: D(0) = max(a6, a10)(0) = 0, so the first update is exactly zero
    opt = NOSExpression([w], genome="opt7", use_decay=True, total_steps=10)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3))


def test_decay_bases_and_schedules():
    total = 100
    assert space.decay_base(13, total - 1, total) == 0.0  # Demon reaches exactly 0 at t = T-1
    assert space.decay_base(3, 0, total) == 1.0 and space.decay_base(4, 0, total) == 0.0
    assert space.decay_base(14, 0, total, "search") == pytest.approx(0.95 - space.decay_base(13, 0, total))
    assert space.decay_base(11, 50, 100) == pytest.approx(0.1)
    assert space.cyclical_momentum(0, 100, 10, 5) == 0.95
    assert space.cyclical_momentum(9, 100, 10, 5) == pytest.approx(0.85)
    assert space.cyclical_momentum(99, 100, 10, 5) == pytest.approx(0.95)
    # one-point np.linspace segments give their start value
    assert [space.cyclical_momentum(t, 5, 1, 1) for t in range(5)] == pytest.approx([0.95, 0.85, 0.85, 0.9, 0.95])
    for x in (1.5, -4.0, 29.0, 31.0, 800.0, -1e5):  # series below |x| = 30, asymptotic above (no overflow at 710)
        assert space._i1e(x) == pytest.approx(float(torch.special.i1e(torch.tensor(x, dtype=torch.float64))),
                                              rel=1e-13)


def test_latex_of_every_final_genome_uses_only_known_macros():
    known = {"cdot", "frac", "sqrt", "operatorname", "left", "right", "hat", "ln", "tanh", "arctan", "max", "min",
             "epsilon", "text", "pm", "le", "lambda", "ell", "sigma"}
    for name in space.FINAL_NAMES:  # e.g. mul's template once glued \cdot to e^{...}: "\cdote" stops pdflatex
        for genome in (final_genome(name), final_genome(name, "paper") if name == "opt1" else None):
            if genome is not None:
                words = set(re.findall(r"\\([A-Za-z]+)", genome.latex()))
                assert words <= known, (name, words - known)
    assert "(0.95(" in final_genome("opt1").text().replace("*", "")  # mix95 parenthesises its arguments


def test_running_max_starts_from_zero_as_the_authors_slot():
    w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = NOSExpression([w], genome=Genome((space.U("running_max", "g"),)), lr=1.0)
    w.grad = torch.tensor([-2.0, 3.0], dtype=torch.float64)
    opt.step()  # u = max(g, 0)
    assert w.detach().tolist() == [0.0, -3.0]


def test_a_parameter_with_a_late_first_gradient_joins_the_groups_step():
    late, early = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = NOSExpression([late, early], genome="opt9", lr=1e-2, total_steps=100)
    for _ in range(5):
        early.grad = torch.ones(2)
        opt.step()
    late.grad = torch.ones(2)
    opt.step()
    assert opt.state[late]["step"] == opt.state[early]["step"] == 6


def test_text_and_latex():
    g = final_genome("opt10")
    assert g.text() == "Nest ~ i1e(i1e([mul(a13,a2)]*g))"
    assert r"\operatorname{i1e}" in g.latex() and "a_{13}" in g.latex()
    assert final_genome("adam").text() == "v_hat/(sqrt(|s_hat|)+eps)"
    assert final_genome("a1").text() == "clip(v_hat,-|(sqrt(|s_hat|)+1e-7)|,|(sqrt(|s_hat|)+1e-7)|)"


def test_bad_genomes_are_refused_with_choices():
    with pytest.raises(ValueError, match="Valid choices"):
        Genome((space.U("cube", "g"),))
    with pytest.raises(ValueError, match="earlier node"):
        Genome((space.U("abs", 0),))
    with pytest.raises(ValueError, match="unknown operand"):
        Genome((space.U("abs", "h"),))
    with pytest.raises(ValueError, match="'opt11'. Did you mean 'opt1'.*Valid choices: .*opt1, opt10"):
        final_genome("opt11")


def test_stateful_ops_and_state_dict_round_trip():
    genome = Genome((space.U("running_max", "g2"), space.U("sqrt_abs", 0), space.B("div", "v_hat", 1)),
                    momentum="momentum")
    model, x, y = model_and_data(dtype=torch.float64)
    opt = NOSExpression(model.parameters(), genome=genome, lr=1e-2, momentum_schedule="constant")
    train(model, opt, x, y, 3)
    clone = copy.deepcopy(model)
    opt2 = NOSExpression(clone.parameters(), genome=genome, lr=1e-2, momentum_schedule="constant")
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    train(model, opt, x, y, 2)
    train(clone, opt2, x, y, 2)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def _train_copies(genome, configs, steps, dtype=torch.float64, **kwargs):
    """Copies of one model trained with NOSExpression under each config (dict of extra kwargs)."""
    model, x, y = model_and_data(dtype=dtype)
    models = [copy.deepcopy(model) for _ in configs]
    opts = [NOSExpression(m.parameters(), genome=genome, **kwargs, **config) for m, config in zip(models, configs)]
    for m, opt in zip(models, opts):
        train(m, opt, x, y, steps)
    return model, models, opts


@pytest.mark.parametrize("name", space.FINAL_NAMES)
def test_per_tensor_path_is_bit_identical_to_foreach(name):
    lr = {"opt10": 0.5}.get(name, 1e-2)
    start, (looped, batched), _ = _train_copies(name, [{"foreach": False}, {"foreach": True}], 20, lr=lr,
                                                use_decay=True, total_steps=100, warmup_steps=5, hold_steps=5)
    for a, b, a0 in zip(looped.parameters(), batched.parameters(), start.parameters()):
        assert not torch.equal(a, a0)
        assert torch.equal(a, b)


def test_compiled_path_matches_eager():
    # a genome with a stateful op, a decay and momentum: every scalar (decays, mu, corrections) changes each
    # step, which must neither recompile nor be frozen at its first value
    genome = Genome((space.U("ema", "g", ("a", 3)), space.U("sqrt_abs", "s_hat"), space.B("div", 0, 1)),
                    momentum="nesterov", lr_decay=("a", 1))
    start, (eager, compiled), (_, opt) = _train_copies(
        genome, [{}, {"compile": True}], 30, lr=1e-2, use_decay=True, total_steps=60)
    assert opt.compile_seconds > 0
    for a, b, a0 in zip(eager.parameters(), compiled.parameters(), start.parameters()):
        assert (a - a0).abs().max() > 1e-3
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["opt1", "opt4", "opt7", "opt10", "a5"])
def test_compiled_final_genomes_match_eager(name):
    # arithmetic (opt1), exp/erfc and an always-on decay (opt4), asinh (opt7), i1e through the opaque op (opt10),
    # a per-tensor norm (a5); 20 steps in float64
    lr = {"opt10": 0.5}.get(name, 1e-2)
    start, (eager, compiled), _ = _train_copies(name, [{}, {"compile": True}], 20, lr=lr, use_decay=True,
                                                total_steps=100, warmup_steps=5, hold_steps=5)
    for a, b, a0 in zip(eager.parameters(), compiled.parameters(), start.parameters()):
        assert not torch.equal(a, a0)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


_TRACED: list[str] = []


@torch._dynamo.register_backend(name="optrepro_test_capture")
def _capture_backend(gm, example_inputs):
    """A torch.compile backend that records the traced graph's code and runs it uncompiled."""
    _TRACED.append(gm.code)
    return gm.forward


@pytest.mark.parametrize("name, fused, left_to_aten", [
    ("opt5", ["torch.exp("], ["_foreach_exp"]),  # exp(v_hat)
    ("a2", ["torch.log("], ["_foreach_log"]),  # ln(|s_hat| + eps)
    ("a4", ["torch.sigmoid("], ["_foreach_sigmoid"]),
    ("a5", ["linalg_vector_norm("], ["_foreach_norm"]),  # clip_norm
])
def test_compiled_trace_writes_unlowered_foreach_ops_per_tensor(name, fused, left_to_aten):
    # inductor has no lowering for these foreach ops: left in the graph they run as separate ATen calls that
    # allocate and write their outputs every step (Opt5 went from 2.0x to 1.2x torch's fused Adam without them)
    _TRACED.clear()
    model, x, y = model_and_data()
    opt = NOSExpression(model.parameters(), genome=name, lr=1e-3, compile="optrepro_test_capture",
                        total_steps=100)
    train(model, opt, x, y, 1)
    code = "\n".join(_TRACED)
    assert code
    for call in fused:
        assert call in code
    for call in left_to_aten:
        assert call not in code


def test_compiled_trace_keeps_aten_tanh_on_cpu():
    _TRACED.clear()
    model, x, y = model_and_data()
    train(model, NOSExpression(model.parameters(), genome="opt7", lr=1e-3, compile="optrepro_test_capture",
                               total_steps=100), x, y, 1)
    code = "\n".join(_TRACED)
    assert "torch._foreach_tanh(" in code and "torch.tanh(" not in code
