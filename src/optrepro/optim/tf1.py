"""TensorFlow-1 semantics that torch.optim lacks, as the Crowded Valley runs (DeepOBS 1.2 on TF 1.x) used them.

- `EpsHatAdam`: tf.train.AdamOptimizer (and the TF-1 AMSGrad ports): epsilon is "epsilon hat", added to the
  un-bias-corrected sqrt(v):  theta -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps_hat).
  Algebra: this is torch's Adam with eps_t = eps_hat / sqrt(1 - b2^t), so the class subclasses torch.optim.Adam
  and sets each group's eps before every step: it keeps torch's for-loop, foreach and fused kernels.
- `TF1Nadam`: tf.contrib.opt.NadamOptimizer: Adam with a Nesterov look-ahead on the *constant* b1,
  theta -= lr_t * (b1 * m + (1 - b1) * g) / (sqrt(v) + eps_hat). (torch.optim.NAdam is Dozat's variant with a
  momentum schedule mu_t = b1 (1 - 0.5 * 0.96^(0.004 t)); that is `nadam(semantics="torch")`.)
- `TF1RMSprop`: tf.train.RMSPropOptimizer: the mean-square accumulator starts at ones, eps sits inside the root,
  and lr is folded into the momentum buffer:
      ms <- rho ms + (1 - rho) g^2;  mom <- mu mom + lr g / sqrt(ms + eps);  theta <- theta - mom
  (centered: ms - mg^2 + eps under the root, mg <- rho mg + (1 - rho) g).

TF-1 counts bias-correction steps globally (shared beta-power variables); torch and these classes count per
parameter. They differ only for parameters whose gradient is missing on some steps.
"""
from __future__ import annotations

import math

import torch

from optrepro.optim._base import OwnOptimizer, closure_loss, grouped


def _same_or_list(values: list[float]):
    """A scalar when every parameter shares it (the usual case, one kernel arg), else a per-tensor list."""
    return values[0] if all(v == values[0] for v in values) else values


