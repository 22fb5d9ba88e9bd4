"""NOS expression optimizers: an interpreter that turns a genome (optrepro.nos.space) into a torch optimizer.

    opt = NOSExpression(model.parameters(), genome="opt10", lr=1e-2, use_decay=True, total_steps=16000)
    opt.genome.text()   # 'Nest ~ i1e(i1e([mul(a13,a2)]*g))'

`evaluate_genome` interprets the genome: each node is one torch foreach operation over a list of tensors (a
per-tensor loop only for ops torch has no foreach kernel for: asinh, i1e, dropout, clip_norm). Only the operands
and moment EMAs the genome uses are computed and stored. Three ways to run it, equal to rounding:
  foreach=True    one call over all tensors of a param group (few kernel launches: the accelerator default)
  foreach=False   one call per tensor, so its intermediates stay in cache (the CPU default, as torch's Adam;
                  bit-identical to foreach=True)
  compile=True    evaluate_genome compiled by optim/_compiled.py's FusedKernel (torch.compile, chunks of flat
                  tensors, dynamic sizes): the expression fuses into one loop per tensor (ops that inductor
                  cannot lower in foreach form are traced one tensor at a time; i1e, and tanh on CPU, stay
                  ATen's kernels, which are faster there: see _FUSED_WHEN_COMPILED). An instance setting
                  as for optrepro's other optimizers (True, False or a torch.compile backend name), off by
                  default: the first step compiles (tens of seconds on CPU; `opt.compile_seconds`), and
                  dropout ops draw other random numbers than eager mode.
Speed on CPU, 10 M parameters in 100 tensors, ratio to torch's fused Adam: see benchmarks/RESULTS.md
("Papers' optimizers").

Update with u = root value times the LR multiplier (if any), negated when `flip`:
  none       w <- w - lr u
  momentum   b <- mu b - lr u ; w <- w + b
  nesterov   b <- mu b - lr u ; w <- w + mu b - lr u  (`nesterov_form="final"`, Opt9/Opt10's code)
                                w <- w + b - lr u     (`nesterov_form="search"`, the search code)
mu is the cyclical momentum (0.95 -> 0.85 over the warmup, hold, back to 0.95) when momentum_schedule is
"cyclical", else the constant `momentum`. lr is group["lr"], the loop's schedule acting on it as the Keras
callback did: for the paper's runs the schedule `warmup_hold_cosine` (optrepro.schedules) with the same
warmup_steps and hold_steps as given here (the authors': 6400 and 12800 of 96000 steps).

`ema_form`: the `ema` op's bias correction, "fixed" (1 - 0.95^(t+1)) or "code" (the search code divides by
1 - 0.95^0 = 0, so the op's output is inf/NaN). `NOSGenome` takes a genome as canonical JSON
(optrepro.nos.space.genome_to_json), the search's settings as its defaults: registered as `nos_genome`.

Decays need the run length: `total_steps` (T) must be given when the genome's decays are on (use_decay=True,
or a decay marked not switchable, as Opt4's atan(a13)) or the momentum schedule is cyclical; t counts from 0 as
Keras' `iterations` did. The authors' final classes default to use_decay=False; so does this class.
"""
from __future__ import annotations

import types

import torch
from torch.optim import Optimizer

from optrepro.nos.space import EPS, FINAL_NAMES, Genome, cyclical_momentum, decay_value, final_genome
from optrepro.optim import _compiled
from optrepro.optim._base import closure_loss, default_foreach
from optrepro.registry import unknown

MOMENTUM_SCHEDULES = ("cyclical", "constant")
NESTEROV_FORMS = ("final", "search")
EMA_FORMS = ("fixed", "code")

# operand -> the EMA buffers it needs: name -> (beta, power of g)
_BUFFERS = {"v": (0.9, 1), "s": (0.99, 2), "lam": (0.999, 3), "ell": (0.999, 2)}
_OPERAND_BUFFERS = {"v_hat": ("v",), "s_hat": ("s",), "lam_hat": ("lam",), "sign_v": ("v",), "qhm_g": ("v",),
                    "qhm_g2": ("s",), "qhm_g3": ("lam",), "aggmo_g": ("v",), "aggmo_g2": ("s",),
                    "aggmo_g3": ("lam",), "opt3_mix": ("ell",)}
_STATEFUL = ("ema", "delta", "running_max")


def _per_tensor(fn, xs):
    return [fn(x) for x in xs]


