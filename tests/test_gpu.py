"""GPU checks (opt-in: `pytest -m gpu`, run by `make gpu-check` on a machine with CUDA; conftest.py leaves the GPU
visible only when the mark expression selects gpu tests)."""
import math

import pytest
import torch
from torch import nn

from optrepro import optim
from optrepro.optim.registry import OPTIMIZERS, OptimizerInfo
from optrepro.plan import make_spec, run_id
from optrepro.runner import run_one
from optrepro.train import LOG_EVERY_STEPS, load_result, train

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
NO_CLOSURE = [n for n in optim.available() if not optim.info(n).requires_closure]


def cuda_spec(**kw):
    base = dict(paper="core", problem="digits_mlp", scale="full", optimizer="adam", seed=0, epochs=2,
                device="cuda")
    base.update(kw)
    return make_spec(**base)


@needs_cuda
def test_a_cuda_run_is_deterministic(tmp_path):
    s = cuda_spec(problem_args={"dropout": 0.2})
    a = run_one(s, tmp_path / "a")
    run_one(s, tmp_path / "b")
    ra, rb = (load_result(tmp_path / d / "runs" / run_id(s)) for d in "ab")
    assert ra["deterministic"] == rb["deterministic"] and a["status"] == "ok"
    assert ra["volatile"]["provenance"]["gpu"]


@needs_cuda
def test_bf16_mixed_precision_runs(tmp_path):
    s = cuda_spec(precision="bf16")
    assert run_one(s, tmp_path)["status"] == "ok"


def _closure(model, x, y):
    def closure(backward=True, create_graph=False):  # create_graph: AdaHessian's Hessian-vector product
        with torch.enable_grad() if backward else torch.no_grad():
            loss = nn.functional.mse_loss(model(x), y)
            if backward:
                params = list(model.parameters())
                for p, g in zip(params, torch.autograd.grad(loss, params, create_graph=create_graph)):
                    p.grad = g
        return loss.detach()
    return closure


@needs_cuda
@pytest.mark.parametrize("name", optim.available())
def test_every_optimizer_steps_on_cuda(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)).cuda()
    x, y = torch.randn(256, 16, device="cuda"), torch.randn(256, 1, device="cuda")
    info = optim.info(name)
    opt = optim.build(name, model, **info.fill_run_length({}, 50))
    closure = _closure(model, x, y)
    losses = []
    for _ in range(50):
        if info.requires_closure:
            losses.append(float(opt.step(closure)))
        else:
            losses.append(float(closure(backward=True)))
            opt.step()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def _first_curvature(precision: str, tf32: bool) -> torch.Tensor:
    """The fuzzy method's first finite-difference curvature on CUDA, the closure's forward in `precision`
    (bf16: autocast, as the training loop runs it) with TF32 matmuls allowed or not."""
    from optrepro.optim.fuzzy import FuzzySecondOrder

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 1)).cuda()
    x, y = torch.randn(512, 64, device="cuda"), torch.randn(512, 1, device="cuda")

    def closure(backward=True, full_precision=False):
        for p in model.parameters():
            p.grad = None
        with torch.enable_grad(), torch.autocast("cuda", dtype=torch.bfloat16,
                                                 enabled=precision == "bf16" and not full_precision):
            loss = nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        return loss.detach()

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        opt = FuzzySecondOrder(model.parameters(), fuzzy=False)
        opt.step(closure)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return torch.cat([opt.state[p]["exp_avg_curv"].flatten() for p in model.parameters()])


@needs_cuda
def test_fuzzy_probe_runs_in_fp32_on_cuda_under_bf16_and_tf32():
    # both gradients of the finite difference in fp32 with TF32 off: the bf16/TF32 training setting must not
    # reach the probe (r = 1e-3 turns their rounding into curvature noise)
    reference = _first_curvature("fp32", tf32=False)
    assert reference.abs().max() > 0
    assert torch.allclose(_first_curvature("bf16", tf32=True), reference, rtol=1e-4, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("name", NO_CLOSURE)
def test_the_loop_does_not_synchronise_between_log_points(tmp_path, name):
    # 3 epochs of 18 steps: log points at 18, 36, 50 (LOG_EVERY_STEPS) and 54; every step in between runs under
    # torch.cuda.set_sync_debug_mode("error"), with dropout drawing from the GPU generator
    assert LOG_EVERY_STEPS == 50
    s = cuda_spec(optimizer=name, epochs=3, problem_args={"dropout": 0.1})
    result = train(s, tmp_path / "run", sync_check=True)
    assert result["deterministic"]["status"] == "ok" and result["deterministic"]["steps"] == 54


@needs_cuda
def test_the_sync_check_catches_a_host_read_in_a_step(tmp_path, monkeypatch):
    # the check above can fail: an optimizer that reads a loss-like value each step is caught
    class ReadingSGD(torch.optim.SGD):
        def step(self, closure=None):
            float(self.param_groups[0]["params"][0].grad.sum())  # a host read: a synchronisation
            return super().step(closure)

    import optrepro.optim as optim_pkg
    monkeypatch.setattr(optim_pkg, "ReadingSGD", ReadingSGD, raising=False)
    monkeypatch.setitem(OPTIMIZERS._entries, "test_reading_sgd",
                        OptimizerInfo(name="test_reading_sgd", target="optrepro.optim:ReadingSGD",
                                      defaults={"lr": 0.1}))
    with pytest.raises(RuntimeError, match="synchroniz"):
        train(cuda_spec(optimizer="test_reading_sgd", epochs=1), tmp_path / "run", sync_check=True)
    torch.cuda.set_sync_debug_mode("default")
