"""Stochastic Armijo line searches: SLS, the two readings of Adam+SLS, and ALSALS.

    opt = ALSALS(model.parameters(), c=0.5)
    loss = opt.step(closure)          # closure(backward=True) -> loss with grads; closure(backward=False) -> loss

All four take a closure (`closure="loss"` in the registry), in either form of optrepro.closure: `closure(backward)`,
which with True zeroes the gradients, evaluates the step's batch and back-propagates, and with False only
evaluates the loss (trial points; run here under torch.no_grad); or torch's `closure()` as torch.optim.LBFGS
takes it, which then pays a backward pass at every trial point. optrepro.closure.StepClosure is a closure of
the first form: it replays the batch's dropout/noise on every call and, when the optimizer's `trial_batchnorm`
is "frozen", restores BatchNorm running statistics after trial calls.

`mode` selects how trial evaluations treat BatchNorm:
  "clean"   trial_batchnorm = "frozen": trial points leave running statistics alone.
  "as-run"  trial_batchnorm = "moving": running statistics move at every trial point, as in the ALSALS
            authors' image code (model.train() during the search).
(The authors' gradient evaluation was not under the replayed seed while their trials were; StepClosure replays
the same noise for every call in both modes. Recorded in paper/ambiguity/alsals.yaml.)

The search runs over one param group with one step size; a second group is refused (the authors' per-group
cycling of the IJCNN-2023 AdamSLS is not implemented). Scalars (step size, smoothed averages, counters) live in
`self.state["line_search"]` so they go through state_dict(); `internals()` returns them for metrics.jsonl.

  SLS       Vaswani et al. 2019, SGD direction: accept eta if f(w - eta g) <= f(w) - c eta ||g||^2; backtrack
            eta *= beta_b at most 100 times, else eta = 1e-6. Skipped when ||g|| < 1e-8. Before each search the
            step is reset: reset_option 0 keeps eta, 1 multiplies it by gamma**(1/n_batches_per_epoch),
            2 restarts from init_step_size (applied on step 1 too, as sls.py does).
  AdaSLS    Vaswani et al. 2021 (IssamLaradji/ada_sls): preconditioned Armijo
            f(w - eta P g) <= f(w) - c eta <g, P g>, P = 1/(sqrt(v_hat)+1e-8) (adam/amsgrad) or
            1/(sqrt(sum g^2)+1e-8) (adagrad). Trials use momentum 0; the update may add momentum (m_hat).
            Reset as SLS (step 1 included); no small-gradient skip, as in ada_sls.
  AdamSLS   the ALSALS authors' "ADAM+SLS" (sls/adam_sls.py): same trial direction, but the Armijo test is
            smoothed: bias-corrected EMAs (beta_s) of the loss decrease and of <g, P g>; the update uses the
            momentum direction m_hat P. Optional `speed_up` searches only every L steps; the smoothed
            <g, P g> and the step-size EMAs that set L are updated only on those steps.
  ALSALS    the authors' KenSLS (sls/Ken_sls.py): trials and update along the Adam direction
            d = m_hat/(sqrt(v_hat)+1e-8); slope along d from a finite difference (L0 - f(w - eps d))/eps,
            eps = 5e-9, multiplied by 10 while the difference is exactly 0 (the numerical-underflow guard,
            counted in `numerical_error`); EMAs (0.99) of slope G and decrease H; c_eff = c if G > 0 else 1/c;
            eta grows by 1/0.999 per step and backtracks by 0.9 while H_try < c_eff eta G.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim import Optimizer

from optrepro.closure import optimizer_closure
from optrepro.optim._base import OneParamGroup
from optrepro.registry import unknown

MODES = {"clean": "frozen", "as-run": "moving"}  # mode -> trial_batchnorm (the registry declares the same table)
RESET_OPTIONS = (0, 1, 2)


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise unknown(what, value, choices)


class _ArmijoBase(OneParamGroup, Optimizer):
    """Shared plumbing: closure calls, parameter save/restore, global scalar state."""

    def __init__(self, params, defaults: dict, mode: str, scalars: dict):
        _check_choice("mode", mode, tuple(MODES))
        super().__init__(params, defaults)
        self.mode = mode
        self.trial_batchnorm = MODES[mode]
        self.state["line_search"] = {"step": 0, "forward_evals": 0, "backtracks": 0, "last_backtracks": 0,
                                     "loss": float("nan"), "loss_next": float("nan"), **scalars}

    @property
    def scalars(self) -> dict:
        return self.state["line_search"]

    def internals(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.scalars.items()}

    def _params_with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def _begin_step(self, closure: Callable) -> tuple[torch.Tensor, list[torch.Tensor], Callable]:
        """The common start of every search: loss and gradients at the current point (one forward+backward) and
        the step counted; returns the loss, left on the device (each search reads it together with the first
        other number it needs: one host sync fewer per step), the parameters that have gradients and the
        closure in its one-argument form (optrepro.closure.optimizer_closure)."""
        if closure is None:
            raise RuntimeError(f"{type(self).__name__} requires a closure: step(closure), with closure(backward: "
                               f"bool) or torch's closure()")
        closure = optimizer_closure(closure, self.param_groups[0]["params"])
        with torch.enable_grad():
            loss = closure(backward=True)
        self.scalars["forward_evals"] += 1
        self.scalars["step"] += 1
        return loss, self._params_with_grad(), closure

    def _trial(self, closure: Callable, params, origin, direction, eta: float) -> float:
        return float(self._trial_loss(closure, params, origin, direction, eta))

    def _trial_loss(self, closure: Callable, params, origin, direction, eta: float) -> torch.Tensor:
        """The loss at origin - eta * direction, left on the device (params stay at that point)."""
        torch._foreach_copy_(params, origin)
        torch._foreach_add_(params, direction, alpha=-eta)
        with torch.no_grad():
            loss = closure(backward=False)
        self.scalars["forward_evals"] += 1
        return loss

    @staticmethod
    def _apply(params, origin, direction, eta: float) -> None:
        torch._foreach_copy_(params, origin)
        torch._foreach_add_(params, direction, alpha=-eta)

    def _backtrack(self, closure, params, origin, direction, loss: float, slope: float, eta: float) -> float:
        """Vaswani's backtracking: the first eta * beta_b^k (k < max_backtracks) with
        f(w - eta d) <= f(w) - c eta slope, else 1e-6. Leaves params at the last trial point; sets the
        `last_backtracks` and `loss_next` scalars; returns the step size."""
        o, s = self.param_groups[0], self.scalars
        for k in range(o["max_backtracks"]):
            s["loss_next"] = self._trial(closure, params, origin, direction, eta)
            if s["loss_next"] <= loss - o["c"] * eta * slope:
                return eta
            eta *= o["beta_b"]
            s["last_backtracks"] = k + 1
        return 1e-6

    def _read_loss_and_dot(self, loss: torch.Tensor, a, b) -> tuple[float, float]:
        """The step's loss and the sum over tensors of <a_i, b_i>, as Python floats read from the device
        together (one host sync: each sync stalls a GPU's queue); records the loss."""
        if a:
            loss, dot = _floats(loss, _device_dots((a, b))[0])
        else:
            loss, dot = float(loss), 0.0
        self.scalars["loss"] = loss
        return loss, dot

    def _reset(self) -> float:
        """The step size a search starts from: the last one, reset by the group's reset_option."""
        o, eta = self.param_groups[0], self.scalars["step_size"]
        if o["reset_option"] == 1:
            return eta * o["gamma"] ** (1.0 / o["n_batches_per_epoch"])
        if o["reset_option"] == 2:
            return o["init_step_size"]
        return eta


def _floats(*values) -> list[float]:
    """Scalar losses as Python floats; tensors on one device are read together, in one host sync."""
    if all(torch.is_tensor(v) for v in values) and len({v.device for v in values}) == 1:
        # stack promotes mixed dtypes to the wider one, which holds each value exactly
        return torch.stack([v.detach().reshape(()) for v in values]).tolist()
    return [float(v) for v in values]


def _device_dots(*pairs) -> list[torch.Tensor]:
    """For each pair (a, b) of non-empty tensor lists, the sum over tensors of <a_i, b_i> as a 0-dim tensor
    on the device (no host read)."""
    return [torch.stack([x.sum() for x in torch._foreach_mul(a, b)]).sum() for a, b in pairs]


class SLS(_ArmijoBase):
    def __init__(self, params, init_step_size: float = 1.0, c: float = 0.1, beta_b: float = 0.9,
                 gamma: float = 2.0, reset_option: int = 1, n_batches_per_epoch: int = 500,
                 max_backtracks: int = 100, mode: str = "clean"):
        _check_choice("reset_option", reset_option, RESET_OPTIONS)
        if init_step_size <= 0 or not 0 < beta_b < 1 or c <= 0:
            raise ValueError(f"SLS needs init_step_size > 0, 0 < beta_b < 1, c > 0 "
                             f"(got {init_step_size}, {beta_b}, {c})")
        defaults = dict(init_step_size=init_step_size, c=c, beta_b=beta_b, gamma=gamma, reset_option=reset_option,
                        n_batches_per_epoch=n_batches_per_epoch, max_backtracks=max_backtracks)
        super().__init__(params, defaults, mode, {"step_size": float(init_step_size), "grad_norm": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        o = self.param_groups[0]  # the only group (OneParamGroup)
        s = self.scalars
        loss_t, params, closure = self._begin_step(closure)
        grads = [p.grad for p in params]
        loss, grad_norm_sq = self._read_loss_and_dot(loss_t, grads, grads)
        s["grad_norm"] = math.sqrt(grad_norm_sq)
        # reset before every search, step 1 included (sls.py resets from init_step_size on the first call too)
        eta = self._reset()
        s["last_backtracks"] = 0
        if s["grad_norm"] < 1e-8:
            s["step_size"] = eta
            return loss_t
        origin = [p.clone() for p in params]
        eta = self._backtrack(closure, params, origin, grads, loss, grad_norm_sq, eta)
        self._apply(params, origin, grads, eta)  # the last trial point unless the search gave up (1e-6)
        s["backtracks"] += s["last_backtracks"]
        s["step_size"] = eta
        return loss_t


class _PreconditionedArmijo(_ArmijoBase):
    """Adam/AMSGrad/Adagrad second moments kept per tensor; the preconditioned direction P g."""

    BASE_OPTS = ("adam", "amsgrad", "adagrad")

    def _moments(self, params, grads, beta: float, momentum: float, base_opt: str, t: int):
        """Updates the moments; returns (P, m_hat or None) as lists of tensors."""
        for p in params:
            state = self.state[p]
            if not state:
                state["exp_avg_sq"] = torch.zeros_like(p)
                if momentum > 0:
                    state["exp_avg"] = torch.zeros_like(p)
                if base_opt == "amsgrad":
                    state["max_exp_avg_sq"] = torch.zeros_like(p)
        v = [self.state[p]["exp_avg_sq"] for p in params]
        if base_opt == "adagrad":
            torch._foreach_addcmul_(v, grads, grads)
            denom = torch._foreach_sqrt(v)
        else:
            torch._foreach_mul_(v, beta)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta)
            if base_opt == "amsgrad":
                vmax = [self.state[p]["max_exp_avg_sq"] for p in params]
                torch._foreach_maximum_(vmax, v)
                v = vmax
            denom = torch._foreach_sqrt(torch._foreach_div(v, 1 - beta ** t))
        torch._foreach_add_(denom, 1e-8)
        precond = torch._foreach_reciprocal(denom)
        m_hat = None
        if momentum > 0:
            m = [self.state[p]["exp_avg"] for p in params]
            torch._foreach_lerp_(m, grads, 1 - momentum)
            m_hat = torch._foreach_div(m, 1 - momentum ** t)
        return precond, m_hat


class AdaSLS(_PreconditionedArmijo):
    def __init__(self, params, init_step_size: float = 1.0, c: float = 0.1, beta: float = 0.99,
                 momentum: float = 0.0, base_opt: str = "adam", beta_b: float = 0.9, gamma: float = 2.0,
                 reset_option: int = 1, n_batches_per_epoch: int = 500, max_backtracks: int = 100,
                 mode: str = "clean"):
        _check_choice("base_opt", base_opt, self.BASE_OPTS)
        _check_choice("reset_option", reset_option, RESET_OPTIONS)
        if init_step_size <= 0 or not 0 <= momentum < 1 or not 0 < beta < 1:
            raise ValueError(f"AdaSLS needs init_step_size > 0, 0 <= momentum < 1, 0 < beta < 1 "
                             f"(got {init_step_size}, {momentum}, {beta})")
        defaults = dict(init_step_size=init_step_size, c=c, beta=beta, momentum=momentum, base_opt=base_opt,
                        beta_b=beta_b, gamma=gamma, reset_option=reset_option,
                        n_batches_per_epoch=n_batches_per_epoch, max_backtracks=max_backtracks)
        super().__init__(params, defaults, mode, {"step_size": float(init_step_size), "pp_norm": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        o = self.param_groups[0]  # the only group (OneParamGroup)
        s = self.scalars
        loss_t, params, closure = self._begin_step(closure)
        grads = [p.grad for p in params]
        precond, m_hat = self._moments(params, grads, o["beta"], o["momentum"], o["base_opt"], s["step"])
        trial_dir = torch._foreach_mul(grads, precond)
        loss, pp_norm = self._read_loss_and_dot(loss_t, grads, trial_dir)
        s["pp_norm"] = pp_norm
        # reset before every search, step 1 included, as ada_sls's get_step_size does
        eta = self._reset()
        origin = [p.clone() for p in params]
        s["last_backtracks"] = 0
        # no small-gradient skip: ada_sls searches every step (its grad-norm early return is commented out)
        eta = self._backtrack(closure, params, origin, trial_dir, loss, pp_norm, eta)
        update_dir = trial_dir if m_hat is None else torch._foreach_mul(m_hat, precond)
        self._apply(params, origin, update_dir, eta)
        s["backtracks"] += s["last_backtracks"]
        s["step_size"] = eta
        return loss_t


class AdamSLS(_PreconditionedArmijo):
    def __init__(self, params, init_step_size: float = 0.1, c: float = 0.2, beta: float = 0.999,
                 momentum: float = 0.9, beta_s: float = 0.999, smooth: bool = True, beta_b: float = 0.9,
                 gamma: float = 2.0, reset_option: int = 1, n_batches_per_epoch: int = 500,
                 max_backtracks: int = 200, speed_up: bool = False, mode: str = "clean"):
        _check_choice("reset_option", reset_option, RESET_OPTIONS)
        if init_step_size <= 0 or not 0 <= momentum < 1 or not 0 < beta_s < 1:
            raise ValueError(f"AdamSLS needs init_step_size > 0, 0 <= momentum < 1, 0 < beta_s < 1 "
                             f"(got {init_step_size}, {momentum}, {beta_s})")
        defaults = dict(init_step_size=init_step_size, c=c, beta=beta, momentum=momentum, beta_s=beta_s,
                        smooth=smooth, beta_b=beta_b, gamma=gamma, reset_option=reset_option,
                        n_batches_per_epoch=n_batches_per_epoch, max_backtracks=max_backtracks, speed_up=speed_up)
        super().__init__(params, defaults, mode, {
            "step_size": float(init_step_size), "pp_norm": 0.0, "avg_decrease": 0.0, "avg_pp_norm": 0.0,
            "step_size_fast": 0.0, "step_size_slow": 0.0, "since_search": 0, "searched": 0})

    def _search_due(self) -> bool:
        """speed_up: search every L = min(10, 1/(r - 1 + 1e-8)) steps, r = fast/slow EMA ratio of eta (>= 1)."""
        s = self.scalars
        if not self.param_groups[0]["speed_up"] or s["step"] <= 10:
            return True
        r = s["step_size_fast"] / s["step_size_slow"] if s["step_size_slow"] > 0 else 1.0
        r = 1.0 / r if 0 < r < 1 else r
        every = min(10.0, 1.0 / (r - 1.0 + 1e-8))
        return s["since_search"] + 1 >= every

    @torch.no_grad()
    def step(self, closure=None):
        o = self.param_groups[0]  # the only group (OneParamGroup)
        s = self.scalars
        loss_t, params, closure = self._begin_step(closure)
        t = s["step"]
        grads = [p.grad for p in params]
        precond, m_hat = self._moments(params, grads, o["beta"], o["momentum"], "adam", t)
        trial_dir = torch._foreach_mul(grads, precond)
        loss, pp_norm = self._read_loss_and_dot(loss_t, grads, trial_dir)
        s["pp_norm"] = pp_norm
        beta_s = o["beta_s"]
        eta = self._reset()
        origin = [p.clone() for p in params]
        s["last_backtracks"] = 0
        # As in adam_sls.py, the smoothed sum <g, P g> and the fast/slow step-size EMAs move only on steps where
        # the search is due (every step without speed_up); skipped steps leave them alone.
        if self._search_due():
            s["since_search"] = 0
            s["searched"] += 1  # steps on which the search was due (the loss == 0 guard below may still skip it)
            # the averages are updated once per due step, so that is the count their bias correction uses
            correction = 1 - beta_s ** s["searched"]
            s["avg_pp_norm"] = beta_s * s["avg_pp_norm"] + (1 - beta_s) * pp_norm
            suff = s["avg_pp_norm"] / correction if o["smooth"] else pp_norm
            if loss != 0 and suff >= 1e-8:
                for k in range(o["max_backtracks"]):
                    loss_next = self._trial(closure, params, origin, trial_dir, eta)
                    raw = loss - loss_next
                    decrease = (beta_s * s["avg_decrease"] + (1 - beta_s) * raw) / correction \
                        if o["smooth"] else raw
                    if decrease >= eta * o["c"] * suff:
                        s["avg_decrease"] = beta_s * s["avg_decrease"] + (1 - beta_s) * raw
                        break
                    eta *= o["beta_b"]
                    s["last_backtracks"] = k + 1
                s["loss_next"] = loss_next
            s["step_size_fast"] = 0.9 * s["step_size_fast"] + 0.1 * eta
            s["step_size_slow"] = 0.99 * s["step_size_slow"] + 0.01 * eta
        else:
            s["since_search"] += 1
        update_dir = trial_dir if m_hat is None else torch._foreach_mul(m_hat, precond)
        self._apply(params, origin, update_dir, eta)
        s["backtracks"] += s["last_backtracks"]
        s["step_size"] = eta
        return loss_t


class ALSALS(_ArmijoBase):
    def __init__(self, params, init_step_size: float = 0.1, c: float = 0.1, betas: tuple[float, float] = (0.9, 0.999),
                 beta_b: float = 0.9, growth: float = 1 / 0.999, smoothing: float = 0.99, probe_eps: float = 5e-9,
                 max_backtracks: int = 100, max_probe_bumps: int = 30, clip_grad: float | None = None,
                 mode: str = "clean"):
        if init_step_size <= 0 or c <= 0 or not 0 < beta_b < 1 or growth < 1 or probe_eps <= 0:
            raise ValueError(f"ALSALS needs init_step_size > 0, c > 0, 0 < beta_b < 1, growth >= 1, probe_eps > 0 "
                             f"(got {init_step_size}, {c}, {beta_b}, {growth}, {probe_eps})")
        defaults = dict(init_step_size=init_step_size, c=c, betas=tuple(betas), beta_b=beta_b, growth=growth,
                        smoothing=smoothing, probe_eps=probe_eps, max_backtracks=max_backtracks,
                        max_probe_bumps=max_probe_bumps, clip_grad=clip_grad)
        super().__init__(params, defaults, mode, {
            "step_size": float(init_step_size), "slope": 0.0, "slope_ema": 0.0, "decrease_ema": 0.0,
            "probe_eps": float(probe_eps), "numerical_error": 0, "cos_grad_momentum": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        o = self.param_groups[0]  # the only group (OneParamGroup)
        s = self.scalars
        loss_t, params, closure = self._begin_step(closure)
        t = s["step"]
        if o["clip_grad"] is not None:
            torch.nn.utils.clip_grad_norm_(params, o["clip_grad"])
        grads = [p.grad for p in params]
        beta1, beta2 = o["betas"]
        for p in params:
            if not self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(torch._foreach_div(v, 1 - beta2 ** t))
        torch._foreach_add_(denom, 1e-8)
        direction = torch._foreach_div(torch._foreach_div(m, 1 - beta1 ** t), denom)
        if params:  # a diagnostic, kept on the device until a log point reads internals() (no sync here)
            wide = torch.float32 if params[0].device.type == "mps" else torch.float64  # MPS has no float64
            gm, gg, mm = (x.to(wide) for x in _device_dots((grads, m), (grads, grads), (m, m)))
            s["cos_grad_momentum"] = torch.where((gg > 0) & (mm > 0), gm / torch.sqrt(gg * mm), 0.0)
        else:
            s["cos_grad_momentum"] = 0.0
        origin = [p.clone() for p in params]
        eta = s["step_size"] * o["growth"]
        # finite-difference slope along the direction; bump eps while the loss difference underflows to 0.
        # The step's loss is read with the probe's, in one host read.
        eps = o["probe_eps"]
        probe = self._trial_loss(closure, params, origin, direction, eps)
        loss, probe = _floats(loss_t, probe)
        s["loss"] = loss
        slope = (loss - probe) / eps
        bumps = 0
        while slope == 0.0 and bumps < o["max_probe_bumps"]:
            eps *= 10.0
            bumps += 1
            s["numerical_error"] += 1
            slope = (loss - self._trial(closure, params, origin, direction, eps)) / eps
        s["probe_eps"] = eps
        s["slope"] = slope
        rho = o["smoothing"]
        s["slope_ema"] = rho * s["slope_ema"] + (1 - rho) * slope
        c_eff = o["c"] if s["slope_ema"] > 0 else 1.0 / o["c"]
        loss_next = self._trial(closure, params, origin, direction, eta)
        decrease = loss - loss_next
        s["last_backtracks"] = 0
        for k in range(o["max_backtracks"]):
            if eta < eps:
                eta /= o["beta_b"]
                break
            if rho * s["decrease_ema"] + (1 - rho) * decrease < c_eff * eta * s["slope_ema"]:
                eta *= o["beta_b"]
                loss_next = self._trial(closure, params, origin, direction, eta)
                decrease = loss - loss_next
                s["last_backtracks"] = k + 1
            else:
                break
        s["decrease_ema"] = rho * s["decrease_ema"] + (1 - rho) * decrease
        s["loss_next"] = loss_next
        s["backtracks"] += s["last_backtracks"]
        s["step_size"] = eta
        self._apply(params, origin, direction, eta)
        return loss_t
