"""Fused update kernels for optrepro's own optimizers: one torch.compile'd elementwise pass per tensor.

torch's fused Adam reads and writes each parameter's memory once per step; an eager step that runs ten
elementwise ops runs over it ten times. Here an optimizer's update is written once, as a plain torch function
over lists of tensors (`kernel(params, grads, *states, scalars)`, one row of `scalars` per tensor), and
`FusedKernel` runs it compiled: tensors are flattened to 1-D and passed CHUNK at a time (the last chunk padded
with dummies), with dynamic sizes, so one compiled graph per dtype and device serves every chunk of every model:
no recompilation per shape, one Python call per chunk. Inductor fuses each tensor's update into one loop.
Tensors the compiled path does not take (non-contiguous, fewer than 2 elements, dtypes other than
float32/float64, devices other than CPU/CUDA) go to the optimizer's own eager path (`split_compilable`).

Scalars that change over training (bias corrections, lr from schedules, the step) are data in `scalars`, not
constants of the graph, so they never trigger recompilation. Rounding differs from the optimizers' eager
paths only in the order of floating-point operations (tests/test_optim_tf1.py compares them over 100 steps).
"""
from __future__ import annotations

import time
import weakref
from typing import Callable, Sequence

import contextlib

import torch

def _no_duck_shapes():
    """Turn off dynamo's duck sizing where this torch has the (private) switch; without it, chunks whose tensors
    happen to share sizes compile once more per size pattern, which costs time, never correctness."""
    try:
        import torch.fx.experimental._config as fx_config
    except ImportError:
        return contextlib.nullcontext()
    if not hasattr(fx_config, "use_duck_shape"):
        return contextlib.nullcontext()
    return fx_config.patch(use_duck_shape=False)


# Tensors per compiled call: fewer calls vs. compile time. Measured (AdaBelief, 100 tensors, one CPU thread):
# 8 -> 17 s cold compile, 1.6 ms of per-step overhead; 16 -> 24 s, 1.5 ms.
CHUNK = 8
COMPILED_DTYPES = (torch.float32, torch.float64)
COMPILED_DEVICES = ("cpu", "cuda")


def compilable(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether one parameter's tensors (param, grad, states) can take the compiled path."""
    first = tensors[0]
    return (first.dtype in COMPILED_DTYPES and first.device.type in COMPILED_DEVICES and first.numel() >= 2
            and all(t.is_contiguous() and t.dtype == first.dtype for t in tensors))


_ALIASES: dict[int, tuple[weakref.ref, torch.Tensor]] = {}  # id(tensor) -> (weak ref to it, its flat alias)


def _flat_alias(t: torch.Tensor) -> torch.Tensor:
    """A 1-D tensor on t's memory that is not a view: dynamo guards on a view's base (its shape and rank), which
    would recompile the graph for every new pattern of parameter ranks in a chunk. Cached per live tensor
    (parameters and states live across steps); an entry dies with its tensor and is rebuilt if t's memory moved."""
    key = id(t)
    entry = _ALIASES.get(key)
    if entry is not None and entry[0]() is t:
        alias = entry[1]
        if alias.data_ptr() == t.data_ptr() and alias.numel() == t.numel():
            return alias
    alias = torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(),
                                                                (t.numel(),), (1,))
    _ALIASES[key] = (weakref.ref(t, lambda _, key=key: _ALIASES.pop(key, None)), alias)
    return alias


