"""optrepro's optimizers: `build(name, model_or_params, **hparams)` and `available()`.

Importing this package does not import torch; optimizer classes are loaded on first use,
so `from optrepro.optim import CaAdam` works as a practitioner expects.
"""
from optrepro.optim.registry import OptimizerInfo, available, build, info, register, resolve_hparams

# Public classes: name -> "module:attr", resolved lazily by __getattr__ (PEP 562).
_CLASSES: dict[str, str] = {}

__all__ = ["OptimizerInfo", "available", "build", "info", "register", "resolve_hparams", *_CLASSES]


def __getattr__(name: str):
    if name in _CLASSES:
        from optrepro.registry import import_target

        return import_target(_CLASSES[name])
    raise AttributeError(f"module 'optrepro.optim' has no attribute {name!r}")
