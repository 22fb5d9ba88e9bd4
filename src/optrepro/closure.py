"""The closure the training loop hands to optimizers that evaluate the loss more than once.

`StepClosure(...)()` evaluates the loss of one optimizer step's batch (all its micro-batches, so gradient
accumulation is covered) and, with backward=True, leaves the gradients in `.grad` (zeroed first, as
torch.optim.LBFGS closures do). Every call replays the same noise: torch's global RNG is re-seeded from
`noise_seed` before each micro-batch, so dropout masks and sampling noise are identical across calls.

Trial evaluations (every call after the first of a step) leave BatchNorm running statistics alone when
the optimizer declares `trial_batchnorm = "frozen"` (the default); `"moving"` lets them move at trial
points, as the ALSALS authors' code does. Passes are counted per call: a forward+backward pass over the
step's batch counts 1 forward and 1 backward (the cost unit of docs/replication.md, "Equal compute").
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

TRIAL_BATCHNORM = ("frozen", "moving")


def batchnorm_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [buf for module in model.modules() if isinstance(module, nn.modules.batchnorm._NormBase)
            for buf in (module.running_mean, module.running_var, module.num_batches_tracked) if buf is not None]


class StepClosure:
    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Any, Any], Any],
                 micro_batches: Sequence[Any], noise_seeds: Sequence[int], carry: Any = None,
                 trial_batchnorm: str = "frozen", params: Sequence[torch.Tensor] | None = None):
        if trial_batchnorm not in TRIAL_BATCHNORM:
            raise ValueError(f"unknown trial_batchnorm {trial_batchnorm!r}. Valid choices: {', '.join(TRIAL_BATCHNORM)}")
        if len(noise_seeds) != len(micro_batches):
            raise ValueError("one noise seed per micro-batch")
        self.model = model
        self.forward = forward
        self.micro_batches = list(micro_batches)
        self.noise_seeds = list(noise_seeds)
        self.carry_in = carry
        self.trial_batchnorm = trial_batchnorm
        self.params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        self.calls = 0
        self.forward_passes = 0
        self.backward_passes = 0
        self.first_outputs: list[Any] | None = None  # outputs of the first call: metrics and carried state
        self.first_loss: torch.Tensor | None = None

    def __call__(self, backward: bool = True) -> torch.Tensor:
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
            for batch, seed in zip(self.micro_batches, self.noise_seeds):
                torch.manual_seed(seed)
                out = self.forward(self.model, batch, carry)
                carry = out.carry
                loss = out.loss / n
                if backward:
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