class FusedKernel:
    """Runs a list kernel `kernel(*tensor_lists, scalars)` compiled in chunks of CHUNK flat tensors.

    `backend` is torch.compile's ("inductor"; "eager" traces with dynamo only, for fast tests of the chunking).
    `compile_seconds` accumulates the wall time of calls that compiled (first call per dtype/device).
    """

    def __init__(self, kernel: Callable, backend: str = "inductor"):
        self.kernel = kernel
        self.backend = backend
        self.compile_seconds = 0.0
        self._compiled = None
        self._seen: set[tuple] = set()  # (device, dtype) already compiled
        self._dummies: dict[tuple, list[torch.Tensor]] = {}

    def _dummy(self, device, dtype, slot: int) -> torch.Tensor:
        """A distinct 2-element tensor per padding slot (repeated inputs would alias and change the graph)."""
        key = (device, dtype)
        pool = self._dummies.setdefault(key, [])
        while len(pool) <= slot:
            pool.append(torch.zeros(2, device=device, dtype=dtype))
        return pool[slot]

    def __call__(self, tensor_lists: list[list[torch.Tensor]], rows: list[list[float]]) -> None:
        """Apply the kernel to tensor_lists (equal lengths, one device and dtype, all compilable) with one row
        of scalars per tensor."""
        if self._compiled is None:
            # inductor's own determinism flag follows torch's (runner.deterministic_algorithms leaves it unset)
            torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled(),
                                               warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
            self._compiled = torch.compile(self.kernel, dynamic=True, fullgraph=True, backend=self.backend)
        first = tensor_lists[0][0]
        device, dtype = first.device, first.dtype
        flat = [[_flat_alias(t) for t in ts] for ts in tensor_lists]
        key = (device, dtype)
        start = time.perf_counter() if key not in self._seen else None
        n = len(rows)
        # the usual case, one step count for all tensors: one scalars tensor serves every chunk (dummies included)
        shared = torch.tensor([rows[0]] * CHUNK, dtype=dtype, device=device) \
            if all(row == rows[0] for row in rows) else None
        # duck sizing off: equal sizes within a chunk must not become one symbol (a recompile per pattern)
        with _no_duck_shapes():
            for lo in range(0, n, CHUNK):
                chunk = [ts[lo:lo + CHUNK] for ts in flat]
                pad = CHUNK - len(chunk[0])
                if pad:
                    slot = 0
                    for ts in chunk:
                        for _ in range(pad):
                            ts.append(self._dummy(device, dtype, slot))
                            slot += 1
                if shared is not None:
                    scalars = shared
                else:
                    chunk_rows = rows[lo:lo + CHUNK]
                    scalars = torch.tensor(chunk_rows + [rows[0]] * pad, dtype=dtype, device=device)
                self._compiled(*chunk, scalars)
        if start is not None:
            self._seen.add(key)
            self.compile_seconds += time.perf_counter() - start


# --- kernels -------------------------------------------------------------------------------------------------
# Each mirrors its optimizer's eager single-tensor path (see the optimizer's module for the formula); `c` is the
# tensor's row of scalars. Weight decay is always applied (g + 0 * p = g for finite p).

def adabelief_kernel(params, grads, exp_avgs, exp_avg_vars, scalars):
    """c = [wd, 1 - b1, b2, 1 - b2, eps, 1/sqrt(bc2), -adaptive step, -momentum step, adaptive (1/0)]."""
    for p, g, m, s, c in zip(params, grads, exp_avgs, exp_avg_vars, scalars):
        g = g + c[0] * p
        m.lerp_(g, c[1])
        residual = g - m
        s.mul_(c[2]).add_(residual * residual * c[3]).add_(c[4])
        denom = s.sqrt() * c[5] + c[4]
        p.copy_(torch.where(c[8] > 0, p + c[6] * m / denom, p + c[7] * m))


def adabound_kernel(params, grads, exp_avgs, exp_avg_sqs, scalars):
    """c = [wd, 1 - b1, b2, 1 - b2, eps, step size, lower bound, upper bound]."""
    for p, g, m, v, c in zip(params, grads, exp_avgs, exp_avg_sqs, scalars):
        g = g + c[0] * p
        m.lerp_(g, c[1])
        v.mul_(c[2]).add_(g * g * c[3])
        eta = torch.clamp(c[5] / (v.sqrt() + c[4]), c[6], c[7])
        p.sub_(eta * m)


