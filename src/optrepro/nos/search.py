"""The NOS search's genetic encoding and its operators, as the authors' search code has them (torch-free).

Morgan & Hougen, arXiv 2404.06679; OUStudent/NeuralOptimizerSearch@005dfce NeuralOptimizerSearch.py
(`OptimizerChrom`, `Node`, `DecaySchedule`, `DecayNode`). The encoding keeps the code's fixed layout, inactive
nodes included (neutral material a later mutation can reconnect):

    positions 0..19   the 20 operands (space.SEARCH_OPERANDS)
    positions 20..24  five hidden nodes         position 25  the root, whose value is the update u
    adj[i][j] = 1 / 2: node i takes position j as its first / second argument
    decays[(i, j)]    a DecayChrom multiplying the value on edge i <- j (kept when the edge moves away,
                      as the code's decay matrix, so it comes back if the edge does)

A node holds a unary/binary flag and both a unary op (-1 = identity, 0..24) and a binary op (0..9); the flag
decides which one acts. Only nodes reachable from the root are active; `to_genome` turns the active part into
an `optrepro.nos.space.Genome` (canonical node order), which is what runs and what a run spec records.

Random draws go through a numpy Generator; the same seed gives the same genomes. The draws follow the code's
probabilities, including its quirks (each marked "code:" below), because they shape the search's distribution.
Validity beyond the structure (the integrity check on a quadratic, optrepro.nos.integrity) is a function
passed in, so this module stays free of torch.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from optrepro.nos import space

N_OPERANDS = 20
N_HIDDEN = 5
ROOT = N_OPERANDS + N_HIDDEN  # 25
SIZE = ROOT + 1
UNARY_NAMES = space.SEARCH_UNARY  # index un + 1: "id" is the code's -1
BINARY_NAMES = tuple(space.BINARY_OPS)
MUTATION_UNARY = 24  # code: mutation draws unary ops 0..23, so MaxValue (24) only enters at initialisation

DECAY_UNARY_NAMES = tuple(space.DECAY_UNARY)  # the code's DecayNode order 0..12 (12 = identity)
DECAY_BINARY_NAMES = tuple(space.DECAY_BINARY)  # 0..6
DECAY_BASES = 14  # a1..a14 at positions 0..13; position 14 is the decay's hidden node, 15 its root
DECAY_CHECK_T = 100  # a new decay must stay in [0, 1] on t = 0..99 of T = 100


def _choice(rng: np.random.Generator, values) -> int:
    values = list(values)
    if not values:
        raise ValueError("nothing to choose from")
    return int(values[int(rng.integers(len(values)))])


def _other(rng: np.random.Generator, current: int, low: int, high: int) -> int:
    """A uniform draw from low..high-1 without `current` (np.concatenate((arange(low, cur), arange(cur+1, high))))."""
    return _choice(rng, [k for k in range(low, high) if k != current])


# ---- decay schedules ------------------------------------------------------------------------------------

@dataclass
class DecayNode:
    binary: bool
    un: int  # 0..12
    bin: int  # 0..6

    @classmethod
    def random(cls, rng: np.random.Generator) -> "DecayNode":
        return cls(bool(rng.random() < 0.2), int(rng.integers(13)), int(rng.integers(7)))  # unary 0.8, binary 0.2


@dataclass
class DecayChrom:
    """One DecaySchedule: a hidden decay node over a1..a14 and a root over a1..a14 or the hidden node.

    rows[0] / rows[1]: the hidden node's / the root's argument row over positions 0..15 (1 = first, 2 = second).
    `hidden_active` is set once the root has taken the hidden node and, as in the code, never cleared."""

    hidden: DecayNode
    root: DecayNode
    rows: list[list[int]]
    hidden_active: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator) -> "DecayChrom":
        while True:
            rows = [[0] * 16, [0] * 16]
            hidden = DecayNode.random(rng)
            idx = int(rng.integers(DECAY_BASES))
            rows[0][idx] = 1
            if hidden.binary:
                rows[0][_other(rng, idx, 0, DECAY_BASES)] = 2
            root = DecayNode.random(rng)
            if not root.binary:
                if rng.random() > 0.8:  # must take the hidden node
                    rows[1][14] = 1
                else:
                    rows[1][int(rng.integers(15))] = 1
            elif rng.random() > 0.8:  # binary, guaranteed to take the hidden node, on either side
                first_is_hidden = rng.random() > 0.5
                other = int(rng.integers(DECAY_BASES))
                rows[1][14], rows[1][other] = (1, 2) if first_is_hidden else (2, 1)
            else:
                idx = int(rng.integers(15))
                rows[1][idx] = 1
                rows[1][_choice(rng, [k for k in range(DECAY_BASES) if k != idx])] = 2
            chrom = cls(hidden, root, rows, hidden_active=rows[1][14] != 0)
            if chrom.in_unit_interval():
                return chrom

    def _node_expr(self, node: DecayNode, row: list[int], hidden_expr) -> space.Decay:
        def arg(k: int) -> space.Decay:
            pos = row.index(k)
            return hidden_expr if pos == 14 else ("a", pos + 1)

        if sum(1 for v in row if v) == 2:
            return (DECAY_BINARY_NAMES[node.bin], arg(1), arg(2))
        name = DECAY_UNARY_NAMES[node.un]
        return arg(1) if name == "id" else (name, arg(1))

    def expr(self) -> space.Decay:
        """The schedule as a space.Decay expression (identity ops dropped: they compute nothing)."""
        hidden = self._node_expr(self.hidden, self.rows[0], None)
        return self._node_expr(self.root, self.rows[1], hidden)

    def in_unit_interval(self) -> bool:
        expr = self.expr()
        try:
            values = [space.decay_value(expr, t, DECAY_CHECK_T) for t in range(DECAY_CHECK_T)]
        except (ZeroDivisionError, OverflowError, ValueError):
            return False
        return all(0.0 <= v <= 1.0 for v in values)  # NaN fails both comparisons

    def mutate(self, rng: np.random.Generator) -> None:
        """One change in place. code: OptimizerChrom.mutate ignores DecaySchedule.mutate's verdict, so a mutated
        schedule is kept even when it leaves [0, 1] or repeats itself; only the genome's checks judge it."""
        r = rng.random()
        if self.hidden_active and rng.random() <= 0.5:
            row, node, free = self.rows[0], self.hidden, [k for k in range(DECAY_BASES) if self.rows[0][k] == 0]
        else:
            row, node, free = self.rows[1], self.root, [k for k in range(15) if self.rows[1][k] == 0]
        c = _choice(rng, free)
        binary = sum(1 for v in row if v) == 2
        if r >= 0.40:  # change the op
            if binary:
                node.bin = _other(rng, node.bin, 0, 7)
            else:
                node.un = _other(rng, node.un, 0, 13)
        elif r >= 0.15:  # rewire
            if not binary:
                _move(row, 1, c)
            elif rng.random() <= 0.20:
                _swap(row)
            else:
                _move(row, 1 if rng.random() < 0.5 else 2, c)
        elif not binary:  # unary -> binary
            node.binary = True
            if rng.random() <= 0.5:
                row[c] = 2
            else:
                _move(row, 1, None, to=2)
                row[c] = 1
        else:  # binary -> unary
            node.binary = False
            if rng.random() <= 0.5:
                _move(row, 2, None)
            else:
                _move(row, 1, None)
                _move(row, 2, None, to=1)
        if self.rows[1][14] != 0:
            self.hidden_active = True

    def to_json(self) -> dict:
        return {"hidden": [int(self.hidden.binary), self.hidden.un, self.hidden.bin],
                "root": [int(self.root.binary), self.root.un, self.root.bin],
                "rows": [list(r) for r in self.rows], "hidden_active": self.hidden_active}

    @classmethod
    def from_json(cls, data: dict) -> "DecayChrom":
        return cls(DecayNode(bool(data["hidden"][0]), *data["hidden"][1:]),
                   DecayNode(bool(data["root"][0]), *data["root"][1:]),
                   [list(r) for r in data["rows"]], bool(data["hidden_active"]))


