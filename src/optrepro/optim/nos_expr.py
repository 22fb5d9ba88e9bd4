"""NOS expression optimizers: an interpreter that turns a genome (optrepro.nos.space) into a torch optimizer.

    opt = NOSExpression(model.parameters(), genome="opt10", lr=1e-2, use_decay=True, total_steps=16000)
    opt.genome.text()   # 'Nest ~ i1e(i1e([mul(a13,a2)]*g))'

Each node of the genome is evaluated once per step over all tensors of a param group with torch's foreach
operations (a per-tensor loop only for ops torch has no foreach kernel for: asinh, i1e, dropout, clip_norm).
Only the operands and moment EMAs the genome uses are computed and stored.

Update with u = root value times the LR multiplier (if any), negated when `flip`:
  none       w <- w - lr u
  momentum   b <- mu b - lr u ; w <- w + b
  nesterov   b <- mu b - lr u ; w <- w + mu b - lr u  (`nesterov_form="final"`, Opt9/Opt10's code)
                                w <- w + b - lr u     (`nesterov_form="search"`, the search code)
mu is the cyclical momentum (0.95 -> 0.85 over the warmup, hold, back to 0.95) when momentum_schedule is
"cyclical", else the constant `momentum`. lr is group["lr"], the loop's schedule (warmup-hold-cosine for the
paper's runs) acting on it as the Keras callback did.

Decays need the run length: `total_steps` (T) must be given when the genome's decays are on (use_decay=True,
or a decay marked not switchable, as in Opt4/Opt6) or the momentum schedule is cyclical; t counts from 0 as
Keras' `iterations` did. The authors' final classes default to use_decay=False; so does this class.
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from optrepro.nos.space import (EPS, FINAL_NAMES, Genome, cyclical_momentum, decay_value, final_genome)

MOMENTUM_SCHEDULES = ("cyclical", "constant")
NESTEROV_FORMS = ("final", "search")

# operand -> the EMA buffers it needs: name -> (beta, power of g)
_BUFFERS = {"v": (0.9, 1), "s": (0.99, 2), "lam": (0.999, 3), "ell": (0.999, 2)}
_OPERAND_BUFFERS = {"v_hat": ("v",), "s_hat": ("s",), "lam_hat": ("lam",), "sign_v": ("v",), "qhm_g": ("v",),
                    "qhm_g2": ("s",), "qhm_g3": ("lam",), "aggmo_g": ("v",), "aggmo_g2": ("s",),
                    "aggmo_g3": ("lam",), "opt3_mix": ("ell",)}
_STATEFUL = ("ema", "delta", "running_max")


def _per_tensor(fn, xs):
    return [fn(x) for x in xs]


def _unary(op: str, xs: list[torch.Tensor], state: list[dict], key: str, t: int) -> list[torch.Tensor]:
    if op == "id":
        return xs
    if op == "neg":
        return torch._foreach_neg(xs)
    if op == "log_abs":
        out = torch._foreach_abs(xs)
        torch._foreach_add_(out, EPS)
        torch._foreach_log_(out)
        return out
    if op == "sqrt_abs":
        out = torch._foreach_abs(xs)
        torch._foreach_sqrt_(out)
        return out
    if op == "exp":
        return torch._foreach_exp(xs)
    if op == "abs":
        return torch._foreach_abs(xs)
    if op == "sigmoid":
        return torch._foreach_sigmoid(xs)
    if op == "dsoft":
        out = torch._foreach_abs(xs)
        torch._foreach_add_(out, 1.0)
        torch._foreach_reciprocal_(out)
        return out
    if op == "softplus":
        out = torch._foreach_exp(xs)
        torch._foreach_add_(out, 1.0)
        torch._foreach_abs_(out)
        torch._foreach_add_(out, EPS)
        torch._foreach_log_(out)
        return out
    if op == "erf":
        return torch._foreach_erf(xs)
    if op == "erfc":
        return torch._foreach_erfc(xs)
    if op == "asinh":
        return _per_tensor(torch.asinh, xs)
    if op == "tanh":
        return torch._foreach_tanh(xs)
    if op == "atan":
        return torch._foreach_atan(xs)
    if op == "inv":
        out = torch._foreach_add(xs, EPS)
        torch._foreach_reciprocal_(out)
        return out
    if op == "i1e":
        return _per_tensor(torch.special.i1e, xs)
    if op == "relu":
        return torch._foreach_clamp_min(xs, 0.0)
    if op == "neg_part":
        return torch._foreach_clamp_max(xs, 0.0)
    if op in ("dropout50", "dropout30", "dropout10"):
        rate = {"dropout50": 0.5, "dropout30": 0.3, "dropout10": 0.1}[op]
        return _per_tensor(lambda x: torch.nn.functional.dropout(x, rate, training=True), xs)
    if op == "clip_norm":  # TF clip_by_norm: per tensor, x * 1/max(||x||, 1)
        norms = torch._foreach_norm(xs)
        return [x / torch.clamp_min(n, 1.0) for x, n in zip(xs, norms)]
    if op == "softsign":
        den = torch._foreach_abs(xs)
        torch._foreach_add_(den, 1.0)
        return torch._foreach_div(xs, den)
    if op == "add_eps":
        return torch._foreach_add(xs, EPS)
    if op in _STATEFUL:
        if key not in state[0]:
            for s, x in zip(state, xs):
                s[key] = torch.zeros_like(x) if op != "running_max" else torch.full_like(x, -math.inf)
        buf = [s[key] for s in state]
        if op == "ema":  # fixed: the authors' bias correction divided by 1 - 0.95^0 = 0 (dossier §8.6)
            torch._foreach_lerp_(buf, xs, 0.05)
            return torch._foreach_div(buf, 1 - 0.95 ** (t + 1))
        if op == "delta":  # n <- x - n (its own previous output, as in the code)
            new = torch._foreach_sub(xs, buf)
            torch._foreach_copy_(buf, new)
            return new
        torch._foreach_maximum_(buf, xs)
        return [b.clone() for b in buf]
    raise ValueError(f"unknown unary op {op!r}")


def _binary(op: str, xs, ys) -> list[torch.Tensor]:
    if op == "add":
        return torch._foreach_add(xs, ys)
    if op == "sub":
        return torch._foreach_sub(xs, ys)
    if op == "mul":
        return torch._foreach_mul(xs, ys)
    if op == "max":
        return torch._foreach_maximum(xs, ys)
    if op == "min":
        return torch._foreach_minimum(xs, ys)
    if op == "div":
        return torch._foreach_div(xs, torch._foreach_add(ys, EPS))
    if op == "div_sqrt":
        den = torch._foreach_mul(ys, ys)
        torch._foreach_add_(den, 1.0)
        torch._foreach_sqrt_(den)
        return torch._foreach_div(xs, den)
    if op == "clip":
        bound = torch._foreach_abs(ys)
        out = torch._foreach_minimum(xs, bound)
        torch._foreach_neg_(bound)
        torch._foreach_maximum_(out, bound)
        return out
    if op == "mix95":
        return torch._foreach_lerp(xs, ys, 0.05)
    if op == "pow_abs":
        return torch._foreach_pow(torch._foreach_abs(xs), ys)
    raise ValueError(f"unknown binary op {op!r}")


class NOSExpression(Optimizer):
    def __init__(self, params, genome: Genome | str = "adam", lr: float = 1e-3, use_decay: bool = False,
                 total_steps: int | None = None, momentum_schedule: str = "cyclical", momentum: float = 0.9,
                 warmup_steps: int = 0, hold_steps: int = 0, nesterov_form: str = "final", a14: str = "search",
                 opt1_form: str = "code", flip: bool | None = None):
        if isinstance(genome, str):
            genome = final_genome(genome, opt1_form)
        if not isinstance(genome, Genome):
            raise TypeError(f"genome must be a Genome or one of {', '.join(FINAL_NAMES)}")
        for what, value, choices in (("momentum_schedule", momentum_schedule, MOMENTUM_SCHEDULES),
                                     ("nesterov_form", nesterov_form, NESTEROV_FORMS), ("a14", a14, ("search", "final"))):
            if value not in choices:
                raise ValueError(f"unknown {what} {value!r}. Valid choices: {', '.join(choices)}")
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        self.genome = genome
        needs_t = (use_decay and genome.uses_decay()) or any(
            e.decay is not None and not e.switchable for n in genome.nodes for e in n.inputs) or (
            genome.momentum != "none" and momentum_schedule == "cyclical")
        if needs_t and (total_steps is None or total_steps < 1):
            raise ValueError(f"genome {genome.name or genome.text()!r} needs total_steps (its decays or cyclical "
                             f"momentum are functions of t/T); got {total_steps!r}")
        self.flip = genome.flip if flip is None else flip
        self._operands = genome.operands()
        self._buffers = sorted({b for o in self._operands for b in _OPERAND_BUFFERS.get(o, ())})
        defaults = dict(lr=lr, use_decay=use_decay, total_steps=total_steps, momentum_schedule=momentum_schedule,
                        momentum=momentum, warmup_steps=warmup_steps, hold_steps=hold_steps,
                        nesterov_form=nesterov_form, a14=a14)
        super().__init__(params, defaults)

    def _decay(self, expr, switchable: bool, group, t: int) -> float | None:
        if expr is None or (switchable and not group["use_decay"]):
            return None
        return decay_value(expr, t, group["total_steps"], group["a14"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for s, p in zip(states, params):
                if not s:
                    s["step"] = 0
                    for b in self._buffers:
                        s[b] = torch.zeros_like(p)
                    if self.genome.momentum != "none":
                        s["momentum_buffer"] = torch.zeros_like(p)
            t = states[0]["step"]  # 0-based, as Keras' iterations
            values = self._operand_values(params, grads, states, t)
            memo: dict[int, list[torch.Tensor]] = {}

            def edge_value(edge):
                x = values[edge.source] if isinstance(edge.source, str) else memo[edge.source]
                d = self._decay(edge.decay, edge.switchable, group, t)
                return x if d is None else torch._foreach_mul(x, d)

            for i, node in enumerate(self.genome.nodes):
                args = [edge_value(e) for e in node.inputs]
                memo[i] = (_unary(node.op, args[0], states, f"node{i}", t) if len(args) == 1
                           else _binary(node.op, args[0], args[1]))
            update = memo[len(self.genome.nodes) - 1]
            scale = group["lr"]
            d = self._decay(self.genome.lr_decay, True, group, t)
            if d is not None:
                scale *= d
            if self.flip:
                scale = -scale
            self._apply(group, params, states, update, scale, t)
            for s in states:
                s["step"] = t + 1
        return loss

    def _operand_values(self, params, grads, states, t: int) -> dict[str, list[torch.Tensor]]:
        for name in self._buffers:
            beta, power = _BUFFERS[name]
            buf = [s[name] for s in states]
            source = grads if power == 1 else torch._foreach_pow(grads, power)
            torch._foreach_lerp_(buf, source, 1 - beta)
        hat = {name: torch._foreach_div([s[name] for s in states], 1 - _BUFFERS[name][0] ** (t + 1))
               for name in self._buffers}
        raw = {name: [s[name] for s in states] for name in self._buffers}
        out: dict[str, list[torch.Tensor]] = {}
        need = self._operands
        powers = {}
        if need & {"g2", "qhm_g2", "aggmo_g2"}:
            powers[2] = torch._foreach_mul(grads, grads)
        if need & {"g3", "qhm_g3", "aggmo_g3", "opt3_mix"}:
            powers[3] = torch._foreach_pow(grads, 3)
        for name in need:
            if name == "g":
                out[name] = grads
            elif name == "g2":
                out[name] = powers[2]
            elif name == "g3":
                out[name] = powers[3]
            elif name in ("v_hat", "s_hat", "lam_hat"):
                out[name] = hat[name[:-4]]
            elif name in ("one", "two"):
                out[name] = [torch.full_like(p, 1.0 if name == "one" else 2.0) for p in params]
            elif name in ("w6", "w5", "w4", "w3"):
                out[name] = torch._foreach_mul(params, 10.0 ** -int(name[1]))
            elif name == "sign_g":
                out[name] = torch._foreach_sign(grads)
            elif name == "sign_v":
                out[name] = torch._foreach_sign(hat["v"])
            elif name == "qhm_g":
                out[name] = torch._foreach_lerp(grads, hat["v"], 0.7)
            elif name == "qhm_g2":
                out[name] = torch._foreach_lerp(powers[2], hat["s"], 0.95)
            elif name == "qhm_g3":
                out[name] = torch._foreach_lerp(powers[3], hat["lam"], 0.99)
            elif name == "opt3_mix":
                out[name] = torch._foreach_lerp(powers[3], hat["ell"], 0.99)
            elif name.startswith("aggmo"):
                # [(-x) + (b1 m - x) + (b2 m - x)] / 3 with the raw (not bias-corrected) EMA m (dossier §1.2)
                x, m, (b1, b2) = {"aggmo_g": (grads, raw.get("v"), (0.9, 0.999)),
                                  "aggmo_g2": (powers.get(2), raw.get("s"), (0.99, 0.999)),
                                  "aggmo_g3": (powers.get(3), raw.get("lam"), (0.999, 0.9999))}[name]
                acc = torch._foreach_mul(m, (b1 + b2) / 3)
                torch._foreach_add_(acc, x, alpha=-1.0)
                out[name] = acc
        return out

    def _apply(self, group, params, states, update, scale: float, t: int) -> None:
        kind = self.genome.momentum
        if kind == "none":
            torch._foreach_add_(params, update, alpha=-scale)
            return
        if group["momentum_schedule"] == "cyclical":
            mu = cyclical_momentum(t, group["total_steps"], group["warmup_steps"], group["hold_steps"])
        else:
            mu = group["momentum"]
        buf = [s["momentum_buffer"] for s in states]
        torch._foreach_mul_(buf, mu)
        torch._foreach_add_(buf, update, alpha=-scale)
        if kind == "momentum":
            torch._foreach_add_(params, buf)
        elif group["nesterov_form"] == "final":
            torch._foreach_add_(params, buf, alpha=mu)
            torch._foreach_add_(params, update, alpha=-scale)
        else:
            torch._foreach_add_(params, buf)
            torch._foreach_add_(params, update, alpha=-scale)


def _named_class(genome_name: str) -> type:
    def __init__(self, params, **kwargs):
        NOSExpression.__init__(self, params, genome=genome_name, **kwargs)
    return type(f"NOS{genome_name.capitalize()}", (NOSExpression,), {"__init__": __init__,
                "__doc__": f"The NOS final optimizer {genome_name!r} (dossier nos.md §4)."})


for _name in FINAL_NAMES:
    globals()[f"NOS{_name.capitalize()}"] = _named_class(_name)
