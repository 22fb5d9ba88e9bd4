"""AdaBelief (Zhuang et al., NeurIPS 2020), as the authors' TF-1 package (adabelief_tf.AdaBeliefOptimizer) computes it.

    m <- b1 m + (1 - b1) g
    s <- b2 s + (1 - b2) (g - m)^2 + eps          (eps added inside the EMA every step, as the authors' code does)
    theta <- theta - lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)

`rectify=True` adds RAdam's rectification (the default of adabelief-tf >= 0.1 and adabelief-pytorch >= 0.1):
while the SMA length rho_t < 5 the step is plain momentum, lr * m / (1 - b1^t); afterwards the adaptive step is
multiplied by r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)).
Crowded Valley's ICML runs logged only lr, betas and eps = 1e-14 (the TF package's eps scale); their curves decide
that rectification was on (the TF packages' default; paper/ambiguity/crowded_valley.yaml, cv-adabelief-rectify), so
the registry's `adabelief` defaults to rectify=True. This class keeps rectify=False as its own default: the
algorithm of the AdaBelief paper.
Weight decay is coupled L2 (g += wd * theta), as in torch.optim.Adam.
`compile=True` runs the fused kernel of optim/_compiled.py (one pass over memory per tensor, about torch's fused
Adam's speed; benchmarks/RESULTS.md); the eager paths stay the reference.
"""
from __future__ import annotations

import math

import torch

from optrepro.optim._base import OwnOptimizer, grouped


def _rectification(beta2: float, step: int) -> float | None:
    """RAdam's r_t, or None while the variance estimate is not yet trusted (rho_t < 5)."""
    rho_inf = 2 / (1 - beta2) - 1
    beta2_t = beta2 ** step
    rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
    if rho_t < 5:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


class AdaBelief(OwnOptimizer):
    kernel_name = "adabelief"
    kernel_state_keys = ("exp_avg", "exp_avg_var")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-14, weight_decay=0.0, rectify=False, *,
                 foreach=None, compile=False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid AdaBelief hyperparameters: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      rectify=rectify, foreach=foreach), compile=compile)

    def _init_state(self, group, p, state):
        self._zero_state(state, p, "exp_avg", "exp_avg_var")

    @staticmethod
    def _scalars(group, step):
        """(step size multiplying m / denom, or None for the un-rectified momentum step; 1/sqrt(bias corr 2))."""
        beta1, beta2 = group["betas"]
        step_size = group["lr"] / (1 - beta1 ** step)
        if group["rectify"]:
            r = _rectification(beta2, step)
            if r is None:
                return None, None
            step_size *= r
        return step_size, 1 / math.sqrt(1 - beta2 ** step)

    def _kernel_row(self, group, step):
        beta1, beta2 = group["betas"]
        step_size, inv_sqrt_bc2 = self._scalars(group, step)
        momentum_step = group["lr"] / (1 - beta1 ** step)
        adaptive = step_size is not None
        return [group["weight_decay"], 1 - beta1, beta2, 1 - beta2, group["eps"],
                inv_sqrt_bc2 if adaptive else 0.0, -step_size if adaptive else 0.0, -momentum_step,
                1.0 if adaptive else 0.0]

    def _update_single(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        for p, g, state in zip(params, grads, states):
            if group["weight_decay"]:
                g = g.add(p, alpha=group["weight_decay"])
            m, s = state["exp_avg"], state["exp_avg_var"]
            m.lerp_(g, 1 - beta1)
            residual = g.sub(m)
            s.mul_(beta2).addcmul_(residual, residual, value=1 - beta2).add_(group["eps"])
            step_size, inv_sqrt_bc2 = self._scalars(group, state["step"])
            if step_size is None:
                p.add_(m, alpha=-group["lr"] / (1 - beta1 ** state["step"]))
                continue
            denom = s.sqrt().mul_(inv_sqrt_bc2).add_(group["eps"])
            p.addcdiv_(m, denom, value=-step_size)

    def _update_foreach(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        steps = [s["step"] for s in states]
        lists = [params, grads, [s["exp_avg"] for s in states], [s["exp_avg_var"] for s in states]]
        for (ps, gs, ms, ss), (ts,) in grouped(lists, [steps]):
            if group["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            torch._foreach_lerp_(ms, gs, 1 - beta1)
            residual = torch._foreach_sub(gs, ms)
            torch._foreach_mul_(ss, beta2)
            torch._foreach_addcmul_(ss, residual, residual, 1 - beta2)
            torch._foreach_add_(ss, group["eps"])
            scalars = [self._scalars(group, t) for t in ts]
            adaptive = [i for i, (size, _) in enumerate(scalars) if size is not None]
            plain = [i for i, (size, _) in enumerate(scalars) if size is None]
            if plain:  # rectify=True, early steps: momentum SGD on the bias-corrected m
                torch._foreach_sub_([ps[i] for i in plain],
                                    torch._foreach_mul([ms[i] for i in plain],
                                                       [group["lr"] / (1 - beta1 ** ts[i]) for i in plain]))
            if not adaptive:
                continue
            if plain:
                ps, ms, ss = ([xs[i] for i in adaptive] for xs in (ps, ms, ss))
                scalars = [scalars[i] for i in adaptive]
            denom = torch._foreach_sqrt(ss)
            inv = [c for _, c in scalars]
            if all(c == inv[0] for c in inv):
                torch._foreach_mul_(denom, inv[0])
            else:
                torch._foreach_mul_(denom, inv)
            torch._foreach_add_(denom, group["eps"])
            sizes = [-size for size, _ in scalars]
            torch._foreach_addcdiv_(ps, ms, denom, sizes[0] if all(x == sizes[0] for x in sizes) else sizes)
