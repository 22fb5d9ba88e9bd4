"""What a hyperparameter or a problem argument accepts, declared as data and checked at plan time. Torch-free.

    LR = positive()                                  # a number > 0 (a boolean is not a number)
    unit_interval(high_open=True)                    # [0, 1)
    integer(low=1)                                   # 1, 2, ... (not 2.0, not True)
    choice("tf1", "torch")                           # one of these values
    pair(unit_interval(high_open=True))              # a list of two such numbers (Adam's betas)

An optimizer's entry declares its hyperparameters in `OptimizerInfo.hparam_types`, a problem's its arguments in
`ProblemInfo.arg_types`. A name an entry does not declare falls back to CONVENTIONS (names that mean the same
for every optimizer or problem: lr, eps, beta1, dropout, ...), then to the type of its default (a boolean
default takes booleans, an integer default integers, a float default numbers, a string default strings).
`declared(...)` picks the declaration; `Param.check` refuses a value with a message that names the key, the value
and what is valid.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Mapping

KINDS = ("number", "integer", "bool", "string", "choice", "list", "mapping", "any")


@dataclass(frozen=True)
class Param:
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False
    choices: tuple = ()
    nullable: bool = False  # None is accepted (it means something, e.g. "the run's length")
    item: "Param | None" = None  # kind "list": what each item accepts
    length: int | None = None  # kind "list": exactly this many items
    pattern: str | None = None  # kind "string": a regular expression the whole string matches
    note: str = ""  # what None or the value means, for the message

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown parameter kind {self.kind!r}; valid: {', '.join(KINDS)}")

    # --- what is valid, in words ------------------------------------------------------------------------
    def describe(self) -> str:
        if self.kind in ("number", "integer"):
            noun = "an integer" if self.kind == "integer" else "a number"
            text = noun + self._range()
        elif self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "list":
            count = f"{self.length} " if self.length is not None else ""
            text = f"a list of {count}items, each {self.item.describe() if self.item else 'anything'}"
        elif self.kind == "string" and self.pattern:
            text = f"a string matching {self.pattern}"
        else:
            text = {"bool": "true or false", "string": "a string", "mapping": "a mapping",
                    "any": "anything"}[self.kind]
        if self.nullable:
            text += " or null"
        return text + (f" ({self.note})" if self.note else "")

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is None and hi is None:
            return ""
        if hi is None:
            return f" {'>' if self.low_open else '>='} {lo:g}"
        if lo is None:
            return f" {'<' if self.high_open else '<='} {hi:g}"
        return f" in {'(' if self.low_open else '['}{lo:g}, {hi:g}{')' if self.high_open else ']'}"

    # --- the check --------------------------------------------------------------------------------------
    def problem(self, value: Any) -> str | None:
        """None when `value` is valid, else what is wrong with it (a phrase)."""
        if value is None:
            return None if self.nullable or self.kind == "any" else "null"
        if self.kind == "any":
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else _what(value)
        if isinstance(value, bool) and self.kind in ("number", "integer", "string", "list", "mapping"):
            return "a boolean"
        if self.kind == "number":
            number = _as_number(value)
            if number is None:
                return _what(value)
            return self._out_of_range(number)
        if self.kind == "integer":
            if not isinstance(value, numbers.Integral):
                return _what(value)
            return self._out_of_range(int(value))
        if self.kind == "choice":
            return None if _in(value, self.choices) else "not a valid choice"
        if self.kind == "string":
            if not isinstance(value, str):
                return _what(value)
            if self.pattern and not re.fullmatch(self.pattern, value):
                return "a string of the wrong form"
            return None
        if self.kind == "mapping":
            return None if isinstance(value, Mapping) else _what(value)
        if self.kind == "list":
            if not isinstance(value, (list, tuple)):
                return _what(value)
            if self.length is not None and len(value) != self.length:
                return f"a list of {len(value)} items"
            for i, v in enumerate(value):
                bad = self.item.problem(v) if self.item else None
                if bad:
                    return f"a list whose item {i} ({v!r}) is {bad}"
            return None
        raise AssertionError(self.kind)

    def normalize(self, value: Any) -> Any:
        """A valid `value` in the type the code computes with: a number YAML left as a string (`1e-4`) becomes a
        float, in lists too, so that a spec holds (and its run id hashes) the same value either way."""
        if self.kind == "number" and isinstance(value, str):
            return float(value)
        if self.kind == "list" and self.item is not None and isinstance(value, (list, tuple)):
            return [self.item.normalize(v) for v in value]
        return value

    def _out_of_range(self, x: float) -> str | None:
        if not math.isfinite(x):
            return "not finite"
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return "out of range"
        if self.high is not None and (x > self.high or (self.high_open and x == self.high)):
            return "out of range"
        return None

    def check(self, what: str, value: Any, key: str = "value") -> None:
        """Refuse `value` with a message naming `what` (e.g. "hyperparameter 'lr' of optimizer 'adam'"); a value
        outside a choice gets the project's unknown-name message (`key` names it), with the closest choice."""
        bad = self.problem(value)
        if bad is None:
            return
        if self.kind == "choice" and value is not None:
            from optrepro.registry import UnknownNameError, unknown

            raise UnknownNameError(f"{what}: {unknown(key, value, self.choices)}")
        raise ValueError(f"{what}: {value!r} is {bad}; valid: {self.describe()}")