def _move(row: list[int], which: int, target: int | None, to: int | None = None) -> None:
    """Clear argument `which` of a row; put it (as `to`, default the same slot) at position target, if any.
    With target None and `to` given, the argument stays where it is and changes slot (2 -> 1, 1 -> 2)."""
    pos = row.index(which)
    if target is None and to is not None:
        row[pos] = to
        return
    row[pos] = 0
    if target is not None:
        row[target] = which if to is None else to


def _swap(row: list[int]) -> None:
    first, second = row.index(1), row.index(2)
    row[first], row[second] = 2, 1


# ---- the update graph -----------------------------------------------------------------------------------

@dataclass
class UpdateNode:
    binary: bool
    un: int  # -1 (identity) .. 24
    bin: int  # 0..9

    @classmethod
    def random(cls, rng: np.random.Generator, p_binary: float) -> "UpdateNode":
        binary = bool(rng.random() < p_binary)
        un = -1 if rng.random() <= 0.20 else int(rng.integers(25))
        return cls(binary, un, int(rng.integers(10)))

    @property
    def op(self) -> str:
        return BINARY_NAMES[self.bin] if self.binary else UNARY_NAMES[self.un + 1]


MOMENTUM = space.MOMENTUM_TYPES  # code type 0 / 1 / 2