class EpsHatAdam(torch.optim.Adam):
    """tf.train.AdamOptimizer semantics (eps added to the un-corrected sqrt(v)); `amsgrad=True` for AMSGrad.

    The hyperparameter is `eps` (= TF's epsilon hat). It is stored as group["eps_hat"]; group["eps"] is the
    derived torch epsilon for the coming step and group["eps_hat_step"] the step counter behind it, so both
    travel in state_dict and a resumed run continues bit-identically.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 foreach=None, fused=None, decoupled_weight_decay=False):
        # decoupled_weight_decay: torch's AdamW decay (theta *= 1 - lr wd before the step), Keras 3's AdamW too
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, fused=fused, decoupled_weight_decay=decoupled_weight_decay)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("eps_hat", group["eps"])
        group.setdefault("eps_hat_step", 0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            if any(p.grad is not None for p in group["params"]):
                t = group["eps_hat_step"] + 1
                group["eps_hat_step"] = t
                group["eps"] = group["eps_hat"] / math.sqrt(1.0 - float(group["betas"][1]) ** t)
        super().step()
        return loss


class TF1Nadam(OwnOptimizer):
    """tf.contrib.opt.NadamOptimizer (Nesterov Adam with constant beta1, eps hat)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, foreach=None):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid TF1Nadam hyperparameters: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      foreach=foreach))

    def _init_state(self, group, p, state):
        self._zero_state(state, p, "exp_avg", "exp_avg_sq")

    @staticmethod
    def _step_size(group, step):
        beta1, beta2 = group["betas"]
        return group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)

    def _update_single(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        for p, g, state in zip(params, grads, states):
            g, m, v = self._adam_moments_(group, p, g, state)
            denom = v.sqrt().add_(group["eps"])
            nesterov = m.mul(beta1).add_(g, alpha=1 - beta1)
            p.addcdiv_(nesterov, denom, value=-self._step_size(group, state["step"]))

    def _update_foreach(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        for (ps, gs, ms, vs), (ts,) in grouped([params, grads, exp_avgs, exp_avg_sqs], [steps]):
            if group["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            torch._foreach_lerp_(ms, gs, 1 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, gs, gs, 1 - beta2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            nesterov = torch._foreach_mul(ms, beta1)
            torch._foreach_add_(nesterov, gs, alpha=1 - beta1)
            step_size = _same_or_list([-self._step_size(group, t) for t in ts])
            torch._foreach_addcdiv_(ps, nesterov, denom, step_size)


class TF1RMSprop(OwnOptimizer):
    """tf.train.RMSPropOptimizer: accumulator starts at `initial_accumulator_value` (TF: 1.0), eps inside the
    root, lr inside the momentum buffer. `alpha` is TF's `decay` (torch's name kept)."""

    def __init__(self, params, lr=1e-3, alpha=0.9, eps=1e-10, momentum=0.0, centered=False, weight_decay=0.0,
                 initial_accumulator_value=1.0, *, foreach=None):
        if lr < 0 or eps < 0 or momentum < 0 or weight_decay < 0 or not 0.0 <= alpha <= 1.0 \
                or initial_accumulator_value < 0:
            raise ValueError(f"invalid TF1RMSprop hyperparameters: lr={lr}, alpha={alpha}, eps={eps}, "
                             f"momentum={momentum}, weight_decay={weight_decay}, "
                             f"initial_accumulator_value={initial_accumulator_value}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach))

    def _init_state(self, group, p, state):
        state["step"] = 0
        state["square_avg"] = torch.full_like(p, group["initial_accumulator_value"],
                                              memory_format=torch.preserve_format)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update_single(self, group, params, grads, states):
        rho, lr, mu = group["alpha"], group["lr"], group["momentum"]
        for p, g, state in zip(params, grads, states):
            if group["weight_decay"]:
                g = g.add(p, alpha=group["weight_decay"])
            ms = state["square_avg"]
            ms.mul_(rho).addcmul_(g, g, value=1 - rho)
            if group["centered"]:
                mg = state["grad_avg"]
                mg.lerp_(g, 1 - rho)
                denom = ms.addcmul(mg, mg, value=-1).add_(group["eps"]).sqrt_()
            else:
                denom = ms.add(group["eps"]).sqrt_()
            if mu > 0:
                mom = state["momentum_buffer"]
                mom.mul_(mu).addcdiv_(g, denom, value=lr)
                p.sub_(mom)
            else:
                p.addcdiv_(g, denom, value=-lr)

    def _update_foreach(self, group, params, grads, states):
        rho, lr, mu = group["alpha"], group["lr"], group["momentum"]
        lists = [params, grads, [s["square_avg"] for s in states]]
        if mu > 0:
            lists.append([s["momentum_buffer"] for s in states])
        if group["centered"]:
            lists.append([s["grad_avg"] for s in states])
        for tensors, _ in grouped(lists):
            ps, gs, mss = tensors[0], tensors[1], tensors[2]
            if group["weight_decay"]:
                gs = torch._foreach_add(gs, ps, alpha=group["weight_decay"])
            torch._foreach_mul_(mss, rho)
            torch._foreach_addcmul_(mss, gs, gs, 1 - rho)
            if group["centered"]:
                mgs = tensors[-1]
                torch._foreach_lerp_(mgs, gs, 1 - rho)
                denom = torch._foreach_addcmul(mss, mgs, mgs, -1)
                torch._foreach_add_(denom, group["eps"])
            else:
                denom = torch._foreach_add(mss, group["eps"])
            torch._foreach_sqrt_(denom)
            if mu > 0:
                moms = tensors[3]
                torch._foreach_mul_(moms, mu)
                torch._foreach_addcdiv_(moms, gs, denom, lr)
                torch._foreach_sub_(ps, moms)
            else:
                torch._foreach_addcdiv_(ps, gs, denom, -lr)
