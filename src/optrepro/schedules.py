"""Learning-rate schedules.

Open-loop schedules are pure functions of the step: `build_schedule(name, **args)` returns
f(step, total_steps, steps_per_epoch) -> factor, multiplied into each param group's initial lr.
Closed-loop controllers (reduce-on-plateau, early stopping) are objects that observe evaluation metrics;
their state is plain ints/floats/bools/str so checkpoints load with torch.load(weights_only=True).
This module imports without torch.

Epoch-wise schedules (unit="epoch") follow DeepOBS, which produced the Crowded Valley logs: the factor f(e) is
set at the start of epoch e = step // steps_per_epoch and held for the whole epoch, with E = total_steps //
steps_per_epoch epochs. DeepOBS's `make_lr_schedule` always inserts {0: 1.0}, so epoch 0 runs at the full lr
whatever the formula says (`deepobs_epoch0=True`); this matters for the trapezoid, whose formula gives 0 at e=0.
Step-wise schedules (unit="step") evaluate the same formula at the fractional epoch step / steps_per_epoch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from optrepro.registry import Registry, check_keys, unknown

ScheduleFn = Callable[[int, int, int], float]

# name -> (factory(**args) -> ScheduleFn, default args)
SCHEDULES: Registry[tuple[Callable[..., ScheduleFn], dict[str, Any]]] = Registry("schedule")
UNITS = ("step", "epoch")


def register_schedule(name: str, defaults: Mapping[str, Any]):
    def wrap(factory):
        SCHEDULES.add(name, (factory, dict(defaults)))
        return factory

    return wrap


def build_schedule(name: str, **args) -> ScheduleFn:
    factory, defaults = SCHEDULES.get(name)
    check_keys(f"argument for schedule {name!r}", args, defaults)
    return factory(**{**defaults, **args})


def _check_choice(what: str, value: Any, choices) -> None:
    if value not in choices:
        raise unknown(what, value, choices)


def _check_range(what: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value!r}")


def _epoch_wise(formula: Callable[[float, float], float], unit: str, deepobs_epoch0: bool) -> ScheduleFn:
    """Turn formula(epoch, num_epochs) into f(step, total_steps, steps_per_epoch)."""
    _check_choice("schedule unit", unit, UNITS)

    def f(step: int, total_steps: int, steps_per_epoch: int) -> float:
        if steps_per_epoch < 1 or total_steps < 1:
            raise ValueError(f"schedule needs steps_per_epoch >= 1 and total_steps >= 1, got "
                             f"total_steps={total_steps}, steps_per_epoch={steps_per_epoch}")
        if unit == "step":
            return formula(step / steps_per_epoch, total_steps / steps_per_epoch)
        epoch = step // steps_per_epoch
        if deepobs_epoch0 and epoch == 0:
            return 1.0
        return formula(epoch, max(total_steps // steps_per_epoch, 1))

    return f


@register_schedule("constant", {})
def constant() -> ScheduleFn:
    return lambda step, total_steps, steps_per_epoch: 1.0


def _half_cosine(progress: float, min_factor: float) -> float:
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@register_schedule("cosine", {"min_factor": 0.0, "unit": "step", "deepobs_epoch0": True})
def cosine(min_factor: float, unit: str, deepobs_epoch0: bool) -> ScheduleFn:
    """f = min + (1 - min) (1 + cos(pi e / E)) / 2; Crowded Valley's `cosine` is unit="epoch"."""
    _check_range("cosine min_factor", min_factor, 0.0, 1.0)
    return _epoch_wise(lambda e, num_epochs: _half_cosine(e / num_epochs, min_factor), unit, deepobs_epoch0)


def warm_restart_cycle(epoch: float, t0: float, t_mult: float) -> tuple[float, float]:
    """(start, length) of the SGDR cycle holding `epoch`: cycles of t0, t0 t_mult, t0 t_mult^2, ..."""
    start, length = 0.0, float(t0)
    while epoch >= start + length:
        start += length
        length *= t_mult
    return start, length


@register_schedule("cosine_wr", {"t0_epochs": 10, "t_mult": 2, "min_factor": 0.0, "unit": "epoch",
                                 "deepobs_epoch0": True})