def amsbound_kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars):
    """AdaBound on the running maximum of v; c as adabound_kernel."""
    for p, g, m, v, v_max, c in zip(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars):
        g = g + c[0] * p
        m.lerp_(g, c[1])
        v.mul_(c[2]).add_(g * g * c[3])
        v_max.copy_(torch.maximum(v_max, v))
        eta = torch.clamp(c[5] / (v_max.sqrt() + c[4]), c[6], c[7])
        p.sub_(eta * m)


def radam_kernel(params, grads, exp_avgs, exp_avg_sqs, scalars):
    """torch.optim.RAdam; c = [wd, 1 - b1, b2, 1 - b2, eps, -adaptive step, -momentum step, adaptive (1/0)]."""
    for p, g, m, v, c in zip(params, grads, exp_avgs, exp_avg_sqs, scalars):
        g = g + c[0] * p
        m.lerp_(g, c[1])
        v.mul_(c[2]).add_(g * g * c[3])
        denom = v.sqrt() + c[4]
        p.copy_(torch.where(c[7] > 0, p + c[5] * m / denom, p + c[6] * m))


def lookahead_sync_kernel(fast, slow, scalars):
    """slow <- slow + alpha (fast - slow); fast <- slow.  c = [alpha]."""
    for f, s, c in zip(fast, slow, scalars):
        s.lerp_(f, c[0])
        f.copy_(s)


KERNELS = {"adabelief": adabelief_kernel, "adabound": adabound_kernel, "amsbound": amsbound_kernel,
           "radam": radam_kernel, "lookahead_sync": lookahead_sync_kernel}
_RUNNERS: dict[tuple[str, str], FusedKernel] = {}


def backend_of(compile: bool | str) -> str | None:
    """An optimizer's `compile` argument -> torch.compile backend: False -> None (eager optimizer paths),
    True -> "inductor", a string -> that backend ("eager": dynamo tracing without code generation, for tests)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "inductor"
    if isinstance(compile, str) and compile in torch._dynamo.list_backends(exclude_tags=()):
        return compile
    raise ValueError(f"compile={compile!r}: expected False, True (inductor) or a torch.compile backend name "
                     f"such as 'inductor', 'eager' or 'aot_eager'")


def fused_kernel(name: str, backend: str) -> FusedKernel:
    """The process-wide runner of kernel `name` (compiled once per process, shared by all optimizers)."""
    key = (name, backend)
    if key not in _RUNNERS:
        _RUNNERS[key] = FusedKernel(KERNELS[name], backend)
    return _RUNNERS[key]


def total_compile_seconds() -> float:
    """Seconds spent in compiling calls by every runner in this process (benchmarks report the increase)."""
    return sum(runner.compile_seconds for runner in _RUNNERS.values())


def split_compilable(tensor_lists: list[list[torch.Tensor]]) -> tuple[list[int], list[int]]:
    """Indices of the tensors that can take the compiled path, and of the rest (the caller's eager path)."""
    take, rest = [], []
    for i in range(len(tensor_lists[0])):
        (take if compilable([ts[i] for ts in tensor_lists]) else rest).append(i)
    return take, rest


# Compiled kernel calls (one per optimizer step and param group) since the last `take_call_counts()`, per
# backend. The training loop records provenance once per run, at its end (optrepro.provenance reads and clears
# this), so a run's result says whether its optimizer steps ran compiled, and its run id does not.
_CALLS: dict[str, int] = {}


def take_call_counts() -> dict[str, int]:
    """{backend: compiled kernel calls (one per optimizer step and param group)} since the previous call; restart."""
    counts = dict(_CALLS)
    _CALLS.clear()
    return counts


def run(kernel: FusedKernel, tensor_lists: list[list[torch.Tensor]], rows: list[list[float]]) -> None:
    """Run a compiled kernel over compilable tensors of any mix of devices and dtypes (one bucket each)."""
    _CALLS[kernel.backend] = _CALLS.get(kernel.backend, 0) + 1
    buckets: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensor_lists[0]):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    for indices in buckets.values():
        if len(indices) == len(rows):
            kernel(tensor_lists, rows)
        else:
            kernel([[ts[i] for i in indices] for ts in tensor_lists], [rows[i] for i in indices])
