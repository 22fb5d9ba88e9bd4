"""CaAdam (Genet & Inzirillo 2024, arXiv 2410.24216): Adam whose step is multiplied by a static per-tensor
factor S derived from the model's structure (connection counts or depth).

    opt = CaAdam(model, lr=1e-3, strategy="multiplicative", mode="reference")
    opt.factors        # {parameter name: S}

The update is torch's Adam with the learning rate of each tensor multiplied by S. The factors are computed
once at construction (in reference mode again by add_param_group; they are static in the authors' code too); each step splits a param group's tensors by
distinct factor and runs torch's public functional Adam (torch.optim.adam.adam) once per factor with lr * S: by
default on torch's fused kernel where torch has one (see CaAdam's docstring for the cost), else on the
for-loop/foreach path.
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
from optrepro.registry import unknown

MODES = ("described", "reference")
ONE_D = ("owner", "exempt", "zero")


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise unknown(what, value, choices)


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
    one for these parameters (CPU and CUDA floating point), else torch's default. A step gathers each param
    group's tensors and state once and calls torch's public functional Adam (`torch.optim.adam.adam`) once per
    bucket of tensors that share (device, dtype, factor), with lr * S, on the group's path (fused, foreach or
    the for-loop). With one factor per tensor (depth) that is one call per tensor; each costs about 15 us of
    Python on CPU, measured in benchmarks/RESULTS.md ("Papers' optimizers").
    With eps_hat, eps_t depends on each tensor's step count: the counts are mirrored on the host (read from the
    state once after a load_state_dict), so a step does not synchronise with the device to learn them; tensors
    whose counts differ (one that missed gradients lags behind) go to separate calls. Under a GradScaler that
    skips steps (found_inf set) the counts are read from the device instead.
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
        self._host_steps: dict[int, int] = {}  # id(tensor) -> its step count, mirrored on the host (eps_hat)
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
        # (device, dtype, factor) per tensor: the part of a bucket's key that never changes
        self._static_key = {id(p): (p.device, p.dtype, self._factor_by_id[id(p)])
                            for group in self.param_groups for p in group["params"]}

    def factor_of(self, p: torch.Tensor) -> float:
        if not any(q is p for group in self.param_groups for q in group["params"]):
            raise KeyError("parameter not handled by this optimizer")
        return self._factor_by_id[id(p)]

    @staticmethod
    def _keras_eps(group: dict, step: float) -> float:
        """The Keras eps-hat form (eps added to sqrt(v) before the bias correction) is torch's form with
        eps / sqrt(1 - beta2^t) at step t (1-based)."""
        return group["eps"] / math.sqrt(1.0 - group["betas"][1] ** step)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._host_steps.clear()  # mirrors of the loaded counts are read from the state when first needed

    def _gather(self, group: dict) -> tuple[tuple[list, ...], list[tuple], list[int]]:
        """The group's tensors that have a gradient, with their Adam state (created on first use as
        torch.optim.Adam creates it, so state_dicts interchange): the lists (params, grads, exp_avgs, exp_avg_sqs,
        max_exp_avg_sqs, steps), each tensor's bucket key (device, dtype, factor) and id."""
        lists: tuple[list, ...] = ([], [], [], [], [], [])
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = lists
        keys, ids = [], []
        static, amsgrad = self._static_key, group["amsgrad"]
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("CaAdam does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                self._init_state(group, p, state)
            params.append(p)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if amsgrad:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])
            keys.append(static[id(p)])
            ids.append(id(p))
        return lists, keys, ids

    def _init_state(self, group: dict, p: torch.Tensor, state: dict) -> None:
        # torch.optim.Adam's state: the step counter is float32 on the parameter's device for fused/capturable,
        # else a CPU scalar of the default float type
        on_device = group["fused"] or group["capturable"]
        dtype = torch.float32 if group["fused"] or torch.get_default_dtype() != torch.float64 else torch.float64
        state["step"] = torch.zeros((), dtype=dtype, device=p.device if on_device else "cpu")
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self._host_steps[id(p)] = 0

    def _counts(self, ids: list[int], steps: list) -> list[int]:
        """Each tensor's step count before this step, from the host mirror (or the state, once after a load,
        or always while a GradScaler may skip steps: then only the device knows)."""
        if getattr(self, "found_inf", None) is not None:
            return [int(t) for t in torch.stack([s.to(steps[0].device) for s in steps]).tolist()]
        host = self._host_steps
        counts = [host.get(i) for i in ids]
        for k, count in enumerate(counts):
            if count is None:
                counts[k] = host[ids[k]] = int(steps[k])
        return counts

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        host = self._host_steps
        for group in self.param_groups:
            lists, keys, ids = self._gather(group)
            if not ids:
                continue
            eps_hat = group["eps_hat"]
            if eps_hat:
                keys = [key + (count,) for key, count in zip(keys, self._counts(ids, lists[5]))]
            beta1, beta2 = group["betas"]
            common = dict(  # the call's settings but lr and eps (built once: depth makes one call per tensor)
                foreach=None if group["fused"] else group["foreach"], fused=bool(group["fused"]),
                capturable=group["capturable"], differentiable=group["differentiable"], grad_scale=grad_scale,
                found_inf=found_inf, has_complex=any(key[1].is_complex for key in keys),
                decoupled_weight_decay=group.get("decoupled_weight_decay", False), amsgrad=group["amsgrad"],
                beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], maximize=group["maximize"])
            lr, eps = group["lr"], group["eps"]
            for key, bucket in self._buckets(lists, keys).items():
                # eps_hat: the Keras form is torch's with eps_t at the step count this update makes (stored + 1)
                adam_functional(*bucket, lr=lr * key[2], eps=self._keras_eps(group, key[3] + 1.0) if eps_hat else eps,
                                **common)
            if eps_hat:
                for i in ids:
                    host[i] += 1
            else:  # not tracked without eps_hat; read from the state if eps_hat is switched on later
                for i in ids:
                    host.pop(i, None)
        return loss

    @staticmethod
    def _buckets(lists: tuple[list, ...], keys: list[tuple]) -> dict[tuple, tuple[list, ...]]:
        """Adam's parallel lists (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps; max_exp_avg_sqs
        empty without amsgrad) split by each tensor's key: (device, dtype, factor), plus its step count under
        eps_hat. Written for speed: with one factor per tensor this runs for every tensor at every step."""
        if len(set(keys)) == 1:
            return {keys[0]: lists}
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = lists
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
