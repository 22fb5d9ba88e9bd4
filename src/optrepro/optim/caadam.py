"""CaAdam (Genet & Inzirillo 2024, arXiv 2410.24216): Adam whose step is multiplied by a static per-tensor
factor S derived from the model's structure (connection counts or depth).

    opt = CaAdam(model, lr=1e-3, strategy="multiplicative", mode="reference")
    opt.factors        # {parameter name: S}

The update is torch's Adam with the learning rate of each tensor multiplied by S. The factors are computed
once at construction (they are static in the authors' code too); each step splits a param group's tensors by
distinct factor and runs torch's Adam once per factor with lr * S: by default torch's fused kernel where torch
has one (see CaAdam's docstring for the cost), else torch's functional Adam on the for-loop/foreach path.
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

from optrepro.optim._base import closure_loss, fastest_torch_kwargs

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
    partition of the model's trainable parameters, as for torch.optim.Adam); by default all trainable ones.

    Speed: with foreach=None and fused=None (the default) CaAdam takes torch's fused Adam kernel where torch has
    one for these parameters (CPU and CUDA floating point), else torch's default. On the fused path a step
    gathers the state once per param group (torch's `_init_group`) and calls `torch._fused_adam_` once per
    distinct factor with lr * S, skipping the per-call bookkeeping of torch's functional `adam`; with one factor
    per tensor (depth) that is one kernel call per tensor: on CPU 3-10 us each over one call for all tensors, 3-8%
    of a 12 ms step of 10 M parameters in 100 tensors (benchmarks/RESULTS.md, "Papers' optimizers").
    Other paths call torch's functional `adam` once per distinct factor (the readable reference path).
    """

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
        params = list(params) if params is not None else [p for _, p in _trainable_named(model)]
        if foreach is None and fused is None:
            fastest = fastest_torch_kwargs(params, has_fused=True) if params else {}
            fused = fastest.get("fused")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, fused=fused)
        for group in self.param_groups:
            group.setdefault("eps_hat", eps_hat)
        self._factor_by_id = {id(p): self.factors[name] for name, p in _trainable_named(model)}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in self._factor_by_id:
                    raise ValueError("CaAdam: a parameter in `params` is not a trainable parameter of `model`")

    def factor_of(self, p: torch.Tensor) -> float:
        if not any(q is p for group in self.param_groups for q in group["params"]):
            raise KeyError("parameter not handled by this optimizer")
        return self._factor_by_id[id(p)]

    @staticmethod
    def _keras_eps(group: dict, step: float) -> float:
        """The Keras eps-hat form (eps added to sqrt(v) before the bias correction) is torch's form with
        eps / sqrt(1 - beta2^t) at step t (1-based)."""
        return group["eps"] / math.sqrt(1.0 - group["betas"][1] ** step)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            lists = ([], [], [], [], [], [])  # params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps
            has_complex = self._init_group(group, *lists)
            if not lists[0]:
                continue
            if group["fused"]:
                self._step_fused(group, lists)
            else:
                self._step_reference(group, has_complex, lists)
        return loss

    def _buckets(self, lists: tuple[list, ...]) -> dict[tuple, tuple[list, ...]]:
        """Adam's parallel lists (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps; max_exp_avg_sqs
        empty without amsgrad) split by (device, dtype, factor). Written for speed: with one factor per tensor
        this runs for every tensor at every step."""
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = lists
        keys = [(p.device, p.dtype, self._factor_by_id[id(p)]) for p in params]
        if len(set(keys)) == 1:
            return {keys[0]: lists}
        buckets: dict[tuple, tuple[list, ...]] = {}
        maxes = max_exp_avg_sqs or [None] * len(params)
        for key, p, g, m, v, m_max, step in zip(keys, params, grads, exp_avgs, exp_avg_sqs, maxes, steps):
            out = buckets.get(key)
            if out is None:
                out = buckets[key] = ([], [], [], [], [], [])
            out[0].append(p)
            out[1].append(g)
            out[2].append(m)
            out[3].append(v)
            if m_max is not None:
                out[4].append(m_max)
            out[5].append(step)
        return buckets

    def _step_reference(self, group, has_complex, lists):
        """torch's functional Adam once per distinct factor, on the group's for-loop or foreach path."""
        beta1, beta2 = group["betas"]
        for (_device, _dtype, scale), bucket in self._buckets(lists).items():
            # the eps-hat step count: the bucket's first tensor, plus one for the step this update will be
            eps = self._keras_eps(group, float(bucket[5][0]) + 1.0) if group["eps_hat"] else group["eps"]
            adam_functional(
                *bucket, amsgrad=group["amsgrad"], has_complex=has_complex, beta1=beta1, beta2=beta2,
                lr=group["lr"] * scale, weight_decay=group["weight_decay"], eps=eps,
                maximize=group["maximize"], foreach=group["foreach"], capturable=group["capturable"],
                differentiable=group["differentiable"], fused=False,
                grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
                decoupled_weight_decay=group.get("decoupled_weight_decay", False),
            )

    def _step_fused(self, group, lists):
        """torch's fused Adam kernel once per (device, dtype, factor), as torch.optim.adam._fused_adam calls it."""
        beta1, beta2 = group["betas"]
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay", False) else torch._fused_adam_
        torch._foreach_add_(lists[5], 1)
        # the eps-hat step count: the group's first tensor, read once per step (a device sync on accelerators)
        eps = self._keras_eps(group, float(lists[5][0])) if group["eps_hat"] else group["eps"]
        per_device: dict[torch.device, tuple] = {}
        for (device, _dtype, scale), bucket in self._buckets(lists).items():
            if device not in per_device:
                per_device[device] = (None if grad_scale is None else grad_scale.to(device, non_blocking=True),
                                      None if found_inf is None else found_inf.to(device, non_blocking=True))
            device_grad_scale, device_found_inf = per_device[device]
            kernel(*bucket, amsgrad=group["amsgrad"], lr=group["lr"] * scale, beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"], eps=eps, maximize=group["maximize"],
                   grad_scale=device_grad_scale, found_inf=device_found_inf)
            if device_found_inf is not None:  # a skipped step does not count (torch does the same)
                torch._foreach_sub_(bucket[5], [device_found_inf] * len(bucket[5]))
