"""AdaHessian against its paper's update (Yao et al., AAAI 2021, arXiv 2006.00719, Algorithm 1 and Eqs. 8-12),
computed by hand on quadratics whose Hessian is known, and its closure contract."""
import pytest
import torch
from torch import nn

from optrepro import optim
from optrepro.optim.adahessian import SEED_STRIDE, AdaHessian


def quadratic(shapes, seed=0):
    """f(x) = x'Ax/2 + c'x over the concatenated parameters (float64, A SPD and not diagonal)."""
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64)) for shape in shapes]
    n = sum(p.numel() for p in params)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    hessian = a @ a.T + torch.eye(n, dtype=torch.float64)
    c = torch.randn(n, generator=gen, dtype=torch.float64)

    def loss_fn():
        x = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * x @ hessian @ x + c @ x

    def closure(backward=True, create_graph=False):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        for p, g in zip(params, grads):
            p.grad = g
        return loss.detach()
    return params, hessian, c, closure


def probes(params, seed, step):
    """The optimizer's Rademacher draws at `step` (one CPU generator, tensors in parameter order)."""
    gen = torch.Generator().manual_seed(seed * SEED_STRIDE + step)
    return [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(torch.float64) for p in params]


def reference_steps(params, hessian, c, steps, lr, beta1, beta2, eps, k, weight_decay, seed):
    """Algorithm 1: g_t; D_t = z * (H z) (Hutchinson, Eq. 8); D^(s) by spatial averaging (Eq. 10: blocks of a
    conv kernel's k x k, of |.| as the authors' code; size 1 otherwise); v_t = beta2 v + (1 - beta2) D^(s)^2 and
    \\bar D_t = sqrt(v_t / (1 - beta2^t)) (Eq. 11); m_t as Adam's (Eq. 12); theta -= lr m_hat / (\\bar D^k + eps),
    with the authors' decoupled weight decay."""
    x = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    sizes = [p.numel() for p in params]
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for t in range(1, steps + 1):
        g = hessian @ x + c
        z = torch.cat([zi.reshape(-1) for zi in probes(params, seed, t - 1)])
        d = z * (hessian @ z)
        parts = []
        for p, part in zip(params, torch.split(d, sizes)):
            if p.dim() == 4:
                part = part.abs().reshape(p.shape).mean(dim=(2, 3), keepdim=True).expand(p.shape).reshape(-1)
            parts.append(part)
        d = torch.cat(parts)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * d * d
        m_hat = m / (1 - beta1 ** t)
        d_bar = torch.sqrt(v / (1 - beta2 ** t))
        x = x - lr * (m_hat / (d_bar ** k + eps) + weight_decay * x)
    return x


@pytest.mark.parametrize("shapes", [[(3, 4), (5,)], [(2, 3, 3, 3), (4,)]], ids=["dense", "conv"])
@pytest.mark.parametrize("k, weight_decay", [(1.0, 0.0), (0.5, 0.01)])
def test_update_is_the_papers(shapes, k, weight_decay):
    params, hessian, c, closure = quadratic(shapes)
    settings = dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-4)
    expected = reference_steps(params, hessian, c, 4, k=k, weight_decay=weight_decay, seed=3, **settings)
    opt = AdaHessian(params, hessian_power=k, weight_decay=weight_decay, seed=3, **settings)
    for _ in range(4):
        opt.step(closure)
    got = torch.cat([p.detach().reshape(-1) for p in params])
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    moved = torch.cat([p.detach().reshape(-1) for p in quadratic(shapes)[0]])
    assert not torch.allclose(got, moved)  # the test is not vacuous: the parameters moved


def test_hutchinson_estimate_is_unbiased_for_the_diagonal():
    # the estimator AdaHessian squares: z * Hz averages to diag(H) (Eq. 8); one draw does not
    params, hessian, c, closure = quadratic([(40,)])
    opt = AdaHessian(params)
    draws = []
    for step in range(400):
        z = probes(params, 0, step)[0]
        draws.append(z * (hessian @ z))
    diag = torch.diagonal(hessian)
    assert (torch.stack(draws).mean(0) - diag).norm() / diag.norm() < 0.1 < (draws[0] - diag).norm() / diag.norm()
    closure(create_graph=True)
    estimate = opt.hutchinson_diagonal(params, [p.grad for p in params])[0]
    assert torch.allclose(estimate, (probes(params, 0, 0)[0] * (hessian @ probes(params, 0, 0)[0])).abs())


def test_gradients_without_their_graph_are_refused():
    params, _, _, closure = quadratic([(4,)])
    opt = AdaHessian(params)
    with pytest.raises(RuntimeError, match="create_graph"):
        opt.step(lambda backward=True: closure(backward))  # a closure that cannot keep the graph
    with pytest.raises(RuntimeError, match="requires a closure"):
        opt.step()


def test_registry_entry_and_bad_values():
    info = optim.info("adahessian")
    assert info.closure == "hvp" and info.lr_schedule == "group_lr"
    assert info.defaults["lr"] == 0.15 and info.defaults["eps"] == 1e-4  # the authors' code's defaults
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="hessian_power"):
        AdaHessian(p, hessian_power=2.0)