def cosine_wr(t0_epochs: float, t_mult: float, min_factor: float, unit: str, deepobs_epoch0: bool) -> ScheduleFn:
    """SGDR (Loshchilov & Hutter): f = min + (1 - min) (1 + cos(pi (e - s) / T)) / 2 in the cycle [s, s + T).

    The cycles are not fitted to the run (Crowded Valley: T0 = 10 epochs, T_mult = 2, restarts at 0, 10, 30, 70,
    150, 310), so most runs stop mid-cycle at a high lr. No decay of the peak between cycles.
    """
    if t0_epochs <= 0 or t_mult < 1:
        raise ValueError(f"cosine_wr needs t0_epochs > 0 and t_mult >= 1, got t0_epochs={t0_epochs}, "
                         f"t_mult={t_mult}")
    _check_range("cosine_wr min_factor", min_factor, 0.0, 1.0)

    def formula(epoch: float, num_epochs: int) -> float:
        start, length = warm_restart_cycle(epoch, t0_epochs, t_mult)
        return _half_cosine((epoch - start) / length, min_factor)

    return _epoch_wise(formula, unit, deepobs_epoch0)


@register_schedule("trapezoid", {"warmup_fraction": 0.1, "unit": "epoch", "deepobs_epoch0": True})
def trapezoid(warmup_fraction: float, unit: str, deepobs_epoch0: bool) -> ScheduleFn:
    """Crowded Valley's `ltr`: w = warmup_fraction E; f(e) = min(e / w, 1, (E + 1 - e) / (w + 1)).

    E = 100: 0.1, 0.2, ..., 1.0 at e = 1..10, flat, then 10/11 ... 1/11 at e = 91..100. Under DeepOBS's epoch-0
    rule the first epoch runs at the full lr before the warm-up starts (the published runs did this).
    """
    _check_range("trapezoid warmup_fraction", warmup_fraction, 1e-12, 0.5)

    def formula(epoch: float, num_epochs: int) -> float:
        width = warmup_fraction * num_epochs
        return max(0.0, min(epoch / width, 1.0, (num_epochs + 1 - epoch) / (width + 1)))

    return _epoch_wise(formula, unit, deepobs_epoch0)


@register_schedule("warmup_cosine", {"warmup_steps": 0, "warmup_fraction": 0.0, "min_factor": 0.0})
def warmup_cosine(warmup_steps: int, warmup_fraction: float, min_factor: float) -> ScheduleFn:
    """Linear warm-up over W steps (factor (step + 1) / W, so the first step is not wasted at lr 0), then a
    half cosine from 1 to min_factor over the remaining steps. W = warmup_steps + warmup_fraction * total_steps
    (give one of the two)."""
    if warmup_steps < 0 or int(warmup_steps) != warmup_steps:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    _check_range("warmup_cosine warmup_fraction", warmup_fraction, 0.0, 1.0)
    _check_range("warmup_cosine min_factor", min_factor, 0.0, 1.0)

    def f(step: int, total_steps: int, steps_per_epoch: int) -> float:
        warmup = int(warmup_steps) + int(round(warmup_fraction * total_steps))
        if step < warmup:
            return (step + 1) / warmup
        return _half_cosine((step - warmup) / max(total_steps - warmup, 1), min_factor)

    return f