@torch.library.custom_op("optrepro::nos_i1e", mutates_args=())
def _i1e_opaque(x: torch.Tensor) -> torch.Tensor:
    """torch.special.i1e as an op torch.compile does not look into: inductor's own i1e code runs ~10x slower
    than ATen's kernel on CPU (measured: Opt10, 10 M parameters, 380-470 ms vs 65 ms per step)."""
    return torch.special.i1e(x)


@_i1e_opaque.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


# Elementwise ops that the compiled path writes one tensor at a time. Inductor has no lowering for the foreach
# forms of these (torch 2.14: _foreach_exp, _log, _sigmoid, _tanh, _atan, _erf, _erfc, _norm), so traced as
# foreach calls they stay ATen calls that write their input and output to fresh memory each step; as plain
# tensor ops inductor fuses them into the update loop. Same operations in the same order as the foreach code below.
_FUSED_WHEN_COMPILED = {
    "exp": torch.exp,
    "sigmoid": torch.sigmoid,
    "erf": torch.erf,
    "erfc": torch.special.erfc,
    "atan": torch.atan,
    "tanh": torch.tanh,
    "log_abs": lambda x: torch.log(x.abs() + EPS),
    "softplus": lambda x: torch.log((torch.exp(x) + 1.0).abs() + EPS),
    "clip_norm": lambda x: x / torch.clamp_min(torch.linalg.vector_norm(x), 1.0),
}
# ...except where inductor's own kernel is slower than ATen's on that device: on CPU (AVX-512), inductor's tanh
# made Opt7 85 ms per step against 53 ms with ATen's (10 M parameters, one thread; benchmarks/RESULTS.md).
_ATEN_ON = {"cpu": {"tanh"}}


def _unary(op: str, xs: list[torch.Tensor], node_state: list[torch.Tensor] | None,
           ema_correction: float) -> list[torch.Tensor]:
    """op applied to every tensor of xs. node_state: the op's buffers (stateful ops only), updated in place;
    ema_correction = 1 - 0.95^(t+1), the bias correction of the `ema` op."""
    if (op in _FUSED_WHEN_COMPILED and torch.compiler.is_compiling()
            and op not in _ATEN_ON.get(xs[0].device.type, ())):
        return _per_tensor(_FUSED_WHEN_COMPILED[op], xs)
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
        return _per_tensor(_i1e_opaque if torch.compiler.is_compiling() else torch.special.i1e, xs)
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
    if op == "ema":  # fixed: the authors' expMovAvg bias correction divided by 1 - 0.95^0 = 0
        torch._foreach_lerp_(node_state, xs, 0.05)
        return torch._foreach_div(node_state, ema_correction)
    if op == "delta":  # n <- x - n (its own previous output, as in the code)
        new = torch._foreach_sub(xs, node_state)
        torch._foreach_copy_(node_state, new)
        return new
    if op == "running_max":
        torch._foreach_maximum_(node_state, xs)
        return [b.clone() for b in node_state]
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
        out = torch._foreach_abs(xs)
        torch._foreach_pow_(out, ys)
        return out
    raise ValueError(f"unknown binary op {op!r}")


def _operand_values(operands: set[str], params, grads, buffers: dict[str, list[torch.Tensor]],
                    scalars: dict[str, float]) -> dict[str, list[torch.Tensor]]:
    """Advance the moment EMAs in place and compute the operands the genome reads (only those)."""
    powers: dict[int, list[torch.Tensor]] = {}

    def power(k: int) -> list[torch.Tensor]:  # g^k, computed once per step
        if k not in powers:
            powers[k] = torch._foreach_mul(grads, grads) if k == 2 else torch._foreach_pow(grads, k)
        return powers[k]

    for name, buf in buffers.items():
        beta, k = _BUFFERS[name]
        torch._foreach_lerp_(buf, grads if k == 1 else power(k), 1 - beta)
    hats: dict[str, list[torch.Tensor]] = {}

    def hat(name: str) -> list[torch.Tensor]:  # bias-corrected EMA, computed once per step
        if name not in hats:
            hats[name] = torch._foreach_div(buffers[name], scalars[f"correction_{name}"])
        return hats[name]

    out: dict[str, list[torch.Tensor]] = {}
    for name in sorted(operands):
        if name == "g":
            out[name] = grads
        elif name in ("g2", "g3"):
            out[name] = power(int(name[1]))
        elif name in ("v_hat", "s_hat", "lam_hat"):
            out[name] = hat(name[:-4])
        elif name in ("one", "two"):
            out[name] = [torch.full_like(p, 1.0 if name == "one" else 2.0) for p in params]
        elif name in ("w6", "w5", "w4", "w3"):
            out[name] = torch._foreach_mul(params, 10.0 ** -int(name[1]))
        elif name == "sign_g":
            out[name] = torch._foreach_sign(grads)
        elif name == "sign_v":
            out[name] = torch._foreach_sign(hat("v"))
        elif name == "qhm_g":
            out[name] = torch._foreach_lerp(grads, hat("v"), 0.7)
        elif name == "qhm_g2":
            out[name] = torch._foreach_lerp(power(2), hat("s"), 0.95)
        elif name == "qhm_g3":
            out[name] = torch._foreach_lerp(power(3), hat("lam"), 0.99)
        elif name == "opt3_mix":
            out[name] = torch._foreach_lerp(power(3), hat("ell"), 0.99)
        elif name.startswith("aggmo"):
            # [(-x) + (b1 m - x) + (b2 m - x)] / 3 with the raw (not bias-corrected) EMA m, as the authors' code
            k, buffer, (b1, b2) = {"aggmo_g": (1, "v", (0.9, 0.999)), "aggmo_g2": (2, "s", (0.99, 0.999)),
                                   "aggmo_g3": (3, "lam", (0.999, 0.9999))}[name]
            acc = torch._foreach_mul(buffers[buffer], (b1 + b2) / 3)
            torch._foreach_add_(acc, grads if k == 1 else power(k), alpha=-1.0)
            out[name] = acc
        else:
            raise ValueError(f"unknown operand {name!r}")
    return out