@dataclass
class OptChrom:
    """The authors' OptimizerChrom: hidden nodes 20..24 and the root 25 over the operands 0..19."""

    nodes: list[UpdateNode]  # 6 entries: hidden 0..4, then the root
    adj: list[list[int]]  # SIZE x SIZE
    decays: dict[tuple[int, int], DecayChrom] = field(default_factory=dict)
    momentum: int = 0
    flip: bool = False

    # --- structure ---------------------------------------------------------------------------------------
    def inputs(self, pos: int) -> list[int]:
        """Position pos's arguments, first then second."""
        row = self.adj[pos]
        return [row.index(k) for k in (1, 2) if k in row]

    def active(self) -> list[int]:
        """Positions reachable from the root (root first, breadth-first, as the code's set_active)."""
        seen, queue = [ROOT], list(self.inputs(ROOT))
        while queue:
            pos = queue.pop(0)
            if pos in seen:
                continue
            seen.append(pos)
            queue.extend(self.inputs(pos))
        return seen

    def active_nodes(self) -> list[int]:
        return sorted(p for p in self.active() if p >= N_OPERANDS)

    def has_cycle(self) -> bool:
        """Whether the active subgraph has a cycle (self-loops included): the code's networkx.find_cycle."""
        active = set(self.active_nodes())
        state: dict[int, int] = {}  # 1 = on the stack, 2 = done

        def visit(pos: int) -> bool:
            state[pos] = 1
            for arg in self.inputs(pos):
                if arg < N_OPERANDS or arg not in active:
                    continue
                if state.get(arg) == 1 or (arg not in state and visit(arg)):
                    return True
            state[pos] = 2
            return False

        return any(pos not in state and visit(pos) for pos in sorted(active))

    def to_genome(self) -> space.Genome:
        """The active part as a space.Genome: nodes in depth-first post-order from the root (inputs in
        argument order), so equal active graphs give equal genomes whatever their hidden positions."""
        if self.has_cycle():
            raise ValueError("the active update graph has a cycle")
        order: list[int] = []

        def visit(pos: int) -> None:
            for arg in self.inputs(pos):
                if arg >= N_OPERANDS and arg not in order:
                    visit(arg)
            order.append(pos)

        visit(ROOT)
        index = {pos: k for k, pos in enumerate(order)}
        nodes = []
        for pos in order:
            edges = []
            for arg in self.inputs(pos):
                source = space.SEARCH_OPERANDS[arg] if arg < N_OPERANDS else index[arg]
                decay = self.decays.get((pos, arg))
                edges.append(space.Edge(source, decay.expr() if decay is not None else None))
            nodes.append(space.Node(self.node(pos).op, tuple(edges)))
        return space.Genome(tuple(nodes), momentum=MOMENTUM[self.momentum], flip=self.flip)

    def node(self, pos: int) -> UpdateNode:
        return self.nodes[pos - N_OPERANDS]

    def key(self) -> str:
        """The expression as text, flip left out: the code's `msg`, which a particle's history may not repeat."""
        genome = self.to_genome()
        return space.Genome(genome.nodes, momentum=genome.momentum).text()

    # --- serialisation ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "nodes": [[int(n.binary), n.un, n.bin] for n in self.nodes],
            "edges": [[i, j, v] for i in range(N_OPERANDS, SIZE) for j, v in enumerate(self.adj[i]) if v],
            "decays": [[i, j, d.to_json()] for (i, j), d in sorted(self.decays.items())],
            "momentum": self.momentum,
            "flip": self.flip,
        }

    @classmethod
    def from_json(cls, data: dict) -> "OptChrom":
        adj = [[0] * SIZE for _ in range(SIZE)]
        for i, j, v in data["edges"]:
            adj[i][j] = v
        return cls([UpdateNode(bool(b), u, k) for b, u, k in data["nodes"]], adj,
                   {(i, j): DecayChrom.from_json(d) for i, j, d in data["decays"]},
                   int(data["momentum"]), bool(data["flip"]))

    def copy(self) -> "OptChrom":
        return copy.deepcopy(self)


Check = Callable[[space.Genome], "tuple[bool, bool]"]  # genome -> (passed, needs the sign flipped)