def _what(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, numbers.Number):
        return "a number" if not isinstance(value, numbers.Integral) else "an integer"
    return f"of type {type(value).__name__}"


def _as_number(value: Any) -> float | None:
    """A real number, or a string YAML left unparsed that reads as one (YAML 1.1 reads `1e-3` as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _in(value: Any, choices: tuple) -> bool:
    # True == 1 in Python: a choice between numbers must not take a boolean, nor a choice of booleans a number
    return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)


# --- constructors ---------------------------------------------------------------------------------------

def number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           nullable: bool = False, note: str = "") -> Param:
    return Param("number", low, high, low_open, high_open, nullable=nullable, note=note)


def positive(nullable: bool = False, note: str = "") -> Param:
    return number(0.0, low_open=True, nullable=nullable, note=note)


def non_negative() -> Param:
    return number(0.0)


def unit_interval(*, low_open: bool = False, high_open: bool = False) -> Param:
    return number(0.0, 1.0, low_open=low_open, high_open=high_open)


def integer(low: int | None = None, high: int | None = None, *, nullable: bool = False, note: str = "") -> Param:
    return Param("integer", low, high, nullable=nullable, note=note)


def boolean() -> Param:
    return Param("bool")


def choice(*values: Any) -> Param:
    return Param("choice", choices=tuple(values))


def string(pattern: str | None = None, note: str = "") -> Param:
    return Param("string", pattern=pattern, note=note)


def pair(item: Param) -> Param:
    return Param("list", item=item, length=2)


def mapping() -> Param:
    return Param("mapping")


ANY = Param("any")
DECAY = unit_interval(high_open=True)  # an exponential moving average's factor: 1 would never move

# Names that mean the same wherever they appear (an entry's own declaration wins).
CONVENTIONS: Mapping[str, Param] = {
    "lr": positive(),
    "weight_decay": non_negative(),
    "eps": non_negative(),
    **{name: DECAY for name in ("beta", "beta1", "beta2", "beta3", "beta_b", "beta_s", "rho", "smoothing",
                                "loss_ema", "beta3_min", "beta3_max")},
    "betas": pair(DECAY),
    "momentum": unit_interval(),
    "alpha": unit_interval(),
    "initial_accumulator_value": non_negative(),
    "final_lr": positive(),
    "init_step_size": positive(),
    "total_steps": integer(1, nullable=True, note="null: the run's number of optimizer steps"),
    "warmup_steps": integer(0),
    "hold_steps": integer(0),
    "seed": integer(0),
    # problem arguments
    "dropout": unit_interval(high_open=True),
    "label_smoothing": unit_interval(high_open=True),
    "validation_split": unit_interval(low_open=True, high_open=True),
    "l2": non_negative(),
    "image_size": integer(0),
    "hidden": integer(1),
    "valid_images": integer(0),
    "epoch_examples": integer(0),
    "block_size": integer(0),
    "hessian_instance": integer(0),
    "order_seed": integer(0, nullable=True, note="null: the run's data seed"),
    "train_crop": choice("random_resized", "resize_random"),
    "shuffle": boolean(),
}


def infer(default: Any) -> Param:
    """The declaration a default implies when nothing else declares it."""
    if isinstance(default, bool):
        return boolean()
    if isinstance(default, numbers.Integral):
        return integer()
    if isinstance(default, numbers.Real):
        return number()
    if isinstance(default, str):
        return string()
    if isinstance(default, (list, tuple)):
        return Param("list", item=infer(default[0]) if default else None, length=len(default))
    if isinstance(default, Mapping):
        return mapping()
    return ANY


def declared(name: str, default: Any, own: Mapping[str, Param] | None = None) -> Param:
    """The declaration of `name`: the entry's own, else the convention for the name, else what its default
    implies."""
    if own and name in own:
        return own[name]
    if name in CONVENTIONS:
        return CONVENTIONS[name]
    return infer(default)


def loose(default: Any) -> Param:
    """The kind of a schedule's or controller's argument, from its default: numbers (integer or not) take any
    number, never a boolean; their factories check the range."""
    if isinstance(default, numbers.Real) and not isinstance(default, bool):
        return number()
    return infer(default)
