"""The closure contract (optrepro.closure): both closure forms, noise replay, options, Hessian-vector products."""
import pytest
import torch
from torch import nn

from optrepro.closure import NoiseRNG, StepClosure, optimizer_closure
from optrepro.problems.base import Output


def regression(model, batch, carry=None):
    x, y = batch
    return Output(loss=nn.functional.mse_loss(model(x), y), sums={}, count=len(x))


def test_torch_form_pays_a_backward_at_trial_points_and_keeps_the_optimizers_gradients():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    step = StepClosure(model, regression, [(x, y)])
    call = optimizer_closure(lambda: step(), list(model.parameters()))  # torch's form around the loop's closure
    call(backward=True)
    grads = [p.grad.clone() for p in model.parameters()]
    held = [p.grad for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # a trial point elsewhere: its gradient differs
        loss = call(backward=False)
    assert not loss.requires_grad
    assert all(p.grad is h and torch.equal(p.grad, g) for p, h, g in zip(model.parameters(), held, grads))
    assert (step.forward_passes, step.backward_passes) == (2, 2)  # the trial point paid its backward pass


def test_one_argument_form_gets_the_options_it_takes():
    seen = []

    def closure(backward=True, full_precision=False):
        seen.append((backward, full_precision))
        return torch.zeros(())

    call = optimizer_closure(closure, [])
    call(backward=False, full_precision=True, create_graph=True)  # create_graph is not taken: left out
    call()
    assert seen == [(False, True), (True, False)]


def test_noise_is_replayed_within_a_step_and_the_stream_goes_on_as_after_one_call():
    model = nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.5), nn.Linear(32, 1))
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    masks = []
    model[1].register_forward_hook(lambda m, inp, out: masks.append(out == 0))
    noise = NoiseRNG("cpu")
    noise.seed(3)
    closure = StepClosure(model, regression, [(x, y)], noise=noise)
    closure(backward=True)
    after_one = torch.get_rng_state()
    closure(backward=False)
    closure(backward=True)
    assert all(torch.equal(m, masks[0]) for m in masks) and masks[0].any()
    assert torch.equal(torch.get_rng_state(), after_one)  # trial evaluations do not shift the next step's noise
    state = noise.get_state()
    a = torch.rand(3)
    noise.set_state(state)
    assert torch.equal(torch.rand(3), a)


def test_full_precision_reaches_a_forward_that_takes_it():
    calls = []

    def forward(model, batch, carry, full_precision=False):
        calls.append(full_precision)
        return regression(model, batch)

    closure = StepClosure(nn.Linear(2, 1), forward, [(torch.randn(4, 2), torch.randn(4, 1))])
    closure(backward=True, full_precision=True)
    closure(backward=False)
    assert calls == [True, False]


def test_create_graph_gives_the_gradients_a_graph_for_hessian_vector_products():
    # f(w) = 0.5 w^T A w on one "batch": H = A, so Hv from the closure's gradients must be A v
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=torch.float64)
    a = a @ a.T
    w = nn.Parameter(torch.randn(5, dtype=torch.float64))
    holder = nn.Module()
    holder.w = w

    def forward(model, batch, carry):
        return Output(loss=0.5 * model.w @ a @ model.w, sums={}, count=1)

    closure = StepClosure(holder, forward, [()])
    closure(backward=True, create_graph=True)
    v = torch.randn(5, dtype=torch.float64)
    (hv,) = torch.autograd.grad(w.grad @ v, [w])
    assert torch.allclose(hv, a @ v)
    closure(backward=True)  # without it, the gradients carry no graph
    assert w.grad.grad_fn is None


def test_bad_trial_batchnorm_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="Valid choices: frozen, moving"):
        StepClosure(nn.Linear(1, 1), regression, [], trial_batchnorm="frozn")
