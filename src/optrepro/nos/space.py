"""The NOS search space as data (Morgan & Hougen, arXiv 2404.06679; OUStudent/NeuralOptimizerSearch@005dfce).
Torch-free.

A genome is a small DAG in topological order: `nodes[i]` is a unary or binary operation whose inputs are
operands (by name) or earlier nodes (by index); the last node is the root and gives the update u. Every input
edge may carry a decay expression d(t) that multiplies the value on the edge (the paper's per-edge
DecaySchedule). The genome also carries an LR multiplier (a decay expression on the root, the "evolved LR
schedule"), the momentum type (none / momentum / nesterov) and the `flip` flag.

Decay expressions are nested tuples: ("a", k) is base schedule a_k(t, T); (op, x) a unary decay op;
(op, x, y) a binary one. `switchable` decays are the ones the authors' `use_decay` flag turns off: all but
Opt4's internal atan(a13), which the authors' code governs by `variant` instead (variant 0, kept on here).

The update graph's operand and op tables follow the order of NeuralOptimizerSearch.py. A few entries marked
`final_only` are needed only to spell the released final optimizers and are not drawn by a search
(x + 1e-7 in A1-A5, and Opt3's mix of an EMA of g^2, which the search space writes with g^3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from optrepro.registry import unknown

EPS = 1e-7  # the Keras epsilon the authors' ops add

# name -> (text, latex) ; the order is the code's operand index 0..19, then final-only operands
OPERANDS: dict[str, tuple[str, str]] = {
    "g": ("g", "g"),
    "g2": ("g^2", "g^{2}"),
    "g3": ("g^3", "g^{3}"),
    "v_hat": ("v_hat", r"\hat{v}"),            # EMA 0.9 of g, bias-corrected
    "s_hat": ("s_hat", r"\hat{s}"),            # EMA 0.99 of g^2, bias-corrected
    "lam_hat": ("lam_hat", r"\hat{\lambda}"),  # EMA 0.999 of g^3, bias-corrected
    "one": ("1", "1"),
    "two": ("2", "2"),
    "w6": ("1e-6*w", r"10^{-6}w"),
    "w5": ("1e-5*w", r"10^{-5}w"),
    "w4": ("1e-4*w", r"10^{-4}w"),
    "w3": ("1e-3*w", r"10^{-3}w"),
    "sign_g": ("sign(g)", r"\operatorname{sign}(g)"),
    "sign_v": ("sign(v_hat)", r"\operatorname{sign}(\hat{v})"),
    "qhm_g": ("(0.3g+0.7v_hat)", r"(0.3g+0.7\hat{v})"),
    "qhm_g2": ("(0.05g^2+0.95s_hat)", r"(0.05g^{2}+0.95\hat{s})"),
    "qhm_g3": ("(0.01g^3+0.99lam_hat)", r"(0.01g^{3}+0.99\hat{\lambda})"),
    "aggmo_g": ("aggmo(g)", r"\operatorname{AggMo}(g)"),
    "aggmo_g2": ("aggmo(g^2)", r"\operatorname{AggMo}(g^{2})"),
    "aggmo_g3": ("aggmo(g^3)", r"\operatorname{AggMo}(g^{3})"),
    "opt3_mix": ("(0.01g^3+0.99ell_hat)", r"(0.01g^{3}+0.99\hat{\ell})"),  # final_only: ell = EMA 0.999 of g^2
}
SEARCH_OPERANDS = tuple(list(OPERANDS)[:20])

# name -> (text template, latex template); {x} is the argument
UNARY_OPS: dict[str, tuple[str, str]] = {
    "id": ("{x}", "{x}"),
    "neg": ("-({x})", "-({x})"),
    "log_abs": ("ln(|{x}|+eps)", r"\ln(|{x}|+\epsilon)"),
    "sqrt_abs": ("sqrt(|{x}|)", r"\sqrt{{|{x}|}}"),
    "exp": ("exp({x})", r"e^{{{x}}}"),
    "abs": ("|{x}|", r"\left|{x}\right|"),
    "sigmoid": ("sigmoid({x})", r"\sigma({x})"),
    "dsoft": ("1/(1+|{x}|)", r"\frac{{1}}{{1+|{x}|}}"),
    "softplus": ("ln(|1+exp({x})|+eps)", r"\ln(|1+e^{{{x}}}|+\epsilon)"),
    "erf": ("erf({x})", r"\operatorname{{erf}}({x})"),
    "erfc": ("erfc({x})", r"\operatorname{{erfc}}({x})"),
    "asinh": ("asinh({x})", r"\operatorname{{asinh}}({x})"),
    "tanh": ("tanh({x})", r"\tanh({x})"),
    "atan": ("atan({x})", r"\arctan({x})"),
    "inv": ("1/({x}+eps)", r"\frac{{1}}{{{x}+\epsilon}}"),
    "i1e": ("i1e({x})", r"\operatorname{{i1e}}({x})"),
    "relu": ("max({x},0)", r"\max({x},0)"),
    "neg_part": ("min({x},0)", r"\min({x},0)"),
    "dropout50": ("drop0.5({x})", r"\operatorname{{drop}}_{{0.5}}({x})"),
    "dropout30": ("drop0.3({x})", r"\operatorname{{drop}}_{{0.3}}({x})"),
    "dropout10": ("drop0.1({x})", r"\operatorname{{drop}}_{{0.1}}({x})"),
    "clip_norm": ("clip_norm({x},1)", r"\operatorname{{clip}}_{{\|\cdot\|\le1}}({x})"),
    "softsign": ("softsign({x})", r"\operatorname{{softsign}}({x})"),
    "ema": ("ema({x})", r"\operatorname{{EMA}}_{{0.95}}({x})"),     # stateful; bias-corrected with (t+1)
    "delta": ("delta({x})", r"\Delta({x})"),                       # stateful: n <- x - n
    "running_max": ("runmax({x})", r"\max_{{\le t}}({x})"),        # stateful: n <- max(x, n)
    "add_eps": ("({x}+1e-7)", r"({x}+10^{{-7}})"),                 # final_only
}
SEARCH_UNARY = tuple(list(UNARY_OPS)[:26])

BINARY_OPS: dict[str, tuple[str, str]] = {
    "add": ("({x}+{y})", "({x}+{y})"),
    "sub": ("({x}-{y})", "({x}-{y})"),
    "mul": ("({x}*{y})", r"({x}\cdot {y})"),
    "max": ("max({x},{y})", r"\max({x},{y})"),
    "min": ("min({x},{y})", r"\min({x},{y})"),
    "div": ("{x}/({y}+eps)", r"\frac{{{x}}}{{{y}+\epsilon}}"),
    "div_sqrt": ("{x}/sqrt(1+{y}^2)", r"\frac{{{x}}}{{\sqrt{{1+({y})^{{2}}}}}}"),
    "clip": ("clip({x},-|{y}|,|{y}|)", r"\operatorname{{clip}}({x},\pm|{y}|)"),
    "mix95": ("(0.95*({x})+0.05*({y}))", r"(0.95({x})+0.05({y}))"),
    "pow_abs": ("|{x}|^({y})", r"|{x}|^{{{y}}}"),
}

# Decay functions: base schedules a1..a14 of (t, T), and the decay-graph ops.
BETA0 = 0.95


def decay_base(k: int, t: float, total: float, a14: str = "search") -> float:
    """a_k(t) on t in [0, T). a14 has two definitions in the authors' code: 'search' / 'final'."""
    x = t / total
    restart = ((2 * t) % total) / total
    if k == 1:
        return 1 - x
    if k == 2:
        return x
    if k == 3:
        return 0.5 * (1 + math.cos(math.pi * x))
    if k == 4:
        return 0.5 * (1 - math.cos(math.pi * x))
    if k == 5:
        return 0.5 * (1 + math.cos(2 * math.pi * x))
    if k == 6:
        return 0.5 * (1 - math.cos(2 * math.pi * x))
    if k == 7:
        return 0.5 * (1 + math.cos(math.pi * restart))
    if k == 8:
        return 0.5 * (1 - math.cos(math.pi * restart))
    if k == 9:
        return 1 - restart
    if k == 10:
        return restart
    if k == 11:
        return 0.01 ** x
    if k == 12:
        return 1 - 0.01 ** x
    beta_d = BETA0 * (1 - (t + 1) / total)
    a13 = beta_d / ((1 - BETA0) + beta_d)
    if k == 13:
        return a13
    if k == 14:
        if a14 == "search":
            return BETA0 - a13
        if a14 == "final":
            return (BETA0 - beta_d) / ((1 - BETA0) + beta_d)
        raise unknown("a14 variant", a14, ("search", "final"))
    raise unknown("decay base", f"a{k}", DECAY_BASES)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _i1e(x: float) -> float:
    """exp(-|x|) I_1(x). Power series up to |x| = 30 (all terms one sign, so no cancellation), above it the
    asymptotic expansion: the series' exp(|x|) growth would overflow near |x| = 710, and a hidden decay node such
    as x / (y + eps) can get there."""
    if abs(x) > 30:
        z, term, total, k = abs(x), 1.0, 0.0, 0
        while abs(term) > 1e-17 * abs(total) or k < 2:  # sum_k (-1)^k prod_j (4 - (2j-1)^2) / (k! (8z)^k)
            total += term
            k += 1
            term *= -(4 - (2 * k - 1) ** 2) / (8 * k * z)
        return math.copysign(total / math.sqrt(2 * math.pi * z), x)
    term, total, k = x / 2, 0.0, 0
    while abs(term) > 1e-17 * max(abs(total), 1e-300) or k < 2:
        total += term
        k += 1
        term *= (x / 2) ** 2 / (k * (k + 1))
    return math.exp(-abs(x)) * total


