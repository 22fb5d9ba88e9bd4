"""The optimizer registry: metadata as plain data (imports without torch), classes imported lazily.

    build("adam", model, lr=1e-3)        -> a torch.optim.Optimizer
    available()                          -> sorted names
    info("adam").search_space["icml"]    -> the tuning space as data

Search spaces are dicts of hyperparameter -> distribution, one of
    {"type": "log_uniform", "low": a, "high": b}
    {"type": "uniform", "low": a, "high": b}
    {"type": "choice", "values": [...]}
    {"type": "one_minus_log_uniform", "low": a, "high": b}   (1 - x with x log-uniform: momenta near 1)
    {"type": "int_uniform", "low": a, "high": b}             (integers a..b, both ends included)
keyed by study version ("default", or e.g. "v1" / "icml" where Crowded Valley's two versions differ).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from optrepro.registry import Registry, check_keys, import_target, unknown


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    target: str  # "module:attr" of a class or factory called as target(params_or_model, **hparams)
    defaults: Mapping[str, Any]  # the one-shot defaults; also the set of accepted hyperparameters
    impl_version: int = 1  # bump when a fix changes numbers: it changes every run id that uses it
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    requires_closure: bool = False  # step(closure) evaluates the loss more than once
    needs_model: bool = False  # takes the nn.Module (structure-aware, e.g. CaAdam), not parameters
    paper: str = ""
    description: str = ""


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")


# the distribution types a search space may use (tests/test_optim_registry.py checks every entry)
DISTRIBUTIONS = ("log_uniform", "uniform", "choice", "one_minus_log_uniform", "int_uniform")


def register(info: OptimizerInfo) -> OptimizerInfo:
    return OPTIMIZERS.add(info.name, info)


def _load_catalogs() -> None:
    # Each catalog module only calls register(); importing it twice is harmless (modules are cached).
    from optrepro.optim import catalog  # noqa: F401


def available() -> list[str]:
    _load_catalogs()
    return OPTIMIZERS.names()


def info(name: str) -> OptimizerInfo:
    _load_catalogs()
    return OPTIMIZERS.get(name)


def resolve_hparams(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `hparams`; unknown keys are refused by name, before any compute."""
    entry = info(name)
    check_keys(f"hyperparameter for optimizer {name!r}", hparams, entry.defaults)
    return {**entry.defaults, **hparams}


def build(name: str, model_or_params, **hparams):
    """Build a registered optimizer. Pass the model for structure-aware optimizers; others accept either."""
    entry = info(name)
    resolved = resolve_hparams(name, hparams)
    target = import_target(entry.target)
    if entry.needs_model:
        if not hasattr(model_or_params, "named_parameters"):
            raise TypeError(f"optimizer {name!r} needs the nn.Module, not a parameter list")
        return target(model_or_params, **resolved)
    params = model_or_params.parameters() if hasattr(model_or_params, "named_parameters") else model_or_params
    return target(params, **resolved)


def search_space(name: str, version: str = "default") -> Mapping[str, Any]:
    """The tuning space of `name` for a study version: that version's entry, else "default"."""
    spaces = info(name).search_space
    if version in spaces:
        return spaces[version]
    if "default" in spaces:
        return spaces["default"]
    raise unknown(f"study version for optimizer {name!r}", version, spaces)
