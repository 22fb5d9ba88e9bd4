"""Learning-rate schedules.

Open-loop schedules are pure functions of the step: `build_schedule(name, **args)` returns
f(step, total_steps, steps_per_epoch) -> factor, multiplied into each param group's initial lr.
Closed-loop controllers (reduce-on-plateau, early stopping) are objects that observe evaluation metrics;
their state is plain ints/floats/bools so checkpoints load with torch.load(weights_only=True).
This module imports without torch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from optrepro.registry import Registry, check_keys

ScheduleFn = Callable[[int, int, int], float]

# name -> (factory(**args) -> ScheduleFn, default args)
SCHEDULES: Registry[tuple[Callable[..., ScheduleFn], dict[str, Any]]] = Registry("schedule")


def register_schedule(name: str, defaults: Mapping[str, Any]):
    def wrap(factory):
        SCHEDULES.add(name, (factory, dict(defaults)))
        return factory

    return wrap


def build_schedule(name: str, **args) -> ScheduleFn:
    factory, defaults = SCHEDULES.get(name)
    check_keys(f"argument for schedule {name!r}", args, defaults)
    return factory(**{**defaults, **args})


@register_schedule("constant", {})
def constant() -> ScheduleFn:
    return lambda step, total_steps, steps_per_epoch: 1.0


@register_schedule("cosine", {"min_factor": 0.0})
def cosine(min_factor: float) -> ScheduleFn:
    def f(step: int, total_steps: int, steps_per_epoch: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# --- closed-loop controllers -----------------------------------------------------------------------

class Controller:
    """Observes metrics after each evaluation; exposes `lr_factor` and `should_stop`."""

    lr_factor: float = 1.0
    should_stop: bool = False

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        vars(self).update(state)


CONTROLLERS: Registry[tuple[type, dict[str, Any]]] = Registry("controller")


def register_controller(name: str, defaults: Mapping[str, Any]):
    def wrap(cls):
        CONTROLLERS.add(name, (cls, dict(defaults)))
        return cls

    return wrap


def build_controller(name: str, **args) -> Controller:
    cls, defaults = CONTROLLERS.get(name)
    check_keys(f"argument for controller {name!r}", args, defaults)
    return cls(**{**defaults, **args})


@register_controller("reduce_on_plateau",
                     {"monitor": "valid/loss", "mode": "min", "factor": 0.1, "patience": 10, "min_delta": 1e-4,
                      "cooldown": 0, "min_lr_factor": 0.0})
class ReduceOnPlateau(Controller):
    """Keras-style ReduceLROnPlateau: after `patience` evaluations without improvement, lr *= factor."""

    def __init__(self, monitor, mode, factor, patience, min_delta, cooldown, min_lr_factor):
        self.monitor, self.mode, self.factor = monitor, mode, float(factor)
        self.patience, self.min_delta, self.cooldown = int(patience), float(min_delta), int(cooldown)
        self.min_lr_factor = float(min_lr_factor)
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_left = 0
        self.lr_factor = 1.0
        self.should_stop = False

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> None:
        value = float(metrics[self.monitor])
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self._improved(value):
            self.best = value
            self.wait = 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self.lr_factor = max(self.lr_factor * self.factor, self.min_lr_factor)
                self.cooldown_left = self.cooldown
                self.wait = 0