DECAY_BASES = tuple(f"a{k}" for k in range(1, 15))  # a1..a14
DECAY_UNARY = {
    "sigmoid": _sigmoid, "dsoft": lambda x: 1 / (1 + abs(x)), "erf": math.erf, "erfc": math.erfc,
    "tanh": math.tanh, "atan": math.atan, "i1e": _i1e, "square": lambda x: x * x,
    "sqrt_abs": lambda x: math.sqrt(abs(x)), "softsign": lambda x: x / (1 + abs(x)),
    "dtanh": lambda x: 1 - math.tanh(x) ** 2, "dsigmoid": lambda x: _sigmoid(x) * (1 - _sigmoid(x)),
    "id": lambda x: x,
}
DECAY_BINARY = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y, "max": max, "min": min,
    "div": lambda x, y: x / (y + EPS), "div_sqrt": lambda x, y: x / math.sqrt(1 + y * y),
}
DECAY_TEXT = {"sigmoid": "sigmoid", "dsoft": "dsoft", "erf": "erf", "erfc": "erfc", "tanh": "tanh", "atan": "atan",
              "i1e": "i1e", "square": "sq", "sqrt_abs": "sqrt", "softsign": "softsign", "dtanh": "dtanh",
              "dsigmoid": "dsigmoid", "id": ""}

