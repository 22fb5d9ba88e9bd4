"""Shared plumbing for optrepro's own optimizers and the factories around torch's classes.

Own optimizers follow torch/optim/adam.py: `step()` gathers, per param group, the parameters that have a
gradient and their state, then runs either the single-tensor path (a Python loop, the readable reference)
or the foreach path (torch._foreach_* over tensors grouped by device and dtype). The two paths compute the
same formula with the same operations, so they agree to rounding. With `compile=True` a third path runs the
optimizer's fused kernel (optim/_compiled.py: one torch.compile'd elementwise pass per tensor, the fast one on
CPU and GPU); it agrees with the others to rounding, and tensors it cannot take fall back to them.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch.optim.optimizer import Optimizer

from optrepro.optim import _compiled

# torch classes that have a fused kernel (one pass over the memory per step) on some device
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")


def fastest_torch_kwargs(params: list, has_fused: bool,
                         fused_devices: tuple[str, ...] = _FUSED_DEVICES) -> dict[str, Any]:
    """{"fused": True} where torch has a fused kernel for these parameters, else foreach on accelerators and
    the for-loop on CPU (see `default_foreach`). Fused needs floating-point tensors on one device type among
    the class's `fused_devices` (torch's Adagrad, for one, has a fused kernel on CPU only).
    """
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    devices = {p.device.type for p in tensors}
    if has_fused and tensors and len(devices) == 1 and devices <= set(fused_devices) \
            and all(p.is_floating_point() for p in tensors):
        return {"fused": True}
    return {"foreach": default_foreach(tensors)}


def as_param_list(params) -> list:
    """Materialise an iterable of parameters / param-group dicts once (factories inspect it), a group's "params"
    included: a generator there (model.layer.parameters()) would otherwise be consumed by the inspection and
    reach torch empty."""
    params = [{**p, "params": list(p["params"]) if not torch.is_tensor(p["params"]) else [p["params"]]}
              if isinstance(p, dict) else p for p in params]
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    return params


def default_foreach(params: list[torch.Tensor]) -> bool:
    """foreach on accelerators (fewer kernel launches); the single-tensor loop on CPU, where running every op
    of one tensor while it sits in cache beats one pass over all tensors per op (measured: AdaBelief on 10 M
    parameters in 100 tensors, 31 ms for-loop vs 74 ms foreach, benchmarks/optim_step.py). torch's own
    default makes the same choice."""
    return all(p.device.type not in ("cpu", "meta") for p in params)


@contextlib.contextmanager
def full_precision(device_type: str):
    """fp32 for a finite difference: autocast off for `device_type` and TF32 matmuls/convolutions off. A closure
    that runs its own mixed-precision forward is asked separately (its `full_precision=True` option,
    optrepro.closure), since its autocast would override this one.

    The difference g(w + r v) - g(w) is O(r |H|), so bf16/TF32 rounding of either gradient (relative 1e-3..1e-2)
    swamps it when r = 1e-3. Both gradients must also see the same precision, or the difference picks up the
    rounding error of one of them. The TF32 flags are global; they are restored on exit.
    """
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        if torch.amp.is_autocast_available(device_type):
            with torch.autocast(device_type=device_type, enabled=False):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


class OneParamGroup:
    """Mixin (before torch's Optimizer in the bases) for optimizers whose hyperparameters and scalar state are
    global, e.g. one line search or one controller for all tensors: a second param group is refused, since
    its settings would be silently ignored (the registry declares these optimizers `param_groups="one"`)."""

    def add_param_group(self, param_group: dict) -> None:
        if self.param_groups:
            raise ValueError(f"{type(self).__name__} supports one parameter group (its hyperparameters and its "
                             f"step-size state are global); got a second one. Pass all parameters in one group.")
        super().add_param_group(param_group)


def closure_loss(closure: Callable[[], Any] | None):
    """torch.optim's step preamble: closure() with gradients enabled (steps run under no_grad), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class OwnOptimizer(Optimizer):
    """Base for optrepro's own optimizers: closure handling, grad gathering, foreach/compiled dispatch.

    `compile` (an instance setting, not a hyperparameter: it is not in param groups or state_dict) is False,
    True (torch.compile with inductor) or a torch.compile backend name; subclasses that support it set
    `kernel_name`, `kernel_state_keys` and `_kernel_row`.
    """

    kernel_name: str | None = None  # optim/_compiled.py KERNELS key
    kernel_state_keys: tuple[str, ...] = ()  # state tensors passed to the kernel after params and grads

    def __init__(self, params, defaults: dict[str, Any], compile: bool | str = False):
        super().__init__(params, defaults)
        self.compile_backend = _compiled.backend_of(compile)
        if self.compile_backend is not None and self.kernel_name is None:
            raise ValueError(f"{type(self).__name__} has no compiled path (compile={compile!r})")

    def _kernel_row(self, group: dict[str, Any], step: int) -> list[float]:
        """The kernel's scalars for one tensor at `step` (see the kernel's docstring)."""
        raise NotImplementedError

    def _update_compiled(self, group, params, grads, states) -> tuple[list, list, list]:
        """Run the fused kernel on the tensors it takes; return (params, grads, states) of the rest."""
        lists = [params, grads, *([s[k] for s in states] for k in self.kernel_state_keys)]
        take, rest = _compiled.split_compilable(lists)
        if take:
            rows_by_step: dict[int, list[float]] = {}
            for i in take:
                step = states[i]["step"]
                if step not in rows_by_step:
                    rows_by_step[step] = self._kernel_row(group, step)
            rows = [rows_by_step[states[i]["step"]] for i in take]
            kernel = _compiled.fused_kernel(self.kernel_name, self.compile_backend)
            _compiled.run(kernel, [[ts[i] for i in take] for ts in lists] if rest else lists, rows)
        return [params[i] for i in rest], [grads[i] for i in rest], [states[i] for i in rest]

    @staticmethod
    def _adam_moments_(group: dict[str, Any], p: torch.Tensor, g: torch.Tensor, state: dict[str, Any]):
        """The Adam-family single-tensor update of the moments: L2 added to the gradient, then
        m <- lerp(m, g, 1 - beta1) and v <- beta2 v + (1 - beta2) g^2 in place. Returns (g, m, v)."""
        beta1, beta2 = group["betas"]
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        return g, m, v

    @staticmethod
    def _zero_state(state: dict[str, Any], p: torch.Tensor, *names: str) -> None:
        """A fresh state: step 0 and a zero tensor shaped like `p` for each name."""
        state["step"] = 0
        for name in names:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # subclasses: state keys created zero-filled on the first step (others via `_init_state`)
    def _init_state(self, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _update_single(self, group: dict[str, Any], params, grads, states) -> None:
        raise NotImplementedError

    def _update_foreach(self, group: dict[str, Any], params, grads, states) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(group, p, state)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                states.append(state)
            if self.compile_backend is not None:
                params, grads, states = self._update_compiled(group, params, grads, states)
            if not params:
                continue
            foreach = group.get("foreach")
            if foreach is None:
                foreach = default_foreach(params)
            if foreach:
                self._update_foreach(group, params, grads, states)
            else:
                self._update_single(group, params, grads, states)
        return loss


def grouped(tensor_lists: list[list[torch.Tensor]], extra: list[list[Any]] | None = None):
    """Yield (lists, extras) per (device, dtype) bucket, as foreach kernels want them."""
    buckets = Optimizer._group_tensors_by_device_and_dtype(tensor_lists, with_indices=True)
    for (_device, _dtype), (lists, indices) in buckets.items():
        yield lists, [[values[i] for i in indices] for values in (extra or [])]