@register_schedule("warmup_hold_cosine", {"warmup_steps": 0, "hold_steps": 0})
def warmup_hold_cosine(warmup_steps: int, hold_steps: int) -> ScheduleFn:
    """The NOS authors' LR factor (lr_warmup_cosine_decay in their code): step / W over the W warm-up steps (0 at
    step 0, as theirs), 1 through step W + H, then a half cosine to 0 at total_steps. NOSExpression's cyclical
    momentum takes the same warmup_steps and hold_steps (hold_steps there)."""
    for what, value in (("warmup_steps", warmup_steps), ("hold_steps", hold_steps)):
        if value < 0 or int(value) != value:
            raise ValueError(f"warmup_hold_cosine {what} must be an integer >= 0, got {value!r}")

    def f(step: int, total_steps: int, steps_per_epoch: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        if step <= warmup_steps + hold_steps:
            return 1.0
        return _half_cosine((step - warmup_steps - hold_steps) / (total_steps - warmup_steps - hold_steps), 0.0)

    return f

# --- closed-loop controllers -----------------------------------------------------------------------

class Controller:
    """Observes metrics after each evaluation; exposes `lr_factor` and `should_stop`.

    `observe(epoch, metrics)` gets the loop's epoch count: the number of training epochs completed, 0 for the
    evaluation of the initial weights (train.py evaluates before training starts). All attributes are plain
    ints/floats/bools/str, so `state_dict()` is the whole state."""

    lr_factor: float = 1.0
    should_stop: bool = False
    changes_lr: bool = False  # class-level: whether lr_factor can move (an outer lr schedule, for the plan)

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unexpected = set(state) - set(vars(self))
        if unexpected:
            raise KeyError(f"{type(self).__name__} state has unknown keys {sorted(unexpected)}; "
                           f"valid: {', '.join(sorted(vars(self)))}")
        vars(self).update(state)


CONTROLLERS: Registry[tuple[type, dict[str, Any]]] = Registry("controller")
MODES = ("min", "max", "auto")


def register_controller(name: str, defaults: Mapping[str, Any]):
    def wrap(cls):
        CONTROLLERS.add(name, (cls, dict(defaults)))
        return cls

    return wrap


def controller_changes_lr(name: str) -> bool:
    return CONTROLLERS.get(name)[0].changes_lr


def build_controller(name: str, **args) -> Controller:
    cls, defaults = CONTROLLERS.get(name)
    check_keys(f"argument for controller {name!r}", args, defaults)
    return cls(**{**defaults, **args})


MONITOR_SPLITS = ("train", "valid", "test")


def _monitor(controller: str, monitor: Any) -> str:
    """A monitored metric, "<split>/<metric>" as the loop logs it; refused at plan time, not at the first
    evaluation. The metric's name is checked against the problem's declared metrics by plan.make_spec."""
    split, _, metric = str(monitor).partition("/")
    if split not in MONITOR_SPLITS or not metric:
        raise ValueError(f"{controller} monitor {monitor!r}: expected '<split>/<metric>' (e.g. 'valid/loss'), "
                         f"split one of {', '.join(MONITOR_SPLITS)}")
    return str(monitor)


def _count(controller: str, key: str, value: Any, low: int = 0) -> int:
    """An epoch count: an integer (2.0 is 2; 2.5 is refused rather than silently truncated) of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) \
            or int(value) < low:
        raise ValueError(f"{controller} {key} must be an integer >= {low}, got {value!r}")
    return int(value)


def _resolve_mode(mode: str, monitor: str) -> str:
    """Keras's mode="auto": maximise metrics named like accuracy, minimise the rest."""
    _check_choice("controller mode", mode, MODES)
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


class _Monitor(Controller):
    """Shared by the Keras-style controllers: which metric, which direction, how much counts as better.

    Keras calls on_epoch_end(k) after the k-th epoch, 0-based, and never sees the initial weights; the loop
    calls observe(epoch) with epochs completed, 0 being the initial evaluation. So these controllers skip
    epoch 0 and count in Keras's index k = epoch - 1 (`_keras_epoch`): patience, start_from_epoch and the
    cut points are Keras's, epoch for epoch.
    """

    @staticmethod
    def _keras_epoch(epoch: int) -> int:
        return int(epoch) - 1

    def __init__(self, monitor: str, mode: str, min_delta: float):
        self.monitor = _monitor(type(self).__name__, monitor)
        self.mode = _resolve_mode(mode, self.monitor)
        self.min_delta = abs(float(min_delta))
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.lr_factor = 1.0
        self.should_stop = False

    def _value(self, metrics: Mapping[str, float]) -> float:
        if self.monitor not in metrics:
            raise KeyError(f"controller monitors {self.monitor!r}, which is not among the evaluated metrics: "
                           f"{', '.join(sorted(metrics))}")
        return float(metrics[self.monitor])

    def _improved(self, value: float, reference: float) -> bool:
        # NaN compares False: a NaN evaluation counts as "no improvement", as in Keras
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta


@register_controller("reduce_on_plateau",
                     {"monitor": "valid/loss", "mode": "auto", "factor": 0.1, "patience": 10, "min_delta": 1e-4,
                      "cooldown": 0, "min_lr_factor": 0.0})
class ReduceOnPlateau(_Monitor):
    """tf.keras.callbacks.ReduceLROnPlateau, step for step (its on_epoch_end), with the lr as a factor:

    - while cooling down, each evaluation decrements the cooldown counter and resets `wait`;
    - an improvement (beyond min_delta) resets `wait`; otherwise, if not (still) cooling down, `wait` += 1;
    - when `wait` reaches `patience` and the factor is above min_lr_factor: factor = max(factor * factor_,
      min_lr_factor), cooldown starts, `wait` = 0. At the floor nothing is reset, as in Keras.
    """

    changes_lr = True

    def __init__(self, monitor, mode, factor, patience, min_delta, cooldown, min_lr_factor):
        super().__init__(monitor, mode, min_delta)
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"reduce_on_plateau factor must be in (0, 1), got {factor!r}")
        if float(min_lr_factor) < 0:
            raise ValueError(f"reduce_on_plateau needs min_lr_factor >= 0, got {min_lr_factor!r}")
        self.factor = float(factor)
        self.patience = _count("reduce_on_plateau", "patience", patience)
        self.cooldown = _count("reduce_on_plateau", "cooldown", cooldown)
        self.min_lr_factor = float(min_lr_factor)
        self.cooldown_counter = 0
        self.reductions = 0

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> None:
        value = self._value(metrics)  # a missing metric fails at the initial evaluation already
        if self._keras_epoch(epoch) < 0:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value, self.best):
            self.best = value
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and self.lr_factor > self.min_lr_factor:
                self.lr_factor = max(self.lr_factor * self.factor, self.min_lr_factor)
                self.reductions += 1
                self.cooldown_counter = self.cooldown
                self.wait = 0


