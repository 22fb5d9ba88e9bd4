"""CaAdam (Genet & Inzirillo 2024, arXiv 2410.24216): Adam whose step is multiplied by a static per-tensor
factor S derived from the model's structure (connection counts or depth).

    opt = CaAdam(model, lr=1e-3, strategy="multiplicative", mode="reference")
    opt.factors        # {parameter name: S}

The update is torch's Adam with the learning rate of each tensor multiplied by S. The factors are computed
once at construction (they are static in the authors' code too) and the parameters of each param group are
bucketed by distinct factor, so one step is a handful of calls to torch's foreach/fused Adam.
`group["lr"]` stays the *base* LR, so schedulers and ReduceLROnPlateau's min_lr act on the base LR as in Keras.

Strategies (c = connection count of a tensor, c~ / c_min / c_max = median / min / max over the counted tensors,
gamma = strength), dossier caadam.md §1.2:
  additive        S = 1 + gamma (c~ - c)/(c~ - c_min)  if c <= c~,   1 - gamma (c - c~)/(c_max - c~)  otherwise
  multiplicative  S = gamma ** sigma, sigma = (c~ - c)/(c~ - c_min) if c <= c~, (c - c~)/(c_max - c~) otherwise
                  (sigma >= 0 on both sides: the rule is not monotone in c, as in the authors' code)
  depth           S = (1 + gamma) ** ((d_m - (1 + d)) / d_m), d = 0-based depth, d_m = number of depths
A zero denominator (c~ == c_min or c~ == c_max, the 0/0 case of §1.3) gives sigma = 0, i.e. S = 1, in both modes;
the authors' code produced NaN/inf there.

Modes (how c and d are derived from the model):
  "described"  what the paper describes, keyed by parameter identity.
               c = numel of each trainable tensor with ndim >= 2 (Linear in*out, ConvNd out*in/groups*k...,
               embeddings). 1-D tensors (biases, norm scales) follow `one_d`: "owner" (default) takes the count
               of the largest ndim>=2 tensor of the module that owns it; a 1-D tensor whose module owns none
               (BatchNorm, LayerNorm) gets S = 1. "exempt" gives every 1-D tensor S = 1; "zero" uses c = 0 as the
               authors' code does. Depth d = index of the tensor's owning *module* among the parameter-owning
               modules in registration order (d_m = their number), so a layer's weight and bias share a depth.
  "reference"  what the authors' Keras code computed (dossier §1.3-1.4). Counts are stored by the tensor's
               *short* name (Keras 3 `var.name`; here the last component of the torch name, "weight"), so every
               ndim>=2 tensor gets the count of the LAST ndim>=2 tensor with the same short name; 1-D tensors get
               c = 0 (in Keras their names, bias/gamma/beta, never match a kernel's). min/median/max are still taken
               over all ndim>=2 tensors. Depth d = the tensor's index in the trainable parameter list, d_m = its
               length (every weight, bias and norm scale counts as a layer).
Common to both: the order is `model.named_parameters()` (registration order; Keras used the functional graph's
topological order, which differs e.g. for ResNet shortcut convs), frozen tensors (requires_grad=False) are left
out as Keras' trainable_variables leaves them out, and tied weights are counted once, at their first
registration (named_parameters drops duplicates).

gamma=None takes the per-strategy default of the authors' code, which their runs used: additive 0.95,
multiplicative 5.0, depth 1.0 (dossier §1.2). gamma=0 makes additive and depth plain Adam; gamma=1 does so for
multiplicative.

eps_hat=True uses the Keras epsilon placement of the reference code: theta -= lr*sqrt(1-b2^t)/(1-b1^t)*S*m/(sqrt(v)+eps),
i.e. torch's form with eps_t = eps/sqrt(1-b2^t). With the default eps_hat=False the update is torch.optim.Adam's.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.optim import Adam
from torch.optim.adam import adam as adam_functional

STRATEGIES = ("additive", "multiplicative", "depth")
MODES = ("described", "reference")
ONE_D = ("owner", "exempt", "zero")
DEFAULT_GAMMA = {"additive": 0.95, "multiplicative": 5.0, "depth": 1.0}


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}. Valid choices: {', '.join(choices)}")


def _trainable_named(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def connection_stats(counts: Iterable[float]) -> tuple[float, float, float]:
    """(c_min, median, c_max) over the counted tensors; (1, 1, 1) when there is none (the authors' fallback)."""
    counts = list(counts)
    if not counts:
        return 1.0, 1.0, 1.0
    return float(min(counts)), float(np.median(counts)), float(max(counts))


def _sigma(c: float, c_min: float, median: float, c_max: float) -> tuple[float, bool]:
    """Normalised distance from the median and whether c lies at or below it. 0/0 is guarded to 0."""
    if c <= median:
        denom = median - c_min
        return ((median - c) / denom if denom != 0 else 0.0), True
    denom = c_max - median
    return ((c - median) / denom if denom != 0 else 0.0), False


def connection_factor(strategy: str, c: float, stats: tuple[float, float, float], gamma: float) -> float:
    c_min, median, c_max = stats
    sigma, below = _sigma(c, c_min, median, c_max)
    if strategy == "additive":
        return 1.0 + gamma * sigma if below else 1.0 - gamma * sigma
    if strategy == "multiplicative":
        return float(math.exp(sigma * math.log(gamma))) if gamma > 0 else (1.0 if sigma == 0 else 0.0)
    raise ValueError(f"connection_factor: strategy {strategy!r} is not connection-based")


def depth_factor(d: int, d_m: int, gamma: float) -> float:
    return float((1.0 + gamma) ** ((d_m - (1 + d)) / d_m)) if d_m > 0 else 1.0


def structure_table(model: nn.Module, mode: str, one_d: str = "owner") -> dict[str, dict]:
    """Per trainable tensor (by full name): connection count c (None = exempt), depth d and d_m."""
    _check_choice("mode", mode, MODES)
    _check_choice("one_d", one_d, ONE_D)
    named = _trainable_named(model)
    table: dict[str, dict] = {}
    if mode == "reference":
        by_short: dict[str, int] = {}
        for name, p in named:
            if p.ndim > 1:
                by_short[name.rsplit(".", 1)[-1]] = p.numel()  # later tensors overwrite: the Keras collision
        for depth, (name, p) in enumerate(named):
            c = by_short.get(name.rsplit(".", 1)[-1], 0) if p.ndim > 1 else 0
            table[name] = {"c": float(c), "d": depth, "d_m": len(named)}
        return table
    # described: owner module of each tensor, by the prefix of its name (first registration wins for tied weights)
    owner_of = {name: name.rsplit(".", 1)[0] if "." in name else "" for name, _ in named}
    layers: list[str] = []
    for name, _ in named:
        if owner_of[name] not in layers:
            layers.append(owner_of[name])
    owner_kernel: dict[str, int] = {}
    for name, p in named:
        if p.ndim > 1:
            owner_kernel[owner_of[name]] = max(owner_kernel.get(owner_of[name], 0), p.numel())
    for name, p in named:
        if p.ndim > 1:
            c = float(p.numel())
        elif one_d == "zero":
            c = 0.0
        elif one_d == "owner" and owner_of[name] in owner_kernel:
            c = float(owner_kernel[owner_of[name]])
        else:
            c = None
        table[name] = {"c": c, "d": layers.index(owner_of[name]), "d_m": len(layers)}
    return table


def caadam_factors(model: nn.Module, strategy: str, mode: str, gamma: float | None = None,
                   one_d: str = "owner") -> dict[str, float]:
    """S for every trainable tensor of `model`, keyed by its full name from named_parameters()."""
    _check_choice("strategy", strategy, STRATEGIES)
    gamma = DEFAULT_GAMMA[strategy] if gamma is None else float(gamma)
    table = structure_table(model, mode, one_d)
    if strategy == "depth":
        return {name: depth_factor(row["d"], row["d_m"], gamma) for name, row in table.items()}
    params = dict(_trainable_named(model))
    stats = connection_stats(float(params[name].numel()) for name in table if params[name].ndim > 1)
    return {name: (1.0 if row["c"] is None else connection_factor(strategy, row["c"], stats, gamma))
            for name, row in table.items()}


class CaAdam(Adam):
    """Connection-aware Adam. `model` is the nn.Module; `params` optionally gives param groups (a subset or
    partition of the model's trainable parameters, as for torch.optim.Adam); by default all trainable ones."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 strategy: str = "additive", mode: str = "reference", gamma: float | None = None,
                 one_d: str = "owner", eps_hat: bool = False, params=None, *, foreach: bool | None = None,
                 fused: bool | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"CaAdam needs the nn.Module (got {type(model).__name__}): the factors come from its structure")
        _check_choice("strategy", strategy, STRATEGIES)
        _check_choice("mode", mode, MODES)
        _check_choice("one_d", one_d, ONE_D)
        if isinstance(lr, torch.Tensor):
            raise ValueError("CaAdam takes a float lr (it is multiplied by each tensor's factor)")
        self.strategy, self.mode = strategy, mode
        self.gamma = DEFAULT_GAMMA[strategy] if gamma is None else float(gamma)
        self.factors = caadam_factors(model, strategy, mode, self.gamma, one_d)
        self.connection_table = structure_table(model, mode, one_d)
        super().__init__(params if params is not None else [p for _, p in _trainable_named(model)], lr=lr,
                         betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, foreach=foreach,
                         fused=fused)
        for group in self.param_groups:
            group.setdefault("eps_hat", eps_hat)
        factor_of = {id(p): self.factors[name] for name, p in _trainable_named(model)}
        self._buckets: list[list[tuple[float, list[torch.Tensor]]]] = []
        for group in self.param_groups:
            buckets: dict[float, list[torch.Tensor]] = {}
            for p in group["params"]:
                if id(p) not in factor_of:
                    raise ValueError("CaAdam: a parameter in `params` is not a trainable parameter of `model`")
                buckets.setdefault(factor_of[id(p)], []).append(p)
            self._buckets.append(sorted(buckets.items()))

    def factor_of(self, p: torch.Tensor) -> float:
        for buckets in self._buckets:
            for scale, params in buckets:
                if any(q is p for q in params):
                    return scale
        raise KeyError("parameter not handled by this optimizer")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, buckets in zip(self.param_groups, self._buckets):
            beta1, beta2 = group["betas"]
            for scale, bucket in buckets:
                params_with_grad, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps = [], [], [], [], [], []
                has_complex = self._init_group({**group, "params": bucket}, params_with_grad, grads, exp_avgs,
                                               exp_avg_sqs, max_exp_avg_sqs, state_steps)
                if not params_with_grad:
                    continue
                eps = group["eps"]
                if group["eps_hat"]:
                    # Keras form: eps added to sqrt(v) before bias correction == torch form with eps/sqrt(1-b2^t).
                    t = float(state_steps[0]) + 1.0  # the step this update will be
                    eps = eps / math.sqrt(1.0 - beta2 ** t)
                adam_functional(
                    params_with_grad, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                    amsgrad=group["amsgrad"], has_complex=has_complex, beta1=beta1, beta2=beta2,
                    lr=group["lr"] * scale, weight_decay=group["weight_decay"], eps=eps,
                    maximize=group["maximize"], foreach=group["foreach"], capturable=group["capturable"],
                    differentiable=group["differentiable"], fused=group["fused"],
                    grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
                    decoupled_weight_decay=group["decoupled_weight_decay"],
                )
        return loss
