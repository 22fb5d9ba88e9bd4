"""The NOS integrity check: does a genome descend a shifted 5-D quadratic at all? (torch)

OUStudent/NeuralOptimizerSearch@005dfce NeuralOptimizerSearch.py, OptimizerChrom.sphere /
degenerate_opt_detection / check_integrity. L(x) = sum_i (x_i - b_i)^2 from x0 = [1.1, 0.9, 1.1, 0.9, 1.0],
b = [0.5, 1.5, -0.3, -1.2, 0.75] (L(x0) = 7.1525); 35 optimizer steps with the genome's whole machinery on, as
the search code builds its optimizer for the check: the in-optimizer learning rate (warm-up over 6 steps from 0,
then a half cosine to step 35), the cyclical momentum over the same 35 steps, the decays with T = 35, the search
code's Nesterov form. The recorded loss is the one computed before the 35th update.

A genome passes when that loss is below 3.5 for any learning rate in {1, 1e-1, ..., 1e-5}; if none does, the same
with the update's sign flipped, and a genome that passes only so is kept flipped. NaN or inf fails the comparison;
an exception (of any kind) fails the genome.

Why 3.5: a gradient-independent update that moves every coordinate equally reaches at best
sum(d^2) - 5 mean(d)^2 = 4.34, and pure decay of x towards 0 at best sum(b^2) = 4.59, so passing needs an update
that reacts to each coordinate's gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

from optrepro.nos.space import Genome

X0 = (1.1, 0.9, 1.1, 0.9, 1.0)
B = (0.5, 1.5, -0.3, -1.2, 0.75)
STEPS = 35
WARMUP = 6
LRS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
THRESHOLD = 3.5


@dataclass(frozen=True)
class Settings:
    """The optimizer settings the check runs a genome with (the search's; `ema_form`: see nos_expr)."""

    nesterov_form: str = "search"
    ema_form: str = "code"
    a14: str = "search"


def quadratic_loss(genome: Genome, lr: float, flip: bool, settings: Settings = Settings()) -> float:
    """The loss before the 35th update of the genome on the shifted quadratic at peak learning rate `lr`."""
    import torch

    from optrepro.optim.nos_expr import NOSExpression
    from optrepro.schedules import build_schedule

    schedule = build_schedule("warmup_hold_cosine", warmup_steps=WARMUP, hold_steps=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the dropout ops draw from torch's global generator: a fixed draw, a fixed verdict
        x = torch.tensor(X0, dtype=torch.float32, requires_grad=True)
        b = torch.tensor(B, dtype=torch.float32)
        opt = NOSExpression([x], genome=genome, lr=lr, use_decay=True, total_steps=STEPS, warmup_steps=WARMUP,
                            hold_steps=0, momentum_schedule="cyclical", nesterov_form=settings.nesterov_form,
                            a14=settings.a14, ema_form=settings.ema_form, flip=flip, foreach=False)
        loss = None
        for step in range(STEPS):
            opt.zero_grad(set_to_none=True)
            loss = ((x - b) ** 2).sum()
            loss.backward()
            opt.param_groups[0]["lr"] = lr * schedule(step, STEPS, 1)
            opt.step()
        return float(loss.detach())


def check(genome: Genome, settings: Settings = Settings()) -> tuple[bool, bool]:
    """(passed, flip): whether the genome passes, and whether only with its sign flipped."""
    try:
        for flip in (False, True):
            for lr in LRS:
                if quadratic_loss(genome, lr, flip, settings) < THRESHOLD:
                    return True, flip
    except Exception:  # the authors' check_integrity: any exception fails the genome
        return False, False
    return False, False


def checker(settings: Settings = Settings()):
    """check() with fixed settings, as optrepro.nos.search's `check` argument."""
    return lambda genome: check(genome, settings)