@register_controller("early_stopping",
                     {"monitor": "valid/loss", "mode": "auto", "patience": 0, "min_delta": 0.0,
                      "baseline": None, "start_from_epoch": 0})
class EarlyStopping(_Monitor):
    """keras.callbacks.EarlyStopping (Keras 3's on_epoch_end), with Keras's epoch index k = epoch - 1:

    - evaluations with k < start_from_epoch are ignored (California's start_from_epoch=12 ignores the first
      12 trained epochs);
    - each observed evaluation adds 1 to `wait`; an improvement over the best so far (beyond min_delta)
      records it as best (`best_epoch`, in the loop's epoch count) and resets `wait`, unless a `baseline` is
      given and not beaten;
    - otherwise training stops once `wait` >= patience (and k > 0), so it runs `patience` evaluations past the
      best one: Keras's len(history) = best epoch + patience.
    Weight restoring is the training loop's business: result.json's at_best_valid holds the evaluation with the
    lowest validation loss (`best_epoch` is the one Keras restores, which also honours min_delta).
    """

    def __init__(self, monitor, mode, patience, min_delta, baseline, start_from_epoch):
        super().__init__(monitor, mode, min_delta)
        self.patience = _count("early_stopping", "patience", patience)
        self.start_from_epoch = _count("early_stopping", "start_from_epoch", start_from_epoch)
        self.baseline = None if baseline is None else float(baseline)
        self.best_epoch = -1
        self.stopped_epoch = -1

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> None:
        value = self._value(metrics)
        k = self._keras_epoch(epoch)
        if k < 0 or k < self.start_from_epoch or self.should_stop:
            return
        self.wait += 1
        if self._improved(value, self.best):
            self.best = value
            self.best_epoch = int(epoch)
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and k > 0:
            self.should_stop = True
            self.stopped_epoch = int(epoch)


@register_controller("threshold_stop", {"monitor": "train/accuracy", "threshold": 0.25, "start_from_epoch": 1})
class ThresholdStop(Controller):
    """Stop a run whose metric is still below `threshold` at an evaluation of epoch >= start_from_epoch (epochs
    count from 1 at the end of the first; NaN compares False and does not stop, as in Keras). The NOS search's FiveEpochCallback: its Keras
    epoch index k (from 0) is epoch k + 1 here, so FiveEpochCallback(epoch=2) is start_from_epoch=3."""

    def __init__(self, monitor, threshold, start_from_epoch):
        self.start_from_epoch = _count("threshold_stop", "start_from_epoch", start_from_epoch, low=1)
        self.monitor = _monitor("threshold_stop", monitor)
        self.threshold = float(threshold)
        self.stopped_epoch = -1
        self.lr_factor = 1.0
        self.should_stop = False

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.monitor not in metrics:
            raise KeyError(f"controller monitors {self.monitor!r}, which is not among the evaluated metrics: "
                           f"{', '.join(sorted(metrics))}")
        if epoch < self.start_from_epoch or self.should_stop:
            return
        if float(metrics[self.monitor]) < self.threshold:
            self.should_stop = True
            self.stopped_epoch = int(epoch)