Decay = tuple  # ("a", k) | (unary, Decay) | (binary, Decay, Decay)


def decay_value(expr: Decay, t: float, total: float, a14: str = "search") -> float:
    head = expr[0]
    if head == "a":
        return decay_base(expr[1], t, total, a14)
    if len(expr) == 2:
        return DECAY_UNARY[head](decay_value(expr[1], t, total, a14))
    return DECAY_BINARY[head](decay_value(expr[1], t, total, a14), decay_value(expr[2], t, total, a14))


def decay_text(expr: Decay, latex: bool = False) -> str:
    head = expr[0]
    if head == "a":
        return f"a_{{{expr[1]}}}" if latex else f"a{expr[1]}"
    if len(expr) == 2:
        inner = decay_text(expr[1], latex)
        name = DECAY_TEXT[head]
        if latex:
            return rf"\operatorname{{{name}}}({inner})" if name else inner
        return f"{name}({inner})" if name else inner
    x, y = decay_text(expr[1], latex), decay_text(expr[2], latex)
    return f"{head}({x},{y})" if not latex else rf"\operatorname{{{head}}}({x},{y})"


Ref = Union[str, int]  # operand name or index of an earlier node


@dataclass(frozen=True)
class Edge:
    source: Ref
    decay: Decay | None = None
    switchable: bool = True  # turned off by use_decay=False (the authors' default)


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[Edge, ...]


MOMENTUM_TYPES = ("none", "momentum", "nesterov")


@dataclass(frozen=True)
class Genome:
    nodes: tuple[Node, ...]
    momentum: str = "none"
    lr_decay: Decay | None = None  # evolved LR multiplier (switchable)
    flip: bool = False
    name: str = ""

    def __post_init__(self):
        validate(self)

    def operands(self) -> set[str]:
        return {e.source for n in self.nodes for e in n.inputs if isinstance(e.source, str)}

    def ops(self) -> set[str]:
        return {n.op for n in self.nodes}

    def uses_decay(self) -> bool:
        return self.lr_decay is not None or any(e.decay is not None for n in self.nodes for e in n.inputs)

    def text(self) -> str:
        return render(self, latex=False)

    def latex(self) -> str:
        return render(self, latex=True)


