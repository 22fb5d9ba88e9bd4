"""The closure contract between the training loop and optimizers that evaluate the loss more than once.

Two closure forms reach an optimizer's `step(closure)` (optrepro.optim.registry.CLOSURES declares which
optimizers take one):

  one-argument form   closure(backward=True, *, full_precision=False, create_graph=False) -> loss
                      backward=True zeroes the gradients, evaluates the step's batch and back-propagates;
                      backward=False evaluates the loss only (a trial point; no gradients are touched).
                      full_precision=True asks for the forward in fp32 (a finite difference must not be
                      rounding noise); create_graph=True keeps the graph of the gradients (Hessian-vector
                      products). A closure that does not take an option simply runs without it.
  torch's form        closure() -> loss, back-propagating every time (as torch.optim.LBFGS takes it).
                      `optimizer_closure` adapts it: trial points then pay a backward pass, and the
                      gradients the optimizer holds are put back after it.

`StepClosure` is the loop's one-argument closure. It evaluates one optimizer step's batch (all its
micro-batches, so gradient accumulation is covered) and replays the same noise on every call: it records the
state of torch's generators (`NoiseRNG`) before its first evaluation and restores it before each later one, so
dropout masks and sampling noise are identical across the calls of one step. Trial evaluations (every call
after the first) restore BatchNorm running statistics when trial_batchnorm is "frozen"; "moving" lets them
move, as the ALSALS authors' code does. Passes are counted per call: a forward+backward pass over the step's
batch counts 1 forward and 1 backward (the project's cost unit).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Sequence

import torch
from torch import nn

from optrepro.optim.registry import TRIAL_BATCHNORM
from optrepro.registry import unknown

CLOSURE_OPTIONS = ("full_precision", "create_graph")


def batchnorm_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [buf for module in model.modules() if isinstance(module, nn.modules.batchnorm._NormBase)
            for buf in (module.running_mean, module.running_var, module.num_batches_tracked) if buf is not None]


class NoiseRNG:
    """The generators noise draws from on `device` (torch's default CPU generator and, on CUDA, the device's).

    Seeded once per run; its state goes into the checkpoint. `seed` calls the generators themselves, not
    torch.manual_seed: that also seeds every accelerator backend through lazy calls that format a stack trace
    each (about 0.7 ms on a CPU-only machine)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def seed(self, seed: int) -> None:
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                torch.cuda.manual_seed(seed)

    def get_state(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        torch.set_rng_state(states[0].cpu())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(states[1].cpu(), self.device)


@functools.lru_cache(maxsize=64)
def _takes_full_precision(forward: Callable[..., Any]) -> bool:
    return "full_precision" in inspect.signature(forward).parameters  # read once per function, not per step


class StepClosure:
    """One optimizer step's loss, as a one-argument closure (see the module docstring).

    `forward(model, batch, carry)` returns the problem's Output; a forward that also takes `full_precision` gets
    the closure's option (the loop's turns its bf16 autocast off then). `noise` (a NoiseRNG) makes every call
    replay the noise of the first; None skips that bookkeeping (an optimizer that calls the closure once).
    """

    def __init__(self, model: nn.Module, forward: Callable[..., Any], micro_batches: Sequence[Any],
                 carry: Any = None, trial_batchnorm: str = "frozen", noise: NoiseRNG | None = None,
                 params: Sequence[torch.Tensor] | None = None):
        if trial_batchnorm not in TRIAL_BATCHNORM:
            raise unknown("trial_batchnorm", trial_batchnorm, TRIAL_BATCHNORM)
        self.model = model
        self.forward = forward
        self._forward_takes_precision = _takes_full_precision(getattr(forward, "__func__", forward))
        self.micro_batches = list(micro_batches)
        self.carry_in = carry
        self.trial_batchnorm = trial_batchnorm
        self.noise = noise
        self._params = params
        self._noise_state: list[torch.Tensor] | None = None
        self.calls = 0
        self.forward_passes = 0
        self.backward_passes = 0
        self.first_outputs: list[Any] | None = None  # outputs of the first call: metrics and carried state
        self.first_loss: torch.Tensor | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        if self._params is None:
            self._params = [p for p in self.model.parameters() if p.requires_grad]
        return self._params

    def __call__(self, backward: bool = True, *, full_precision: bool = False,
                 create_graph: bool = False) -> torch.Tensor:
        if self.noise is not None:
            if self._noise_state is None:
                self._noise_state = self.noise.get_state()
            else:
                self.noise.set_state(self._noise_state)
        frozen = self.calls > 0 and self.trial_batchnorm == "frozen"
        saved = [b.clone() for b in batchnorm_buffers(self.model)] if frozen else None
        if backward:
            for p in self.params:
                p.grad = None
        n = len(self.micro_batches)
        total = None
        outputs = []
        carry = self.carry_in
        with torch.enable_grad() if backward else torch.no_grad():
            for batch in self.micro_batches:
                out = (self.forward(self.model, batch, carry, full_precision=full_precision)
                       if self._forward_takes_precision else self.forward(self.model, batch, carry))
                carry = out.carry
                loss = out.loss / n if n > 1 else out.loss
                if backward and create_graph:  # autograd.grad: no hidden cycle through AccumulateGrad
                    grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
                    for p, g in zip(self.params, grads):
                        if g is not None:
                            p.grad = g if p.grad is None else p.grad + g
                elif backward:
                    loss.backward()
                total = loss.detach() if total is None else total + loss.detach()
                outputs.append(out)
        if saved is not None:
            with torch.no_grad():
                for buf, old in zip(batchnorm_buffers(self.model), saved):
                    buf.copy_(old)
        if self.first_outputs is None:
            self.first_outputs = outputs
            self.first_loss = total
        self.calls += 1
        self.forward_passes += 1
        self.backward_passes += int(backward)
        return total


def optimizer_closure(closure: Callable[..., Any], params: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """`closure` as an optimizer calls it, whichever form it has: call(backward=True, **options) -> loss.

    A one-argument closure gets the options it accepts (CLOSURE_OPTIONS; others are left out). A closure without
    arguments back-propagates on every call: at a trial point (backward=False) the gradients of `params` are
    set aside, the closure runs with gradients enabled (paying its backward pass), and they are put back, so the
    optimizer's gradients stay those of the step's first evaluation.
    """
    try:
        parameters = inspect.signature(closure).parameters
    except (TypeError, ValueError):  # a builtin without a signature: treat it as torch's form
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "backward" in parameters or takes_any:
        accepted = set(CLOSURE_OPTIONS) if takes_any else set(CLOSURE_OPTIONS) & set(parameters)

        def call(backward: bool = True, **options):
            return closure(backward=backward, **{k: v for k, v in options.items() if k in accepted and v})

        return call
    params = list(params)

    def call_torch_form(backward: bool = True, **options):
        with torch.enable_grad():
            if backward:
                return closure()
            held = [p.grad for p in params]
            for p in params:
                p.grad = None
            try:
                loss = closure()
            finally:
                for p, g in zip(params, held):
                    p.grad = g
        return loss.detach() if torch.is_tensor(loss) else loss

    return call_torch_form
