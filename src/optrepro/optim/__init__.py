"""optrepro's optimizers: `build(name, model_or_params, **hparams)` and `available()`.

Importing this package does not import torch; optimizer classes are loaded on first use,
so `from optrepro.optim import CaAdam` works as a practitioner expects.
"""
from optrepro.optim.registry import OptimizerInfo, available, build, info, register, resolve_hparams

# Public classes: name -> "module:attr", resolved lazily by __getattr__ (PEP 562).
_CLASSES: dict[str, str] = {
    # Crowded Valley (optrepro.optim.{adabelief,adabound,lookahead,tf1})
    "AdaBelief": "optrepro.optim.adabelief:AdaBelief",
    "AdaBound": "optrepro.optim.adabound:AdaBound",
    "AMSBound": "optrepro.optim.adabound:AMSBound",
    "Lookahead": "optrepro.optim.lookahead:Lookahead",
    "EpsHatAdam": "optrepro.optim.tf1:EpsHatAdam",
    "TF1Nadam": "optrepro.optim.tf1:TF1Nadam",
    "TF1RMSprop": "optrepro.optim.tf1:TF1RMSprop",
    # Keras 3 semantics (optrepro.optim.keras): the CaAdam notebooks' baselines
    "KerasAdamax": "optrepro.optim.keras:KerasAdamax",
    # The papers' own optimizers (optrepro.optim.{caadam,line_search,nos_expr,fuzzy})
    "CaAdam": "optrepro.optim.caadam:CaAdam",
    "SLS": "optrepro.optim.line_search:SLS",
    "AdaSLS": "optrepro.optim.line_search:AdaSLS",
    "AdamSLS": "optrepro.optim.line_search:AdamSLS",
    "ALSALS": "optrepro.optim.line_search:ALSALS",
    "NOSExpression": "optrepro.optim.nos_expr:NOSExpression",
    "FuzzySecondOrder": "optrepro.optim.fuzzy:FuzzySecondOrder",
    # prior art of the fuzzy section (optrepro.optim.adahessian)
    "AdaHessian": "optrepro.optim.adahessian:AdaHessian",
}

__all__ = ["OptimizerInfo", "available", "build", "info", "register", "resolve_hparams", *_CLASSES]


def __getattr__(name: str):
    if name in _CLASSES:
        from optrepro.registry import import_target

        return import_target(_CLASSES[name])
    raise AttributeError(f"module 'optrepro.optim' has no attribute {name!r}")