def _draw_structure(rng: np.random.Generator) -> OptChrom:
    """One draw of the code's OptimizerChrom.setup loop body (before the cycle and integrity checks)."""
    decay_p = 0.15
    adj = [[0] * SIZE for _ in range(SIZE)]
    decays: dict[tuple[int, int], DecayChrom] = {}
    nodes = []
    hidden = list(range(N_OPERANDS, ROOT))

    def maybe_decay(row: int, col: int, p: float = decay_p) -> None:
        if rng.random() <= p:
            decays[(row, col)] = DecayChrom.random(rng)

    for i in range(N_HIDDEN):
        node = UpdateNode.random(rng, 0.25)
        nodes.append(node)
        row = N_OPERANDS + i
        others = [h for h in hidden if h != row]
        idx1 = int(rng.integers(N_OPERANDS)) if rng.random() >= 0.20 else _choice(rng, others)
        adj[row][idx1] = 1
        maybe_decay(row, idx1)
        if not node.binary:
            continue
        if rng.random() >= 0.20:  # an operand
            idx2 = _other(rng, idx1, 0, N_OPERANDS) if idx1 < N_OPERANDS else int(rng.integers(N_OPERANDS))
        elif idx1 < N_OPERANDS:
            idx2 = _choice(rng, others)
        else:  # code: excludes the first argument but not the node itself (it compares with i, not 20 + i)
            idx2 = _choice(rng, [h for h in hidden if h != idx1])
        adj[row][idx2] = 2
        maybe_decay(row, idx2)
    root = UpdateNode.random(rng, 0.75)
    nodes.append(root)
    if not root.binary:  # a unary root takes a hidden node
        idx = _choice(rng, hidden)
        adj[ROOT][idx] = 1
        if rng.random() >= decay_p:  # code: `>= 0.15`, so the root's edge gets a decay with p = 0.85
            decays[(ROOT, idx)] = DecayChrom.random(rng)
    else:
        idx1 = int(rng.integers(N_OPERANDS)) if rng.random() >= 0.20 else _choice(rng, hidden)
        adj[ROOT][idx1] = 1
        maybe_decay(ROOT, idx1)
        if idx1 < N_OPERANDS:  # an operand first: the second is a hidden node
            idx2 = _choice(rng, hidden)
        elif rng.random() >= 0.20:
            idx2 = int(rng.integers(N_OPERANDS))
        else:
            idx2 = _choice(rng, [h for h in hidden if h != idx1])
        adj[ROOT][idx2] = 2
        maybe_decay(ROOT, idx2)
    return OptChrom(nodes, adj, decays, momentum=int(rng.integers(3)))


@dataclass
class DrawStats:
    """What it took to find a valid genome: candidates drawn, and why the others were refused."""

    drawn: int = 0
    cyclic: int = 0
    failed_integrity: int = 0
    repeated: int = 0
    rejected: list = field(default_factory=list)  # integrity-rejected candidates (JSON), when asked to keep them

    def add(self, other: "DrawStats") -> None:
        self.drawn += other.drawn
        self.cyclic += other.cyclic
        self.failed_integrity += other.failed_integrity
        self.repeated += other.repeated
        self.rejected.extend(other.rejected)

    def to_json(self) -> dict:
        return {"drawn": self.drawn, "cyclic": self.cyclic, "failed_integrity": self.failed_integrity,
                "repeated": self.repeated}


def random_genome(rng: np.random.Generator, check: Check, stats: DrawStats | None = None,
                  keep_rejected: int = 0, max_draws: int = 100_000) -> OptChrom:
    """A random valid genome: drawn until its active graph is acyclic and it passes `check` (with its sign
    flipped if only that passes: flip = True). `keep_rejected`: keep up to that many integrity-rejected
    candidates in stats.rejected (for the false-rejection control)."""
    stats = stats if stats is not None else DrawStats()
    for _ in range(max_draws):
        chrom = _draw_structure(rng)
        stats.drawn += 1
        if chrom.has_cycle():
            stats.cyclic += 1
            continue
        passed, flip = check(chrom.to_genome())
        if not passed:
            stats.failed_integrity += 1
            if len(stats.rejected) < keep_rejected:
                stats.rejected.append(chrom.to_json())
            continue
        chrom.flip = flip
        return chrom
    raise RuntimeError(f"no valid genome in {max_draws} draws")


# ---- mutation ------------------------------------------------------------------------------------------

