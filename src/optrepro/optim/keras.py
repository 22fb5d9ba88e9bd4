"""Keras 3 optimizers as the CaAdam notebooks ran them (Keras 3.5.0, remigenet/CaAdam@ce14f7e results/*.ipynb:
`optimizers.Adam/AdamW/Adamax/Nadam(learning_rate=1e-3)`, every other argument Keras's default).

Keras's formulas (keras/src/optimizers/{adam,adamw,adamax,nadam}.py, t = iterations + 1), and what computes them:

- Adam:   m <- m + (1 - b1)(g - m);  v <- v + (1 - b2)(g^2 - v);
          theta -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps),  eps = 1e-7.
          This is the "epsilon hat" form: torch's Adam with eps_t = eps / sqrt(1 - b2^t) (`EpsHatAdam`, on
          torch's fused kernel).
- AdamW:  Keras's base optimizer first decays every trainable variable, theta <- theta - theta wd lr
          (`_apply_weight_decay`, wd = 0.004, the current lr), then takes the Adam step above with the gradient
          of the undecayed weights: torch's decoupled decay, applied in the same place (`EpsHatAdam` with
          `decoupled_weight_decay=True`).
- Adamax: m <- m + (1 - b1)(g - m);  u <- max(b2 u, |g|);  theta -= lr m / ((1 - b1^t)(u + eps)),  eps = 1e-7.
          torch.optim.Adamax puts eps inside the max (u <- max(b2 u, |g| + eps)), so `KerasAdamax` is our own.
- Nadam:  u_t = b1 (1 - 0.5 * 0.96^t), the product of u_1..u_t kept across steps;
          m_hat = u_{t+1} m / (1 - prod_{t+1}) + (1 - u_t) g / (1 - prod_t);  v_hat = v / (1 - b2^t);
          theta -= lr m_hat / (sqrt(v_hat) + eps),  eps = 1e-7.
          torch.optim.NAdam computes exactly this with momentum_decay = 1 (its mu_t uses 0.96^(t momentum_decay);
          torch's default 4e-3 is Dozat's schedule, not Keras's).

Keras counts t once per optimizer (its `iterations`), torch per tensor: they differ only for a tensor that missed
gradients on some steps. tests/test_optim_keras.py checks each class against these formulas written out in
float64.
"""
from __future__ import annotations

import torch

from optrepro.optim._base import OwnOptimizer, as_param_list, fastest_torch_kwargs, grouped
from optrepro.optim.tf1 import EpsHatAdam, _same_or_list


def adam(params, lr, beta1, beta2, eps, amsgrad):
    params = as_param_list(params)
    return EpsHatAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, amsgrad=amsgrad,
                      **fastest_torch_kwargs(params, True))


def adamw(params, lr, beta1, beta2, eps, weight_decay, amsgrad):
    params = as_param_list(params)
    return EpsHatAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                      decoupled_weight_decay=True, **fastest_torch_kwargs(params, True))


def adamax(params, lr, beta1, beta2, eps):
    return KerasAdamax(as_param_list(params), lr=lr, betas=(beta1, beta2), eps=eps)


def nadam(params, lr, beta1, beta2, eps):
    params = as_param_list(params)
    return torch.optim.NAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, momentum_decay=1.0,
                             **fastest_torch_kwargs(params, False))


class KerasAdamax(OwnOptimizer):
    """keras.optimizers.Adamax: the infinity-norm accumulator u <- max(b2 u, |g|) with eps added outside it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-7, *, foreach=None):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid KerasAdamax hyperparameters: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, foreach=foreach))

    def _init_state(self, group, p, state):
        self._zero_state(state, p, "exp_avg", "exp_inf")

    @staticmethod
    def _step_size(group, step):
        return group["lr"] / (1 - group["betas"][0] ** step)

    def _update_single(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        for p, g, state in zip(params, grads, states):
            m, u = state["exp_avg"], state["exp_inf"]
            m.lerp_(g, 1 - beta1)
            torch.maximum(u.mul_(beta2), g.abs(), out=u)
            p.addcdiv_(m, u.add(group["eps"]), value=-self._step_size(group, state["step"]))

    def _update_foreach(self, group, params, grads, states):
        beta1, beta2 = group["betas"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_infs = [s["exp_inf"] for s in states]
        steps = [s["step"] for s in states]
        for (ps, gs, ms, us), (ts,) in grouped([params, grads, exp_avgs, exp_infs], [steps]):
            torch._foreach_lerp_(ms, gs, 1 - beta1)
            torch._foreach_mul_(us, beta2)
            torch._foreach_maximum_(us, torch._foreach_abs(gs))
            denom = torch._foreach_add(us, group["eps"])
            step_size = _same_or_list([-self._step_size(group, t) for t in ts])
            torch._foreach_addcdiv_(ps, ms, denom, step_size)
