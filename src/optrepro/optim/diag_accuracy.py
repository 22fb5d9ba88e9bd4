"""How well the fuzzy method's finite-difference probe estimates a Hessian diagonal, on quadratics whose Hessian
is known (the fuzzy section's table; register entry fuzzy-fd-direction).

    rows = diagonal_accuracy(dims=(100, 1000), conditions=(10.0, 1e4))

Each quadratic is f(w) = w'Hw/2 with H = Q diag(lambda) Q' SPD: Q a random orthogonal basis (QR of a Gaussian
matrix, so H is far from diagonal) and lambda log-spaced from 1 to the condition number. The estimates come
from the optimizer's own code, `FuzzySecondOrder.hessian_probe` (r = 1e-3, fp32 parameters, as a training run
computes them), at a random point:
  ones         the literal reading, w + r on every weight: (g(w + r 1) - g(w)) / r = H 1, the row sums, for
               any number of probes (it is deterministic, so an EMA over steps keeps its bias)
  rademacher   w + r z, z = +-1: z * (g(w + r z) - g(w)) / r, unbiased for diag(H); the mean of k probes
               stands for the EMA over steps (beta3 = 0.99 averages about 200)
  hutchinson   z * Hz with an exact Hessian-vector product in float64 (AdaHessian's estimator before its |.|):
               what the finite difference would give without truncation and rounding
Reported per (quadratic, estimator, probes): the relative error ||d_hat - diag H|| / ||diag H||, the share of
negative entries (diag H is positive: a negative entry divides the step the wrong way unless rectified), and the
median relative error per entry.
"""
from __future__ import annotations

import torch
from torch import nn

READINGS = ("ones", "rademacher", "hutchinson")


def spd_quadratic(n: int, condition: float, seed: int = 0) -> torch.Tensor:
    """H = Q diag(lambda) Q' in float64, lambda log-spaced in [1, condition], Q random orthogonal."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # the Haar-distributed basis
    eigenvalues = torch.logspace(0.0, float(torch.log10(torch.tensor(condition))), n, dtype=torch.float64)
    return (q * eigenvalues) @ q.T


def fd_estimates(hessian: torch.Tensor, fd_mode: str, probes: int, r: float = 1e-3, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`probes` estimates of diag(H) (rows) from FuzzySecondOrder.hessian_probe at a random point."""
    from optrepro.optim.fuzzy import FuzzySecondOrder

    gen = torch.Generator().manual_seed(seed + 1)
    w = nn.Parameter(torch.randn(hessian.shape[0], generator=gen, dtype=torch.float64).to(dtype))
    h = hessian.to(dtype)

    def closure(backward=True, **options):
        w.grad = None
        with torch.enable_grad():
            loss = 0.5 * w @ (h @ w)
            loss.backward()
        return loss.detach()

    opt = FuzzySecondOrder([w], fuzzy=False, fd_mode=fd_mode, r=r, seed=seed)
    out = []
    for k in range(probes):
        opt.state["fuzzy"]["step"] = k  # the probe of step k: a fresh direction per step, as in training
        closure()
        out.append(opt.hessian_probe(closure, [w], [w.grad.detach().clone()])[0].double())
    return torch.stack(out)


def hutchinson_estimates(hessian: torch.Tensor, probes: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 2)
    z = torch.randint(0, 2, (probes, hessian.shape[0]), generator=gen).to(torch.float64) * 2 - 1
    return z * (z @ hessian)  # row k: z_k * (H z_k), H symmetric


def summary(estimate: torch.Tensor, diagonal: torch.Tensor) -> dict[str, float]:
    per_entry = ((estimate - diagonal).abs() / diagonal.abs())
    return {"relative_error": float((estimate - diagonal).norm() / diagonal.norm()),
            "negative_fraction": float((estimate < 0).double().mean()),
            "median_entry_error": float(per_entry.median())}


def diagonal_accuracy(dims=(100, 1000), conditions=(10.0, 1e4), probes=(1, 10, 100), r: float = 1e-3,
                      seed: int = 0) -> list[dict]:
    """One row per (dimension, condition, reading, number of probes averaged)."""
    rows = []
    most = max(probes)
    for n in dims:
        for condition in conditions:
            hessian = spd_quadratic(n, condition, seed)
            diagonal = torch.diagonal(hessian)
            base = {"dimension": n, "condition": condition,
                    "offdiag_ratio": float((hessian - torch.diag(diagonal)).norm() / diagonal.norm())}
            ones = fd_estimates(hessian, "ones", 1, r, seed)[0]
            rows.append({**base, "reading": "ones", "probes": 1, **summary(ones, diagonal)})
            draws = {"rademacher": fd_estimates(hessian, "rademacher", most, r, seed),
                     "hutchinson": hutchinson_estimates(hessian, most, seed)}
            for reading, estimates in draws.items():
                for k in probes:
                    rows.append({**base, "reading": reading, "probes": k,
                                 **summary(estimates[:k].mean(0), diagonal)})
    return rows