def evaluate_genome(genome: Genome, params: list[torch.Tensor], grads: list[torch.Tensor],
                    buffers: dict[str, list[torch.Tensor]], node_states: dict[int, list[torch.Tensor]],
                    momentum_buffer: list[torch.Tensor] | None, scalars: dict[str, float],
                    nesterov_form: str) -> None:
    """One step of the genome's optimizer on `params`, in place: the EMAs, the expression, the update.

    A function of its arguments only (the step's scalars come in `scalars`), so that it runs on any slice of
    the tensors (all of a param group, or one tensor at a time) and torch.compile can trace it once:
      correction_<buffer>  1 - beta^(t+1) of each moment EMA       ema_correction  1 - 0.95^(t+1)
      decay<i>.<j>         the decay on input j of node i (absent when off)
      step_scale           lr times the LR multiplier, negated when the genome flips
      mu                   the momentum factor (momentum genomes only)
    """
    values = _operand_values(genome.operands(), params, grads, buffers, scalars)
    memo: list[list[torch.Tensor]] = []
    for i, node in enumerate(genome.nodes):
        args = []
        for j, edge in enumerate(node.inputs):
            x = values[edge.source] if isinstance(edge.source, str) else memo[edge.source]
            decay = scalars.get(f"decay{i}.{j}")
            args.append(x if decay is None else torch._foreach_mul(x, decay))
        memo.append(_unary(node.op, args[0], node_states.get(i), scalars["ema_correction"]) if len(args) == 1
                    else _binary(node.op, args[0], args[1]))
    update, scale = memo[-1], scalars["step_scale"]
    if genome.momentum == "none":
        _add_scaled_(params, update, -scale)
        return
    mu = scalars["mu"]
    torch._foreach_mul_(momentum_buffer, mu)
    _add_scaled_(momentum_buffer, update, -scale)
    if genome.momentum == "momentum":
        torch._foreach_add_(params, momentum_buffer)
    elif nesterov_form == "final":
        _add_scaled_(params, momentum_buffer, mu)
        _add_scaled_(params, update, -scale)
    else:
        torch._foreach_add_(params, momentum_buffer)
        _add_scaled_(params, update, -scale)


def _add_scaled_(ys: list[torch.Tensor], xs: list[torch.Tensor], alpha) -> None:
    """ys += alpha * xs. alpha is a float, or a 0-d tensor on the compiled path (torch.compile specialises
    on the value of a float that meets a foreach op, which would recompile at every step)."""
    if isinstance(alpha, torch.Tensor):
        torch._foreach_add_(ys, torch._foreach_mul(xs, alpha))
    else:
        torch._foreach_add_(ys, xs, alpha=alpha)