def validate(genome: Genome) -> None:
    if genome.momentum not in MOMENTUM_TYPES:
        raise unknown("momentum", genome.momentum, MOMENTUM_TYPES)
    if not genome.nodes:
        raise ValueError("a genome needs at least one node")
    for i, node in enumerate(genome.nodes):
        table = UNARY_OPS if len(node.inputs) == 1 else BINARY_OPS if len(node.inputs) == 2 else None
        if table is None:
            raise ValueError(f"node {i}: {len(node.inputs)} inputs; a node is unary (1) or binary (2)")
        if node.op not in table:
            raise unknown(f"op (node {i})", node.op, table)
        for edge in node.inputs:
            if isinstance(edge.source, str) and edge.source not in OPERANDS:
                raise unknown(f"operand (node {i})", edge.source, OPERANDS)
            if isinstance(edge.source, int) and not 0 <= edge.source < i:
                raise ValueError(f"node {i}: input {edge.source} must be an earlier node (the graph is acyclic)")
            if edge.decay is not None:
                _validate_decay(edge.decay)
    if genome.lr_decay is not None:
        _validate_decay(genome.lr_decay)


def _validate_decay(expr: Decay) -> None:
    head = expr[0]
    if head == "a":
        if not 1 <= expr[1] <= 14:
            raise unknown("decay base", f"a{expr[1]}", DECAY_BASES)
        return
    table = DECAY_UNARY if len(expr) == 2 else DECAY_BINARY
    if head not in table:
        raise unknown("decay op", head, table)
    for child in expr[1:]:
        _validate_decay(child)


def render(genome: Genome, latex: bool = False) -> str:
    memo: dict[int, str] = {}

    def edge_text(edge: Edge) -> str:
        if isinstance(edge.source, str):
            value = OPERANDS[edge.source][1 if latex else 0]
        else:
            value = memo[edge.source]
        if edge.decay is None:
            return value
        d = decay_text(edge.decay, latex)
        return rf"\left[{d}\right]{value}" if latex else f"[{d}]*{value}"

    for i, node in enumerate(genome.nodes):
        args = [edge_text(e) for e in node.inputs]
        table = UNARY_OPS if len(args) == 1 else BINARY_OPS
        template = table[node.op][1 if latex else 0]
        memo[i] = template.format(x=args[0], y=args[1] if len(args) > 1 else "")
    body = memo[len(genome.nodes) - 1]
    if genome.lr_decay is not None:
        d = decay_text(genome.lr_decay, latex)
        body = rf"\left[{d}\right]{body}" if latex else f"[{d}]*{body}"
    if genome.flip:
        body = f"-({body})"
    prefix = {"none": "", "momentum": "Mom ~ ", "nesterov": "Nest ~ "}[genome.momentum]
    if latex:
        prefix = {"none": "", "momentum": r"\text{Mom}\;", "nesterov": r"\text{Nest}\;"}[genome.momentum]
    return prefix + body


# ---- the released final optimizers (finalOptimizers.py) ----------------------------------------------------

def E(source: Ref, decay: Decay | None = None, switchable: bool = True) -> Edge:
    return Edge(source, decay, switchable)


def U(op: str, source: Ref, decay: Decay | None = None, switchable: bool = True) -> Node:
    return Node(op, (Edge(source, decay, switchable),))


def B(op: str, x: Ref, y: Ref) -> Node:
    return Node(op, (Edge(x), Edge(y)))


LR_MULT_OPT4 = ("div", ("erfc", ("erfc", ("a", 4))), ("dtanh", ("a", 8)))  # erfc(erfc(a4)) / dtanh(a8)
D_OPT7 = ("max", ("a", 6), ("a", 10))


