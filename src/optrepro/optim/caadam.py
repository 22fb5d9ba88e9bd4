"""CaAdam (Genet & Inzirillo 2024, arXiv 2410.24216): Adam whose step is multiplied by a static per-tensor
factor S derived from the model's structure (connection counts or depth).

    opt = CaAdam(model, lr=1e-3, strategy="multiplicative", mode="reference")
    opt.factors        # {parameter name: S}

The update is torch's Adam with the learning rate of each tensor multiplied by S. The factors are computed
once at construction (in reference mode again by add_param_group; they are static in the authors' code too); each step splits a param group's tensors by
distinct factor and runs torch's Adam once per factor with lr * S: by default torch's fused kernel where torch
has one (see CaAdam's docstring for the cost), else torch's functional Adam on the for-loop/foreach path.
`group["lr"]` stays the *base* LR, so schedulers and ReduceLROnPlateau's min_lr act on the base LR as in Keras.

Strategies (additive, multiplicative, depth; formulas in optim/caadam_rules.py, which the planner shares
without importing torch), as in remigenet/CaAdam@ce14f7e caadam/{additive,multiplicative,depth}_scaling.py.
The multiplicative rule is not monotone in c (sigma >= 0 on both sides of the median), as in the authors' code.
A zero denominator (c~ == c_min or c~ == c_max, a 0/0) gives S = 1 in both modes; the authors' code produced
NaN/inf there.

Modes (how c and d are derived from the model):
  "described"  what the paper describes, keyed by parameter identity.
               c = numel of each trainable tensor with ndim >= 2 (Linear in*out, ConvNd out*in/groups*k...,
               embeddings). 1-D tensors (biases, norm scales) follow `one_d`: "owner" (default) takes the count
               of the largest ndim>=2 tensor of the module that owns it, a tied one included (a decoder's
               bias follows the embedding its weight is tied to); a 1-D tensor whose module owns none
               (BatchNorm, LayerNorm) gets S = 1. "exempt" gives every 1-D tensor S = 1; "zero" uses c = 0 as the
               authors' code does. Depth d = index of the tensor's owning *module* among the parameter-owning
               modules in registration order (d_m = their number), so a layer's weight and bias share a depth.
               Counts, statistics and depths come from the whole model, even when the optimizer gets a subset.
  "reference"  what the authors' Keras code computed (caadam/caadam.py with Keras 3). Counts are stored by the tensor's
               *short* name (Keras 3 `var.name`; here the last component of the torch name, "weight"), so every
               ndim>=2 tensor gets the count of the LAST ndim>=2 tensor with the same short name; 1-D tensors get
               c = 0 (in Keras their names, bias/gamma/beta, never match a kernel's). min/median/max are still taken
               over all ndim>=2 tensors. Depth d = the tensor's index in the trainable parameter list, d_m = its
               length (every weight, bias and norm scale counts as a layer). All of this is over the optimizer's
               own parameters (Keras' var_list), in the model's registration order: with a subset of the model
               the statistics, the last kernel and d_m are the subset's (add_param_group recomputes them).
Common to both: the order is `model.named_parameters()` (registration order; Keras used the functional graph's
topological order, which differs e.g. for ResNet shortcut convs), frozen tensors (requires_grad=False) are left
out as Keras' trainable_variables leaves them out, and tied weights are counted once, at their first
registration (named_parameters drops duplicates), with the depth of that registration.

gamma=None takes the per-strategy default of the authors' code, which their runs used: additive 0.95,
multiplicative 5.0, depth 1.0 (results/*.ipynb build the strategies without arguments). gamma=0 makes additive
and depth plain Adam; gamma=1 does so for multiplicative.

eps_hat=True uses the Keras epsilon placement of the reference code: theta -= lr*sqrt(1-b2^t)/(1-b1^t)*S*m/(sqrt(v)+eps),
i.e. torch's form with eps_t = eps/sqrt(1-b2^t), where t is each tensor's own step count (torch's, which also
sets its bias correction; Keras used one global iteration count). With the default eps_hat=False the update is
torch.optim.Adam's.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import Adam
from torch.optim.adam import adam as adam_functional

from optrepro.optim._base import closure_loss, fastest_torch_kwargs
from optrepro.optim.caadam_rules import (DEFAULT_GAMMA, STRATEGIES, connection_factor, connection_stats,
                                         depth_factor)

MODES = ("described", "reference")
ONE_D = ("owner", "exempt", "zero")


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}. Valid choices: {', '.join(choices)}")


def _trainable_named(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _restrict(named: list[tuple[str, nn.Parameter]], params) -> list[tuple[str, nn.Parameter]]:
    """`named` (registration order) limited to the tensors in `params`; all of them when params is None."""
    if params is None:
        return named
    ids = {id(p) for p in params}
    return [(name, p) for name, p in named if id(p) in ids]


def _reference_table(named: list[tuple[str, nn.Parameter]]) -> dict[str, dict]:
    by_short: dict[str, int] = {}
    for name, p in named:
        if p.ndim > 1:
            by_short[name.rsplit(".", 1)[-1]] = p.numel()  # later tensors overwrite: the Keras collision
    table: dict[str, dict] = {}
    for depth, (name, p) in enumerate(named):
        c = by_short.get(name.rsplit(".", 1)[-1], 0) if p.ndim > 1 else 0
        table[name] = {"c": float(c), "d": depth, "d_m": len(named)}
    return table


def _described_table(model: nn.Module, named: list[tuple[str, nn.Parameter]], one_d: str) -> dict[str, dict]:
    # the owner module of each tensor is the prefix of its (first-registration) name; a module's kernels are read
    # from every registration (remove_duplicate=False), so a decoder whose weight is tied to an embedding still
    # owns that kernel and its bias follows it, while the tied kernel itself is counted once, by its first name
    owner_of = {name: name.rsplit(".", 1)[0] if "." in name else "" for name, _ in named}
    layers: list[str] = []
    for name, _ in named:
        if owner_of[name] not in layers:
            layers.append(owner_of[name])
    owner_kernel: dict[str, int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.requires_grad and p.ndim > 1:
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            owner_kernel[owner] = max(owner_kernel.get(owner, 0), p.numel())
    table: dict[str, dict] = {}
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


def structure_table(model: nn.Module, mode: str, one_d: str = "owner", params=None) -> dict[str, dict]:
    """Per trainable tensor (by full name): connection count c (None = exempt), depth d and d_m.

    `params` (the optimizer's tensors; default every trainable one) restricts reference mode to them: Keras
    computed the counts, statistics and depths over the optimizer's var_list. Described mode reads the whole
    model's structure whatever `params` is."""
    _check_choice("mode", mode, MODES)
    _check_choice("one_d", one_d, ONE_D)
    named = _trainable_named(model)
    if mode == "reference":
        return _reference_table(_restrict(named, params))
    return _described_table(model, named, one_d)


def _factors_from_table(table: dict[str, dict], tensors: dict[str, torch.Tensor], strategy: str,
                        gamma: float) -> dict[str, float]:
    if strategy == "depth":
        return {name: depth_factor(row["d"], row["d_m"], gamma) for name, row in table.items()}
    stats = connection_stats(float(tensors[name].numel()) for name in table if tensors[name].ndim > 1)
    return {name: (1.0 if row["c"] is None else connection_factor(strategy, row["c"], stats, gamma))
            for name, row in table.items()}


def caadam_factors(model: nn.Module, strategy: str, mode: str, gamma: float | None = None,
                   one_d: str = "owner", params=None) -> dict[str, float]:
    """S for every trainable tensor of `model` (reference mode: of `params`, see structure_table), keyed by its
    full name from named_parameters()."""
    _check_choice("strategy", strategy, STRATEGIES)
    gamma = DEFAULT_GAMMA[strategy] if gamma is None else float(gamma)
    table = structure_table(model, mode, one_d, params)
    return _factors_from_table(table, dict(_trainable_named(model)), strategy, gamma)


class CaAdam(Adam):
    """Connection-aware Adam. `model` is the nn.Module; `params` optionally gives param groups (a subset or
    partition of the model's trainable parameters, as for torch.optim.Adam); by default all trainable ones.
    In reference mode the factors are computed over the optimizer's own parameters (Keras' var_list) and
    `add_param_group` recomputes them over the enlarged set; in described mode they come from the whole model.

    Speed: with foreach=None and fused=None (the default) CaAdam takes torch's fused Adam kernel where torch has
    one for these parameters (CPU and CUDA floating point), else torch's default. On the fused path a step
    gathers the state once per param group (torch's `_init_group`) and calls `torch._fused_adam_` once per
    distinct factor with lr * S, skipping the per-call bookkeeping of torch's functional `adam`; with one factor
    per tensor (depth) that is one kernel call per tensor: on CPU 3-10 us each over one call for all tensors, 3-8%
    of a 12 ms step of 10 M parameters in 100 tensors (benchmarks/RESULTS.md, "Papers' optimizers").
    Other paths call torch's functional `adam` once per distinct factor (the readable reference path).
    With eps_hat a step also reads the group's step counts (one stack and one device sync): when they differ
    (a tensor that missed gradients lags behind) the calls are split by step count too, since eps_t depends on it.
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
        self.strategy, self.mode, self.one_d = strategy, mode, one_d
        self.gamma = DEFAULT_GAMMA[strategy] if gamma is None else float(gamma)
        self._named = _trainable_named(model)
        self._trainable_ids = {id(p) for _, p in self._named}
        self._described = _described_table(model, self._named, one_d) if mode == "described" else None
        self._factors_ready = False
        params = list(params) if params is not None else [p for _, p in self._named]
        if foreach is None and fused is None:
            fastest = fastest_torch_kwargs(params, has_fused=True) if params else {}
            fused = fastest.get("fused")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, fused=fused)
        # torch.optim.Adam builds the defaults itself: eps_hat joins them here, so add_param_group fills it in
        self.defaults["eps_hat"] = eps_hat
        for group in self.param_groups:
            group.setdefault("eps_hat", eps_hat)
        self._update_factors()
        self._factors_ready = True

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("eps_hat", False)  # a group saved without it (torch.optim.Adam's) used torch's form

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        if any(id(p) not in self._trainable_ids for p in self.param_groups[-1]["params"]):
            self.param_groups.pop()
            raise ValueError("CaAdam: a parameter in `params` is not a trainable parameter of `model`")
        if self._factors_ready:
            self._update_factors()

    def _update_factors(self) -> None:
        """factors, connection_table and the per-tensor lookup the step uses, for the current param groups."""
        tensors = dict(self._named)
        if self.mode == "reference":
            mine = [p for group in self.param_groups for p in group["params"]]
            self.connection_table = _reference_table(_restrict(self._named, mine))
        else:
            self.connection_table = self._described
        self.factors = _factors_from_table(self.connection_table, tensors, self.strategy, self.gamma)
        self._factor_by_id = {id(tensors[name]): factor for name, factor in self.factors.items()}

    def factor_of(self, p: torch.Tensor) -> float:
        if not any(q is p for group in self.param_groups for q in group["params"]):
            raise KeyError("parameter not handled by this optimizer")
        return self._factor_by_id[id(p)]

    @staticmethod
    def _keras_eps(group: dict, step: float) -> float:
        """The Keras eps-hat form (eps added to sqrt(v) before the bias correction) is torch's form with
        eps / sqrt(1 - beta2^t) at step t (1-based)."""
        return group["eps"] / math.sqrt(1.0 - group["betas"][1] ** step)

    @staticmethod
    def _step_counts(steps: list[torch.Tensor]) -> tuple[float | None, list[float] | None]:
        """(t, None) when every tensor's step count is t, the usual case (one device sync, as reading one count
        took); (None, each tensor's count) when they differ, e.g. for a tensor whose first gradient came late."""
        if len(steps) == 1:
            return float(steps[0]), None
        try:
            counts = torch.stack(steps)
        except RuntimeError:  # a group spread over several devices
            values = [float(s) for s in steps]
            return (values[0], None) if len(set(values)) == 1 else (None, values)
        low, high = torch.stack(torch.aminmax(counts)).tolist()
        return (low, None) if low == high else (None, counts.tolist())

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

    def _buckets(self, lists: tuple[list, ...], counts: list[float] | None = None) -> dict[tuple, tuple[list, ...]]:
        """Adam's parallel lists (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps; max_exp_avg_sqs
        empty without amsgrad) split by (device, dtype, factor), and by step count when `counts` gives each
        tensor's (the key's 4th item). Written for speed: with one factor per tensor this runs for every tensor
        at every step."""
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = lists
        keys = [(p.device, p.dtype, self._factor_by_id[id(p)]) for p in params]
        if counts is not None:
            keys = [key + (count,) for key, count in zip(keys, counts)]
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
        eps, counts = group["eps"], None
        if group["eps_hat"]:  # the step count this update will be: the stored one plus one
            count, counts = self._step_counts(lists[5])
            eps = None if count is None else self._keras_eps(group, count + 1.0)
        for key, bucket in self._buckets(lists, counts).items():
            adam_functional(
                *bucket, amsgrad=group["amsgrad"], has_complex=has_complex, beta1=beta1, beta2=beta2,
                lr=group["lr"] * key[2], weight_decay=group["weight_decay"],
                eps=eps if counts is None else self._keras_eps(group, key[3] + 1.0),
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
        eps, counts = group["eps"], None
        if group["eps_hat"]:
            count, counts = self._step_counts(lists[5])
            eps = None if count is None else self._keras_eps(group, count)
        per_device: dict[torch.device, tuple] = {}
        for key, bucket in self._buckets(lists, counts).items():
            device = key[0]
            if device not in per_device:
                per_device[device] = (None if grad_scale is None else grad_scale.to(device, non_blocking=True),
                                      None if found_inf is None else found_inf.to(device, non_blocking=True))
            device_grad_scale, device_found_inf = per_device[device]
            kernel(*bucket, amsgrad=group["amsgrad"], lr=group["lr"] * key[2], beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"], eps=eps if counts is None else self._keras_eps(group, key[3]),
                   maximize=group["maximize"], grad_scale=device_grad_scale, found_inf=device_found_inf)
            if device_found_inf is not None:  # a skipped step does not count (torch does the same)
                torch._foreach_sub_(bucket[5], [device_found_inf] * len(bucket[5]))
