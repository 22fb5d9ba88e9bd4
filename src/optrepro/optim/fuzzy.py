"""Fuzzy second-order method (Bensadok & Babar, arXiv 2403.15416; "SALO"): finite-difference diagonal Hessian,
Newton-like update, fuzzy controller for lr and the curvature momentum beta3.

    opt = FuzzySecondOrder(model.parameters(), total_steps=1000)
    opt.step(closure)     # closure(backward=True): same batch, replayed noise (optrepro.closure.StepClosure)

The paper's method section could not be read (dossier fuzzy.md §0): every open choice is a named argument with
the dossier's default (§1.2-1.3, §7):
  fd_mode     "ones" (literal reading: w + r on every weight; gives (H 1)_i, biased for non-diagonal H),
              "rademacher" (w + r z, z = +-1; z * (g_r - g)/r is unbiased for diag H), "update" (along the
              last update direction, normalised; a per-coordinate secant)
  r           1e-3, the finite-difference step; hess_every: refresh every k steps (1 = every step)
  denom       max(|h_hat|, eps_curv), eps_curv = 1e-4
  EMAs        m <- b1 m + (1-b1) g ; h <- b3 h + (1-b3) hd ; bias correction by running products (b3 varies)
  lr, beta3   from the fuzzy controller every `fuzzy_every` steps (x1 = relative change of the EMA loss,
              x2 = t / total_steps); the output change is capped by `max_lr_ratio` per call
The probe runs in fp32 with TF32 matmuls off; BatchNorm buffers are restored by the closure (trial calls are
"frozen") and its noise is replayed, so both gradients see the same batch and masks.
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from optrepro.optim.fuzzy_controller import default_system

FD_MODES = ("ones", "rademacher", "update")


class FuzzySecondOrder(Optimizer):
    requires_closure = True
    trial_batchnorm = "frozen"

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, beta3: float = 0.99, r: float = 1e-3,
                 fd_mode: str = "ones", hess_every: int = 1, eps_curv: float = 1e-4, weight_decay: float = 0.0,
                 fuzzy: bool = True, fuzzy_every: int = 100, total_steps: int | None = None,
                 lr_min: float = 1e-4, lr_max: float = 1e-2, beta3_min: float = 0.5, beta3_max: float = 0.999,
                 max_lr_ratio: float = 2.0, loss_ema: float = 0.9, seed: int = 0):
        if fd_mode not in FD_MODES:
            raise ValueError(f"unknown fd_mode {fd_mode!r}. Valid choices: {', '.join(FD_MODES)}")
        if r <= 0 or hess_every < 1 or eps_curv <= 0 or fuzzy_every < 1:
            raise ValueError(f"need r > 0, hess_every >= 1, eps_curv > 0, fuzzy_every >= 1 "
                             f"(got {r}, {hess_every}, {eps_curv}, {fuzzy_every})")
        if fuzzy and (total_steps is None or total_steps < 1):
            raise ValueError(f"the fuzzy controller needs total_steps (its input t/T); got {total_steps!r}")
        defaults = dict(lr=lr, beta1=beta1, beta3=beta3, r=r, fd_mode=fd_mode, hess_every=hess_every,
                        eps_curv=eps_curv, weight_decay=weight_decay, fuzzy=fuzzy, fuzzy_every=fuzzy_every,
                        total_steps=total_steps, lr_min=lr_min, lr_max=lr_max, beta3_min=beta3_min,
                        beta3_max=beta3_max, max_lr_ratio=max_lr_ratio, loss_ema=loss_ema, seed=seed)
        super().__init__(params, defaults)
        self.controller = default_system(lr_min, lr_max, beta3_min, beta3_max)
        # global scalars (go through state_dict): step, bias-correction products, controller state
        self.state["fuzzy"] = {"step": 0, "prod_beta1": 1.0, "prod_beta3": 1.0, "loss_ema": float("nan"),
                               "loss_ema_prev": float("nan"), "lr": float(lr), "beta3": float(beta3),
                               "clamped_fraction": 0.0, "fuzzy_calls": 0}

    def internals(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.state["fuzzy"].items()}

    def _direction(self, params, seed_step: int) -> list[torch.Tensor]:
        mode = self.param_groups[0]["fd_mode"]
        if mode == "ones":
            return [torch.ones_like(p) for p in params]
        if mode == "rademacher":
            gen = torch.Generator(device="cpu").manual_seed(self.param_groups[0]["seed"] * 1_000_003 + seed_step)
            return [(torch.randint(0, 2, p.shape, generator=gen).to(p) * 2 - 1) for p in params]
        last = [self.state[p].get("last_update") for p in params]
        if any(u is None for u in last):
            return [torch.ones_like(p) for p in params]
        norm = math.sqrt(sum(float((u * u).sum()) for u in last)) or 1.0
        # a secant needs no zero entries; keep their sign, floor the size
        return [torch.where(u.abs() > 1e-12, u / norm, torch.full_like(u, 1e-12)) for u in last]

    @torch.no_grad()
    def hessian_probe(self, closure, params, grads0) -> list[torch.Tensor]:
        """Finite-difference diagonal curvature on the same batch: hd = v * (g(w + r v) - g(w)) / r (1/v for 'update')."""
        group = self.param_groups[0]
        r, mode = group["r"], group["fd_mode"]
        direction = self._direction(params, self.state["fuzzy"]["step"])
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            torch._foreach_add_(params, direction, alpha=r)
            with torch.enable_grad():
                closure(backward=True)
            grads_r = [p.grad.detach().clone() for p in params]
            torch._foreach_add_(params, direction, alpha=-r)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        diff = torch._foreach_sub(grads_r, grads0)
        torch._foreach_div_(diff, r)
        if mode == "rademacher":
            torch._foreach_mul_(diff, direction)
        elif mode == "update":
            torch._foreach_div_(diff, direction)
        return diff

    def _fuzzy_update(self, loss: float) -> None:
        group = self.param_groups[0]
        s = self.state["fuzzy"]
        rho = group["loss_ema"]
        s["loss_ema"] = loss if math.isnan(s["loss_ema"]) else rho * s["loss_ema"] + (1 - rho) * loss
        if not group["fuzzy"] or s["step"] % group["fuzzy_every"] != 0:
            return
        prev = s["loss_ema_prev"]
        change = 0.0 if math.isnan(prev) or prev == 0 else (s["loss_ema"] - prev) / abs(prev)
        out = self.controller(max(-1.0, min(1.0, change)), s["step"] / group["total_steps"])
        lr = 10.0 ** out["log10_lr"]
        cap = group["max_lr_ratio"]
        s["lr"] = min(max(lr, s["lr"] / cap), s["lr"] * cap)
        s["beta3"] = out["beta3"]
        s["loss_ema_prev"] = s["loss_ema"]
        s["fuzzy_calls"] += 1

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("FuzzySecondOrder requires a closure: step(closure), closure(backward: bool)")
        group = self.param_groups[0]  # hyperparameters are global
        s = self.state["fuzzy"]
        with torch.enable_grad():
            loss = closure(backward=True)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad.detach().clone() for p in params]
        for p in params:
            st = self.state[p]
            if not st:
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_curv"] = torch.zeros_like(p)
        m = [self.state[p]["exp_avg"] for p in params]
        h = [self.state[p]["exp_avg_curv"] for p in params]
        beta1 = group["beta1"]
        beta3 = s["beta3"] if group["fuzzy"] else group["beta3"]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        s["prod_beta1"] *= beta1
        if s["step"] % group["hess_every"] == 0:
            curvature = self.hessian_probe(closure, params, grads)
            torch._foreach_lerp_(h, curvature, 1 - beta3)
            s["prod_beta3"] *= beta3
        for p, g in zip(params, grads):  # leave the step's gradient in .grad, not the probe's
            p.grad.copy_(g)
        s["step"] += 1
        lr = s["lr"] if group["fuzzy"] else group["lr"]
        m_hat = torch._foreach_div(m, 1 - s["prod_beta1"])
        denom = torch._foreach_div(h, 1 - s["prod_beta3"]) if s["prod_beta3"] < 1 else [torch.zeros_like(x) for x in h]
        torch._foreach_abs_(denom)
        eps = group["eps_curv"]
        clamped = sum(int((d < eps).sum()) for d in denom)
        s["clamped_fraction"] = clamped / max(sum(d.numel() for d in denom), 1)
        torch._foreach_clamp_min_(denom, eps)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        update = torch._foreach_div(m_hat, denom)
        if group["fd_mode"] == "update":
            for p, u in zip(params, update):
                self.state[p]["last_update"] = u
        torch._foreach_add_(params, update, alpha=-lr)
        self._fuzzy_update(float(loss))
        return loss