class NOSExpression(Optimizer):
    def __init__(self, params, genome: Genome | str = "adam", lr: float = 1e-3, use_decay: bool = False,
                 total_steps: int | None = None, momentum_schedule: str = "cyclical", momentum: float = 0.9,
                 warmup_steps: int = 0, hold_steps: int = 0, nesterov_form: str = "final", a14: str = "search",
                 opt1_form: str = "code", flip: bool | None = None, ema_form: str = "fixed",
                 foreach: bool | None = None, compile: bool | str = False):
        if isinstance(genome, str):
            genome = final_genome(genome, opt1_form)
        if not isinstance(genome, Genome):
            raise TypeError(f"genome must be a Genome or one of {', '.join(FINAL_NAMES)}")
        for what, value, choices in (("momentum_schedule", momentum_schedule, MOMENTUM_SCHEDULES),
                                     ("nesterov_form", nesterov_form, NESTEROV_FORMS), ("a14", a14, ("search", "final")),
                                     ("ema_form", ema_form, EMA_FORMS)):
            if value not in choices:
                raise unknown(what, value, choices)
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
        self.ema_form = ema_form
        self._operands = genome.operands()
        self._buffers = sorted({b for o in self._operands for b in _OPERAND_BUFFERS.get(o, ())})
        self._stateful_nodes = [i for i, node in enumerate(genome.nodes) if node.op in _STATEFUL]
        # an instance setting, as for optrepro's other optimizers (optim/_base.py): not a hyperparameter
        self.compile_backend = _compiled.backend_of(compile)
        self._runners: set[_compiled.FusedKernel] = set()  # the compiled kernels this optimizer ran
        defaults = dict(lr=lr, use_decay=use_decay, total_steps=total_steps, momentum_schedule=momentum_schedule,
                        momentum=momentum, warmup_steps=warmup_steps, hold_steps=hold_steps,
                        nesterov_form=nesterov_form, a14=a14, foreach=foreach)
        super().__init__(params, defaults)

    def _decay(self, expr, switchable: bool, group, t: int) -> float | None:
        if expr is None or (switchable and not group["use_decay"]):
            return None
        return decay_value(expr, t, group["total_steps"], group["a14"])

    def _scalars(self, group: dict, t: int) -> dict[str, float]:
        """The step's scalars for evaluate_genome (functions of t, the LR and the group's settings)."""
        scalars = {f"correction_{name}": 1 - _BUFFERS[name][0] ** (t + 1) for name in self._buffers}
        # the authors' expMovAvg divides by 1 - 0.95^iterations with iterations never advanced from 0: by 0
        scalars["ema_correction"] = 1 - 0.95 ** (t + 1) if self.ema_form == "fixed" else 0.0
        for i, node in enumerate(self.genome.nodes):
            for j, edge in enumerate(node.inputs):
                decay = self._decay(edge.decay, edge.switchable, group, t)
                if decay is not None:
                    scalars[f"decay{i}.{j}"] = decay
        scale = group["lr"]
        lr_decay = self._decay(self.genome.lr_decay, True, group, t)
        if lr_decay is not None:
            scale *= lr_decay
        scalars["step_scale"] = -scale if self.flip else scale
        if self.genome.momentum != "none":
            scalars["mu"] = (cyclical_momentum(t, group["total_steps"], group["warmup_steps"], group["hold_steps"])
                             if group["momentum_schedule"] == "cyclical" else group["momentum"])
        return scalars

    def _init_state(self, state: dict, p: torch.Tensor) -> None:
        state["step"] = 0
        for b in self._buffers:
            state[b] = torch.zeros_like(p, memory_format=torch.preserve_format)
        for i in self._stateful_nodes:  # zeros, as the authors' slots (running_max too: max(x, 0) at t = 0)
            state[f"node{i}"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.genome.momentum != "none":
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling the kernels this optimizer ran (shared with optimizers of the same genome)."""
        return sum(runner.compile_seconds for runner in self._runners)

    def _state_keys(self) -> list[str]:
        """The state tensors evaluate_genome reads, in the compiled kernel's argument order."""
        keys = list(self._buffers) + [f"node{i}" for i in self._stateful_nodes]
        return keys + (["momentum_buffer"] if self.genome.momentum != "none" else [])

    def _update_compiled(self, group, params, grads, states, scalars) -> tuple[list, list, list]:
        """Run the compiled kernel on the tensors it takes; return (params, grads, states) of the rest."""
        lists = [params, grads, *([s[key] for s in states] for key in self._state_keys())]
        take, rest = _compiled.split_compilable(lists)
        if take:
            runner = _genome_runner(self.genome, self._buffers, tuple(self._stateful_nodes), tuple(scalars),
                                    group["nesterov_form"], self.compile_backend)
            self._runners.add(runner)
            row = list(scalars.values())  # one row per tensor; every tensor of the group is at step t
            _compiled.run(runner, [[ts[i] for i in take] for ts in lists] if rest else lists, [row] * len(take))
        return [params[i] for i in rest], [grads[i] for i in rest], [states[i] for i in rest]

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for s, p in zip(states, params):
                if not s:
                    self._init_state(s, p)
            # 0-based, as Keras' iterations: one count for the group, so a parameter whose first gradient
            # comes late joins at the group's step instead of restarting the group's t
            t = max(s["step"] for s in states)
            scalars = self._scalars(group, t)
            all_states = states
            if self.compile_backend is not None:
                params, grads, states = self._update_compiled(group, params, grads, states, scalars)
            if params:
                self._update_eager(group, params, grads, states, scalars)
            for s in all_states:
                s["step"] = t + 1
        return loss

    def _update_eager(self, group, params, grads, states, scalars) -> None:
        buffers = {name: [s[name] for s in states] for name in self._buffers}
        node_states = {i: [s[f"node{i}"] for s in states] for i in self._stateful_nodes}
        momentum = [s["momentum_buffer"] for s in states] if self.genome.momentum != "none" else None
        foreach = group.get("foreach")  # absent in param groups saved before this setting existed
        if foreach is None:
            foreach = default_foreach(params)
        if foreach:
            evaluate_genome(self.genome, params, grads, buffers, node_states, momentum, scalars,
                            group["nesterov_form"])
            return
        for k in range(len(params)):  # one tensor at a time: on CPU its intermediates stay in cache
            evaluate_genome(self.genome, params[k:k + 1], grads[k:k + 1],
                            {name: buf[k:k + 1] for name, buf in buffers.items()},
                            {i: buf[k:k + 1] for i, buf in node_states.items()},
                            None if momentum is None else momentum[k:k + 1], scalars, group["nesterov_form"])


def _genome_runner(genome: Genome, buffers: list[str], stateful_nodes: tuple[int, ...], scalar_names: tuple,
                   nesterov_form: str, backend: str) -> _compiled.FusedKernel:
    """evaluate_genome as a kernel for optim/_compiled.py's FusedKernel: kernel(params, grads, *states,
    scalars), the states in NOSExpression._state_keys() order, `scalars` one row per tensor (all equal here)."""
    # one runner per (genome, scalars, nesterov form, backend), shared by every optimizer in the process and kept
    # in _compiled's table of runners, so that _compiled.total_compile_seconds() counts its compile time too
    key = ("nos_genome", genome, tuple(buffers), stateful_nodes, scalar_names, nesterov_form, backend)
    runners = _compiled._RUNNERS
    if key not in runners:
        n_buffers, n_nodes = len(buffers), len(stateful_nodes)

        def kernel(params, grads, *rest):
            *states, scalars = rest
            row = scalars[0]  # 0-d tensors: their values are data of the graph, not constants
            evaluate_genome(genome, params, grads, dict(zip(buffers, states[:n_buffers])),
                            dict(zip(stateful_nodes, states[n_buffers:n_buffers + n_nodes])),
                            states[n_buffers + n_nodes] if genome.momentum != "none" else None,
                            {name: row[j] for j, name in enumerate(scalar_names)}, nesterov_form)

        # A private code object: torch.compile keeps its cache (8 entries) per code object, which the kernels of
        # all genomes would otherwise share and exhaust.
        private = types.FunctionType(kernel.__code__.replace(), kernel.__globals__, "nos_genome_kernel", None,
                                     kernel.__closure__)
        runners[key] = _compiled.FusedKernel(private, backend)
    return runners[key]


def _named_class(genome_name: str) -> type:
    def __init__(self, params, compile: bool | str = False, **kwargs):
        NOSExpression.__init__(self, params, genome=genome_name, compile=compile, **kwargs)
    return type(f"NOS{genome_name.capitalize()}", (NOSExpression,), {"__init__": __init__,
                "__doc__": f"The NOS final optimizer {genome_name!r} (finalOptimizers.py)."})


for _name in FINAL_NAMES:
    globals()[f"NOS{_name.capitalize()}"] = _named_class(_name)


class NOSGenome(NOSExpression):
    """A searched genome, given as its canonical JSON (optrepro.nos.space.genome_to_json), so that a run spec
    holds the genome itself and equal genomes share run ids. Defaults are the search's: decays on, the search
    code's Nesterov form and its expMovAvg (ema_form="code")."""

    def __init__(self, params, genome: dict | None = None, lr: float = 1e-3, use_decay: bool = True,
                 nesterov_form: str = "search", ema_form: str = "code", compile: bool | str = False, **kwargs):
        from optrepro.nos.space import genome_from_json

        if genome is None:
            raise ValueError("optimizer nos_genome needs a genome (hyperparameter 'genome', "
                             "optrepro.nos.space.genome_to_json of a Genome)")
        super().__init__(params, genome=genome_from_json(genome), lr=lr, use_decay=use_decay,
                         nesterov_form=nesterov_form, ema_form=ema_form, compile=compile, **kwargs)
