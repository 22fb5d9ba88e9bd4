"""Fuzzy second-order method (Bensadok & Babar, arXiv 2403.15416; "SALO"): finite-difference diagonal Hessian,
Newton-like update, fuzzy controller for lr and the curvature momentum beta3.

    opt = FuzzySecondOrder(model.parameters(), total_steps=1000)
    opt.step(closure)     # closure(backward=True) or torch's closure(): same batch, replayed noise
                          # (optrepro.closure.StepClosure); one param group (hyperparameters are global)

The paper's method section (arXiv 2403.15416, §3 onward) could not be read: every open choice is a named argument
with our default:
  fd_mode     "ones" (literal reading: w + r on every weight; gives (H 1)_i, biased for non-diagonal H),
              "rademacher" (w + r z, z = +-1; z * (g_r - g)/r is unbiased for diag H), "update" (along the
              last update direction, normalised; a per-coordinate secant)
  r           1e-3, the finite-difference step; hess_every: refresh every k steps (1 = every step)
  denom       max(|h_hat|, eps_curv), eps_curv = 1e-4
  EMAs        m <- b1 m + (1-b1) g ; h <- b3 h + (1-b3) hd ; bias correction by running products (b3 varies)
  lr, beta3   from the fuzzy controller every `fuzzy_every` steps (x1 = relative change of the EMA loss,
              x2 = t / total_steps); the output change is capped by `max_lr_ratio` per call; `lr` is the step
              size until the first call. `rule_base` names the rules (fuzzy_controller.RULE_BASES);
              `fuzzy_system` swaps in any other system (a FuzzySystem with outputs log10_lr and beta3).
              With fuzzy=True the controller owns the lr: it is written into the group's "lr" after each
              step, and an lr the caller puts there (an outer schedule) is not used; the registry declares
              lr_schedule="refused", so a spec with an outer schedule is refused at plan time (ambiguity
              register fuzzy-lr-schedule). fuzzy=False is the same finite-difference optimizer without the
              controller: its step size is group["lr"], which a schedule drives (registry entry
              `fd_second_order`, built by the factory of that name).
  clip_rho    None; a number clips m_hat / denom to +-clip_rho per coordinate (Sophia-style, ablation only)
  relative_step  False; True uses r_i = r * max(|w_i|, 1e-3) per weight
Both gradients of a probe step (g(w) and g(w + r v)) run with autocast disabled and TF32 off, so their
difference is not rounding noise; the closure is called with full_precision=True, so the training
loop's own bf16 autocast stands down too (optrepro.closure). BatchNorm buffers are restored by
the closure (trial calls are "frozen") and its noise is replayed, so both gradients see the same batch and
masks. Python reads of device values (loss, clamped count) happen only when the controller runs.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch.optim import Optimizer

from optrepro.closure import optimizer_closure
from optrepro.optim._base import OneParamGroup, full_precision
from optrepro.optim.fuzzy_controller import FuzzySystem, rule_system
from optrepro.registry import unknown

FD_MODES = ("ones", "rademacher", "update")
RELATIVE_STEP_FLOOR = 1e-3  # r_i = r * max(|w_i|, floor): weights near 0 still get a usable step
CONTROLLER_OUTPUTS = ("log10_lr", "beta3")


class FuzzySecondOrder(OneParamGroup, Optimizer):
    trial_batchnorm = "frozen"  # the probe's second evaluation leaves BatchNorm statistics alone

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, beta3: float = 0.99, r: float = 1e-3,
                 fd_mode: str = "ones", hess_every: int = 1, eps_curv: float = 1e-4, weight_decay: float = 0.0,
                 fuzzy: bool = True, fuzzy_every: int = 100, total_steps: int | None = None,
                 lr_min: float = 1e-4, lr_max: float = 1e-2, beta3_min: float = 0.5, beta3_max: float = 0.999,
                 max_lr_ratio: float = 2.0, loss_ema: float = 0.9, seed: int = 0, clip_rho: float | None = None,
                 relative_step: bool = False, rule_base: str = "default", fuzzy_system: FuzzySystem | None = None):
        if fd_mode not in FD_MODES:
            raise unknown("fd_mode", fd_mode, FD_MODES)
        if r <= 0 or hess_every < 1 or eps_curv <= 0 or fuzzy_every < 1:
            raise ValueError(f"need r > 0, hess_every >= 1, eps_curv > 0, fuzzy_every >= 1 "
                             f"(got {r}, {hess_every}, {eps_curv}, {fuzzy_every})")
        if clip_rho is not None and not clip_rho > 0:
            raise ValueError(f"clip_rho must be None (no clipping) or > 0 (got {clip_rho})")
        if fuzzy_system is not None and hasattr(fuzzy_system, "output_ranges") \
                and set(fuzzy_system.output_ranges) != set(CONTROLLER_OUTPUTS):
            raise ValueError(f"fuzzy_system must have outputs {', '.join(CONTROLLER_OUTPUTS)} "
                             f"(got {', '.join(fuzzy_system.output_ranges)})")
        if fuzzy_system is not None and rule_base != "default":
            raise ValueError(f"give a rule_base name or a fuzzy_system, not both (got rule_base={rule_base!r})")
        if fuzzy and (total_steps is None or total_steps < 1):
            raise ValueError(f"the fuzzy controller needs total_steps (its input t/T); got {total_steps!r}")
        defaults = dict(lr=lr, beta1=beta1, beta3=beta3, r=r, fd_mode=fd_mode, hess_every=hess_every,
                        eps_curv=eps_curv, weight_decay=weight_decay, fuzzy=fuzzy, fuzzy_every=fuzzy_every,
                        total_steps=total_steps, lr_min=lr_min, lr_max=lr_max, beta3_min=beta3_min,
                        beta3_max=beta3_max, max_lr_ratio=max_lr_ratio, loss_ema=loss_ema, seed=seed,
                        clip_rho=clip_rho, relative_step=relative_step, rule_base=rule_base)
        super().__init__(params, defaults)
        # the system is built from hyperparameters (rule_base and the universes), or given as code/data; it is
        # not state: it stays out of the state_dict. The names are checked even when fuzzy=False.
        system = rule_system(rule_base, lr_min, lr_max, beta3_min, beta3_max)
        self.controller = fuzzy_system if fuzzy_system is not None else system
        # global scalars (go through state_dict): step, bias-correction products, controller state.
        # loss_ema becomes a device tensor after the first step: reading it needs a sync, so only the
        # controller (every fuzzy_every steps) and internals() do.
        self.state["fuzzy"] = {"step": 0, "prod_beta1": 1.0, "prod_beta3": 1.0, "loss_ema": float("nan"),
                               "loss_ema_prev": float("nan"), "lr": float(lr), "beta3": float(beta3),
                               "fuzzy_calls": 0, "controller_step": 0}

    def internals(self) -> dict[str, float]:
        """What the training loop logs at its log points (a host read: never called inside a step).

        clamped_fraction: the share of coordinates whose curvature denominator |h_hat| was below eps_curv at
        the last step (recomputed here from the state, so the step does no extra work for it). With the
        controller on, also its outputs in force (lr, beta3), the step of its last call (controller_step, 0
        before the first), its number of calls and the loss EMA it reads."""
        s = self.state["fuzzy"]
        group = self.param_groups[0]
        out = {"clamped_fraction": self._clamped_fraction()}
        if group["fuzzy"]:
            out.update({k: float(s[k]) for k in ("lr", "beta3", "loss_ema", "fuzzy_calls", "controller_step")})
        return out

    @torch.no_grad()
    def _clamped_fraction(self) -> float:
        s, group = self.state["fuzzy"], self.param_groups[0]
        h = [self.state[p]["exp_avg_curv"] for p in group["params"] if "exp_avg_curv" in self.state[p]]
        if not h or s["prod_beta3"] >= 1:
            return 1.0 if h else 0.0  # before the first probe every denominator is eps_curv
        threshold = group["eps_curv"] * (1 - s["prod_beta3"])  # |h / (1 - P3)| < eps  <=>  |h| < eps (1 - P3)
        clamped = torch.stack([(x.abs() < threshold).sum().to(h[0].device) for x in h]).sum()
        return int(clamped) / sum(x.numel() for x in h)  # one host read

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
        # the norm stays on the device (no sync); summed in float64 as the Python floats it replaces were
        norm = torch.sqrt(sum((u * u).sum().double().to(last[0].device) for u in last))
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        # a secant needs no zero entries; keep their sign, floor the size
        return [torch.where(u.abs() > 1e-12, u / norm, torch.full_like(u, 1e-12)) for u in last]

    @torch.no_grad()
    def hessian_probe(self, closure, params, grads0) -> list[torch.Tensor]:
        """Finite-difference diagonal curvature on the same batch: hd = v * (g(w + r v) - g(w)) / r (1/v for 'update').

        `grads0` must come from the same precision context (step() computes it under `full_precision`).
        """
        group = self.param_groups[0]
        closure = optimizer_closure(closure, params)  # either closure form (optrepro.closure)
        r, mode = group["r"], group["fd_mode"]
        direction = self._direction(params, self.state["fuzzy"]["step"])
        saved = [p.detach().clone() for p in params]
        if group["relative_step"]:
            # r_i = r * max(|w_i|, floor): the step scales with the weight, so the FD error is relative
            steps = [w.abs().clamp_min_(RELATIVE_STEP_FLOOR).mul_(r) for w in saved]
            torch._foreach_add_(params, torch._foreach_mul(direction, steps))
        else:
            steps = None
            torch._foreach_add_(params, direction, alpha=r)
        try:
            with full_precision(params[0].device.type), torch.enable_grad():
                closure(backward=True, full_precision=True)
            grads_r = [p.grad.detach().clone() for p in params]
        finally:
            # copy back: adding -r v again would leave rounding drift in the weights
            torch._foreach_copy_(params, saved)
        diff = torch._foreach_sub(grads_r, grads0)
        if steps is None:
            torch._foreach_div_(diff, r)
        else:
            torch._foreach_div_(diff, steps)
        if mode == "rademacher":
            torch._foreach_mul_(diff, direction)
        elif mode == "update":
            torch._foreach_div_(diff, direction)
        return diff

    def _fuzzy_update(self, loss) -> None:
        group = self.param_groups[0]
        s = self.state["fuzzy"]
        rho = group["loss_ema"]
        # the EMA stays a float64 device tensor (same arithmetic as Python floats): no sync on this step
        loss = torch.as_tensor(loss).detach().to(torch.float64)
        ema = s["loss_ema"]
        if not torch.is_tensor(ema):
            s["loss_ema"] = loss if math.isnan(ema) else rho * ema + (1 - rho) * loss
        else:  # a nan EMA (diverged) restarts from the current loss, as a Python nan did
            s["loss_ema"] = torch.where(torch.isnan(ema), loss, rho * ema.to(loss.device) + (1 - rho) * loss)
        if s["step"] % group["fuzzy_every"] != 0:
            return
        loss_ema = float(s["loss_ema"])  # the one sync, every fuzzy_every steps
        prev = s["loss_ema_prev"]
        change = 0.0 if math.isnan(prev) or prev == 0 else (loss_ema - prev) / abs(prev)
        out = self.controller(max(-1.0, min(1.0, change)), s["step"] / group["total_steps"])
        lr = 10.0 ** out["log10_lr"]
        cap = group["max_lr_ratio"]
        s["lr"] = min(max(lr, s["lr"] / cap), s["lr"] * cap)
        s["beta3"] = out["beta3"]
        s["loss_ema_prev"] = loss_ema
        s["fuzzy_calls"] += 1
        s["controller_step"] = s["step"]

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("FuzzySecondOrder requires a closure: step(closure), with closure(backward: bool) "
                               "or torch's closure()")
        group = self.param_groups[0]  # the only group (OneParamGroup)
        closure = optimizer_closure(closure, group["params"])
        s = self.state["fuzzy"]
        probe = s["step"] % group["hess_every"] == 0
        # a probe step computes g(w) in the same precision as g(w + r v): autocast off, TF32 off
        device_type = group["params"][0].device.type
        with full_precision(device_type) if probe else contextlib.nullcontext(), torch.enable_grad():
            loss = closure(backward=True, full_precision=probe)
        params = [p for p in group["params"] if p.grad is not None]
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
        if probe:
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
        torch._foreach_clamp_min_(denom, group["eps_curv"])
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        update = torch._foreach_div(m_hat, denom)
        if group["clip_rho"] is not None:  # Sophia-style per-coordinate clip; not in the paper (ablation only)
            torch._foreach_clamp_min_(update, -group["clip_rho"])
            torch._foreach_clamp_max_(update, group["clip_rho"])
        if group["fd_mode"] == "update":
            for p, u in zip(params, update):
                self.state[p]["last_update"] = u
        torch._foreach_add_(params, update, alpha=-lr)
        if group["fuzzy"]:
            self._fuzzy_update(loss)
            # the controller's (lr, beta3) go into the param_groups (our choice), so whoever reads them
            # sees the values the next step uses. The update reads s["lr"], not group["lr"]: a training loop
            # overwrites group["lr"] with its schedule before every step (register fuzzy-lr-schedule).
            for g in self.param_groups:
                g["lr"], g["beta3"] = s["lr"], s["beta3"]
        return loss


def fuzzy_second_order(params, **hparams) -> FuzzySecondOrder:
    """Registry entry `fuzzy_second_order`: the controller owns the step size (lr_schedule="refused")."""
    return FuzzySecondOrder(params, fuzzy=True, **hparams)


def fd_second_order(params, **hparams) -> FuzzySecondOrder:
    """Registry entry `fd_second_order`: the same finite-difference optimizer without the controller; its step
    size is group["lr"], so an outer schedule drives it (lr_schedule="group_lr"). The controller's
    hyperparameters are not accepted (the registry lists the ones that are)."""
    return FuzzySecondOrder(params, fuzzy=False, **hparams)