def mutate_once(parent: OptChrom, rng: np.random.Generator) -> OptChrom:
    """One structural mutation of a copy of `parent` (the code's OptimizerChrom.mutate up to its checks).
    One active node is picked uniformly; r ~ U(0, 1) picks the change: op (0.4), rewire (0.3),
    unary <-> binary (0.1), momentum type (0.1), an edge's decay (0.1)."""
    chrom = parent.copy()
    r = rng.random()
    pos = _choice(rng, chrom.active_nodes())
    node, row, is_root = chrom.node(pos), chrom.adj[pos], pos == ROOT
    zeros = [k for k in range(SIZE) if row[k] == 0]
    if r >= 0.60:  # change the op
        if node.binary:
            node.bin = _other(rng, node.bin, 0, 10)
        elif node.un == -1:
            node.un = int(rng.integers(MUTATION_UNARY))
        elif rng.random() <= 0.20:
            node.un = -1
        else:
            node.un = _other(rng, node.un, 0, MUTATION_UNARY)
    elif r >= 0.30:  # rewire
        c = _choice(rng, zeros)  # any free position: operands, hidden nodes, the node itself, the root
        if not node.binary:
            if is_root:  # code: zeros[20:-1], the free hidden nodes
                c = _choice(rng, zeros[20:-1])
            _move(row, 1, c)
        elif rng.random() <= 0.20:
            _swap(row)
        elif is_root:
            cons = [k for k in range(SIZE) if row[k]]
            if sum(1 for k in cons if k >= N_OPERANDS) == 2:
                _move(row, 1 if rng.random() < 0.5 else 2, c)
            else:
                operand = next(k for k in cons if k < N_OPERANDS)
                which = 1 if rng.random() < 0.5 else 2
                if row[operand] != which:
                    # the hidden-node side stays a hidden node. code: zeros[20:-1] skips 20 free positions,
                    # i.e. the 19 free operands and the first free hidden node
                    c = _choice(rng, zeros[20:-1])
                _move(row, which, c)
        else:
            _move(row, 1 if rng.random() < 0.5 else 2, c)
    elif r >= 0.20:  # unary <-> binary
        c = _choice(rng, zeros)
        if not node.binary:
            node.binary = True
            if rng.random() <= 0.5:
                row[c] = 2
            else:
                _move(row, 1, None, to=2)
                row[c] = 1
        else:
            node.binary = False
            cons = [k for k in range(SIZE) if row[k]]
            if is_root and sum(1 for k in cons if k >= N_OPERANDS) < 2:  # keep the root's hidden input
                operand = next(k for k in cons if k < N_OPERANDS)
                drop = row[operand]
            else:
                drop = 2 if rng.random() <= 0.5 else 1
            _move(row, drop, None)
            if drop == 1:
                _move(row, 2, None, to=1)
    elif r >= 0.10:  # momentum type
        chrom.momentum = _other(rng, chrom.momentum, 0, 3)
    else:  # an input edge's decay: add one, or delete (0.5) / mutate (0.5) the one there
        col = _choice(rng, [k for k in range(SIZE) if row[k]])
        decay = chrom.decays.get((pos, col))
        if decay is None:
            chrom.decays[(pos, col)] = DecayChrom.random(rng)
        elif rng.random() >= 0.50:
            del chrom.decays[(pos, col)]
        else:
            decay.mutate(rng)
    return chrom


def mutate(parent: OptChrom, rng: np.random.Generator, check: Check, seen: set[str] | frozenset = frozenset(),
           stats: DrawStats | None = None, max_draws: int = 100_000) -> OptChrom:
    """A valid mutant of `parent`: mutated once (from the parent each time) until its active graph is acyclic,
    it passes `check`, and its expression is not in `seen` (the code's `while redo` loop).

    code: the flip flag only ever turns on. A mutant of a flipped parent stays flipped even when it passes
    the check unflipped (check_integrity sets `flip = True` when needed and never resets it)."""
    stats = stats if stats is not None else DrawStats()
    for _ in range(max_draws):
        child = mutate_once(parent, rng)
        stats.drawn += 1
        if child.has_cycle():
            stats.cyclic += 1
            continue
        passed, flip = check(child.to_genome())
        if not passed:
            stats.failed_integrity += 1
            continue
        child.flip = child.flip or flip
        if child.key() in seen:
            stats.repeated += 1
            continue
        return child
    raise RuntimeError(f"no valid mutant in {max_draws} draws")


def rng_for(*parts) -> np.random.Generator:
    """A generator seeded from a tuple of ints and strings (stable across processes and platforms)."""
    import hashlib

    digest = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))
