"""GPU checks (opt-in: `pytest -m gpu`, run by `make gpu-check` on a machine with CUDA)."""
import pytest
import torch

from optrepro import optim
from optrepro.plan import make_spec, run_id
from optrepro.runner import run_one
from optrepro.train import load_result

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def cuda_spec(**kw):
    base = dict(paper="core", problem="digits_mlp", scale="full", optimizer="adam", seed=0, epochs=2,
                device="cuda")
    base.update(kw)
    return make_spec(**base)


@needs_cuda
def test_a_cuda_run_is_deterministic(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("OPTREPRO_GPU", "0"))
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


@needs_cuda
@pytest.mark.parametrize("name", [n for n in optim.available() if not optim.info(n).requires_closure])
def test_every_optimizer_steps_on_cuda(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).cuda()
    x, y = torch.randn(256, 16, device="cuda"), torch.randn(256, 1, device="cuda")
    hparams = {"total_steps": 50} if optim.info(name).defaults.get("total_steps", 0) is None else {}
    opt = optim.build(name, model, **hparams)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