def final_genome(name: str, opt1_form: str = "code") -> Genome:
    """Opt1..Opt10, A1..A5 and 'adam' (v_hat/(sqrt(s_hat)+eps): torch Adam with betas (0.9, 0.99), eps 1e-7)."""
    if name == "opt1":
        if opt1_form == "code":  # |1e-5 w - 0.05 g^2 + 0.95 s_hat|, the released code's parentheses
            r = [U("neg", "g2"), B("mix95", "s_hat", 0), B("add", "w5", 1), U("abs", 2)]
        elif opt1_form == "paper":  # |1e-5 w - (0.05 g^2 + 0.95 s_hat)|
            r = [B("sub", "w5", "qhm_g2"), U("abs", 0)]
        else:
            raise unknown("opt1_form", opt1_form, ("code", "paper"))
        k = len(r)
        nodes = r + [B("clip", "w5", k - 1), U("softsign", k), B("add", "qhm_g", k + 1)]
        return Genome(tuple(nodes), name=name)
    if name == "opt2":
        return Genome((B("sub", "w5", "qhm_g2"), B("div_sqrt", "w5", 0), U("softsign", 1), B("add", "qhm_g", 2)), name=name)
    if name == "opt3":
        return Genome((B("sub", "w5", "opt3_mix"), B("div_sqrt", "w5", 0), U("softsign", 1), B("add", "qhm_g", 2)), name=name)
    if name in ("opt4", "opt5"):
        c = U("abs", 0, ("atan", ("a", 13)), switchable=False) if name == "opt4" else U("id", 0)
        return Genome((U("exp", "v_hat"), c, B("clip", "two", 1), B("div", "qhm_g", 2)), lr_decay=LR_MULT_OPT4, name=name)
    if name == "opt6":
        return Genome((U("exp", "w4"), U("abs", 0, ("dtanh", ("a", 4))), B("div", "qhm_g", 1)),
                      lr_decay=LR_MULT_OPT4, name=name)
    if name in ("opt7", "opt8"):
        outer = "tanh" if name == "opt7" else "asinh"
        return Genome((U("asinh", "qhm_g"), U(outer, 0, D_OPT7)), name=name)
    if name == "opt9":
        return Genome((U("atan", "qhm_g2"), U("exp", 0), Node("mul", (E("g", ("erfc", ("a", 11))), E(1)))),
                      momentum="nesterov", name=name)
    if name == "opt10":
        return Genome((U("i1e", "g", ("mul", ("a", 13), ("a", 2))), U("i1e", 0)), momentum="nesterov", name=name)
    if name in ("a1", "a5"):
        nodes = (U("sqrt_abs", "s_hat"), U("add_eps", 0), B("clip", "v_hat", 1))
        return Genome(nodes + ((U("clip_norm", 2),) if name == "a5" else ()), name=name)
    if name == "a2":
        return Genome((U("log_abs", "s_hat"), U("abs", 0), B("clip", "v_hat", 1)), name=name)
    if name == "a3":
        return Genome((U("log_abs", "s_hat"), U("sqrt_abs", 0), B("clip", "v_hat", 1)), name=name)
    if name == "a4":
        return Genome((U("add_eps", "s_hat"), U("sigmoid", 0), B("clip", "v_hat", 1)), name=name)
    if name == "adam":
        return Genome((U("sqrt_abs", "s_hat"), B("div", "v_hat", 0)), name=name)
    raise unknown("final genome", name, FINAL_NAMES)


FINAL_NAMES = tuple([f"opt{i}" for i in range(1, 11)] + [f"a{i}" for i in range(1, 6)] + ["adam"])


# ---- schedules that the optimizer needs inside the step -------------------------------------------------

def cyclical_momentum(t: int, total: int, warmup: int, hold: int, high: float = 0.95, low: float = 0.85) -> float:
    """mu_t: high -> low over `warmup` steps, `low` for `hold` steps, low -> high over the rest (np.linspace)."""
    t = min(max(t, 0), total - 1)
    if t < warmup:  # np.linspace(high, low, warmup); with one point it is [high]
        return high - (high - low) * (t / (warmup - 1) if warmup > 1 else 0.0)
    if t < warmup + hold:
        return low
    rest = total - warmup - hold
    k = t - warmup - hold
    return low + (high - low) * (k / (rest - 1) if rest > 1 else 0.0)


# ---- canonical JSON (a genome as a run's hyperparameter) -------------------------------------------------

def _decay_to_json(expr: Decay | None):
    return None if expr is None else [expr[0], *(c if expr[0] == "a" else _decay_to_json(c) for c in expr[1:])]


def _decay_from_json(data) -> Decay | None:
    if data is None:
        return None
    if data[0] == "a":
        return ("a", int(data[1]))
    return (data[0], *(_decay_from_json(c) for c in data[1:]))


def genome_to_json(genome: Genome) -> dict:
    """The genome as plain JSON: what a run spec records (so equal genomes give equal run ids). The name is a
    label and left out; an edge is [source, decay] or [source, decay, false] for a decay use_decay cannot switch off."""
    nodes = [[n.op, [[e.source, _decay_to_json(e.decay)] + ([] if e.switchable else [False]) for e in n.inputs]]
             for n in genome.nodes]
    return {"nodes": nodes, "momentum": genome.momentum, "lr_decay": _decay_to_json(genome.lr_decay),
            "flip": genome.flip}


def genome_from_json(data: dict, name: str = "") -> Genome:
    expected = {"nodes", "momentum", "lr_decay", "flip"}
    if not isinstance(data, dict) or set(data) != expected:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"a genome is a dict with keys {sorted(expected)}; got {got}")
    nodes = tuple(Node(op, tuple(Edge(e[0], _decay_from_json(e[1]), bool(e[2]) if len(e) > 2 else True)
                                 for e in inputs)) for op, inputs in data["nodes"])
    return Genome(nodes, momentum=data["momentum"], lr_decay=_decay_from_json(data["lr_decay"]),
                  flip=bool(data["flip"]), name=name)
