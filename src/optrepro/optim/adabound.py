"""AdaBound and AMSBound (Luo et al., ICLR 2019), following the authors' reference implementation.

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2   (AMSBound: v_max <- max(v_max, v), used below)
    eta_t   = lr * sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)          (eps added to the un-corrected root)
    final   = final_lr * lr / base_lr                                     (the bound follows lr schedules)
    lower_t = final * (1 - 1 / (gamma t + 1));   upper_t = final * (1 + 1 / (gamma t))
    theta  <- theta - clip(eta_t, lower_t, upper_t) * m

`base_lr` is the group's lr at construction, stored in the param group so it survives state_dict round trips
(the authors' code keeps it outside the state and loses it on resume). Weight decay is coupled L2.
`compile=True` runs the fused kernel of optim/_compiled.py; the eager paths stay the reference.
"""
from __future__ import annotations

import math

import torch

from optrepro.optim._base import OwnOptimizer, grouped


class AdaBound(OwnOptimizer):
    amsbound = False
    kernel_name = "adabound"
    kernel_state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8,
                 weight_decay=0.0, *, foreach=None, compile=False):
        if lr <= 0 or final_lr < 0 or gamma <= 0 or eps < 0 or weight_decay < 0 \
                or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid {type(self).__name__} hyperparameters: lr={lr}, betas={betas}, "
                             f"final_lr={final_lr}, gamma={gamma}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps,
                                      weight_decay=weight_decay, foreach=foreach), compile=compile)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("base_lr", group["lr"])

    def _init_state(self, group, p, state):
        self._zero_state(state, p, "exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if self.amsbound else ()))

    @staticmethod
    def _scalars(group, step):
        beta1, beta2 = group["betas"]
        step_size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        # a group created with lr 0 has no scale to follow: its bounds stay at 0 (no update), as lr 0 means
        final_lr = group["final_lr"] * group["lr"] / group["base_lr"] if group["base_lr"] > 0 else 0.0
        lower = final_lr * (1 - 1 / (group["gamma"] * step + 1))
        upper = final_lr * (1 + 1 / (group["gamma"] * step))
        return step_size, lower, upper

    def _kernel_row(self, group, step):
        beta1, beta2 = group["betas"]
        step_size, lower, upper = self._scalars(group, step)
        return [group["weight_decay"], 1 - beta1, beta2, 1 - beta2, group["eps"], step_size, lower, upper]

    def _update_single(self, group, params, grads, states):
        for p, g, state in zip(params, grads, states):
            g, m, v = self._adam_moments_(group, p, g, state)
            if self.amsbound:
                torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]
            step_size, lower, upper = self._scalars(group, state["step"])
            eta = v.sqrt().add_(group["eps"]).reciprocal_().mul_(step_size).clamp_(lower, upper)
            p.sub_(eta.mul_(m))

    def _update_foreach(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        lists = [params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]]
        if self.amsbound:
            lists.append([s["max_exp_avg_sq"] for s in states])
        for tensors, (ts,) in grouped(lists, [[s["step"] for s in states]]):
            ps, gs, ms, vs = tensors[:4]
            if group["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            torch._foreach_lerp_(ms, gs, 1 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, gs, gs, 1 - beta2)
            if self.amsbound:
                torch._foreach_maximum_(tensors[4], vs)
                vs = tensors[4]
            eta = torch._foreach_sqrt(vs)
            torch._foreach_add_(eta, group["eps"])
            torch._foreach_reciprocal_(eta)
            scalars = [self._scalars(group, t) for t in ts]
            if all(s == scalars[0] for s in scalars):
                step_size, lower, upper = scalars[0]
                torch._foreach_mul_(eta, step_size)
                torch._foreach_clamp_min_(eta, lower)
                torch._foreach_clamp_max_(eta, upper)
            else:
                torch._foreach_mul_(eta, [s[0] for s in scalars])
                torch._foreach_clamp_min_(eta, [s[1] for s in scalars])
                torch._foreach_clamp_max_(eta, [s[2] for s in scalars])
            torch._foreach_mul_(eta, ms)
            torch._foreach_sub_(ps, eta)


class AMSBound(AdaBound):
    """AdaBound on the running maximum of v (AMSGrad-style)."""

    amsbound = True
    kernel_name = "amsbound"
    kernel_state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
