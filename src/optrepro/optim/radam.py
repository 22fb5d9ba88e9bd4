"""RAdam (Liu et al., ICLR 2020) exactly as torch.optim.RAdam computes it, with a compiled fused path.

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    rho_inf = 2 / (1 - b2) - 1;   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    rho_t > 5:  theta <- theta - lr * r_t * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    else:       theta <- theta - lr / (1 - b1^t) * m
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

(eps is added to the un-bias-corrected root, as torch does; weight decay is coupled L2, torch's default
decoupled_weight_decay=False.) The registry's `radam` is torch's class itself; this one exists for its
`compile=True` path (optim/_compiled.py), which `lookahead_radam(..., compile=True)` wraps: torch's RAdam has no
fused kernel. Its eager paths are the reference for tests, not faster than torch's.
"""
from __future__ import annotations

import math

import torch

from optrepro.optim._base import OwnOptimizer, grouped

RECTIFY_THRESHOLD = 5.0  # torch: the adaptive step starts once rho_t > 5


def rectification(beta2: float, step: int) -> float | None:
    """RAdam's r_t, or None while rho_t <= 5 (torch's threshold; the step is then momentum SGD)."""
    rho_inf = 2 / (1 - beta2) - 1
    beta2_t = beta2 ** step
    rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
    if not rho_t > RECTIFY_THRESHOLD:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


class RAdam(OwnOptimizer):
    kernel_name = "radam"
    kernel_state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, foreach=None,
                 compile=False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid RAdam hyperparameters: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      foreach=foreach), compile=compile)

    def _init_state(self, group, p, state):
        self._zero_state(state, p, "exp_avg", "exp_avg_sq")

    @staticmethod
    def _scalars(group, step):
        """(adaptive step size multiplying m / (sqrt(v) + eps), or None before rectification; momentum step)."""
        beta1, beta2 = group["betas"]
        momentum_step = group["lr"] / (1 - beta1 ** step)
        r = rectification(beta2, step)
        if r is None:
            return None, momentum_step
        return momentum_step * r * math.sqrt(1 - beta2 ** step), momentum_step

    def _kernel_row(self, group, step):
        beta1, beta2 = group["betas"]
        adaptive_step, momentum_step = self._scalars(group, step)
        adaptive = adaptive_step is not None
        return [group["weight_decay"], 1 - beta1, beta2, 1 - beta2, group["eps"],
                -adaptive_step if adaptive else 0.0, -momentum_step, 1.0 if adaptive else 0.0]

    def _update_single(self, group, params, grads, states):
        for p, g, state in zip(params, grads, states):
            g, m, v = self._adam_moments_(group, p, g, state)
            adaptive_step, momentum_step = self._scalars(group, state["step"])
            if adaptive_step is None:
                p.add_(m, alpha=-momentum_step)
            else:
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-adaptive_step)

    def _update_foreach(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        lists = [params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]]
        for (ps, gs, ms, vs), (ts,) in grouped(lists, [[s["step"] for s in states]]):
            if group["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            torch._foreach_lerp_(ms, gs, 1 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, gs, gs, 1 - beta2)
            scalars = [self._scalars(group, t) for t in ts]
            plain = [i for i, (adaptive, _) in enumerate(scalars) if adaptive is None]
            adaptive = [i for i, (size, _) in enumerate(scalars) if size is not None]
            if plain:
                torch._foreach_add_([ps[i] for i in plain],
                                    torch._foreach_mul([ms[i] for i in plain], [-scalars[i][1] for i in plain]))
            if adaptive:
                denom = torch._foreach_sqrt([vs[i] for i in adaptive])
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_addcdiv_([ps[i] for i in adaptive], [ms[i] for i in adaptive], denom,
                                        [-scalars[i][0] for i in adaptive])
