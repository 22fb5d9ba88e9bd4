"""The problem registry: metadata as plain data (imports without torch), builders imported lazily.

    get("digits_mlp", "smoke")   -> a Problem (optrepro.problems.base), model/data/loss/metrics
    info("digits_mlp").defaults["smoke"]["batch_size"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from optrepro import params as _params
from optrepro.registry import Registry, check_keys, import_catalogs, import_target, unknown

SCALES = ("smoke", "full")  # the one list of scales (plan, report, paper, commands)
REQUIRED_DEFAULTS = ("batch_size", "epochs", "eval_every")  # a problem's protocol, per scale


@dataclass(frozen=True)
class ProblemInfo:
    name: str
    target: str  # "module:attr" of a Problem subclass or factory called as target(scale=..., **args)
    # Protocol defaults per scale: batch_size, epochs (or steps), weight_decay, eval_every, ...
    defaults: Mapping[str, Mapping[str, Any]]
    impl_version: int = 1  # bump when a fix changes numbers
    args: Mapping[str, Any] = field(default_factory=dict)  # accepted problem arguments and their defaults
    # what each argument accepts (optrepro.params): the ones named here; the others follow the name's convention
    # (params.CONVENTIONS: dropout in [0, 1), hidden an integer >= 1, ...) or their default's type
    arg_types: Mapping[str, _params.Param] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # data sources (optrepro.data) needed at full scale
    papers: tuple[str, ...] = ()
    # Rough seconds per epoch on the reference device of each scale: used to size batches of runs.
    cost_per_epoch_s: Mapping[str, float] = field(default_factory=lambda: {"full": 60.0, "smoke": 0.05})
    gpu: bool = False  # full scale wants a GPU
    description: str = ""
    # the names of the metrics an evaluation logs (the keys of its forward's Output.sums; logged per split as
    # "<split>/<metric>"): what a controller may monitor, checked at plan time (tests/test_problems.py checks
    # them against a forward)
    metrics: tuple[str, ...] = ("loss", "accuracy")

    def __post_init__(self):
        for scale in SCALES:  # every problem runs at both scales: a missing block would fail only at plan time
            missing = [k for k in REQUIRED_DEFAULTS if k not in self.defaults.get(scale, {})]
            if missing:
                raise ValueError(f"problem {self.name!r}: defaults[{scale!r}] lacks {', '.join(missing)} "
                                 f"(every scale of {', '.join(SCALES)} needs {', '.join(REQUIRED_DEFAULTS)})")
        check_keys(f"declared argument (arg_types) of problem {self.name!r}", self.arg_types, self.args)
        for key, param in self.arg_types.items():
            param.check(f"default of argument {key!r} of problem {self.name!r}", self.args[key])

    def arg(self, key: str) -> _params.Param:
        """What argument `key` accepts (its declaration, the name's convention, or its default's type)."""
        return _params.declared(key, self.args[key], self.arg_types)


PROBLEMS: Registry[ProblemInfo] = Registry("problem")


def register(info: ProblemInfo) -> ProblemInfo:
    return PROBLEMS.add(info.name, info)


def _load_catalogs() -> None:
    import_catalogs("optrepro.problems")


def available() -> list[str]:
    _load_catalogs()
    return PROBLEMS.names()


def info(name: str) -> ProblemInfo:
    _load_catalogs()
    return PROBLEMS.get(name)


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise unknown("scale", scale, SCALES)


def resolve_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `args`; an unknown key, or a value of the wrong type or out of range, is refused by
    name before any compute."""
    entry = info(name)
    check_keys(f"argument for problem {name!r}", args, entry.args)
    for key, value in args.items():
        entry.arg(key).check(f"argument {key!r} of problem {name!r}", value, key)
    return {**entry.args, **{key: entry.arg(key).normalize(value) for key, value in args.items()}}


def get(name: str, scale: str, **args):
    """Build problem `name` at `scale` ("full" or "smoke")."""
    check_scale(scale)
    entry = info(name)
    return import_target(entry.target)(scale=scale, **resolve_args(name, args))
