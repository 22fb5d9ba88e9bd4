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

from optrepro import params as _params
from optrepro.registry import Registry, check_keys, import_catalogs, import_target, unknown


LR_MULTIPLIER = "lr_multiplier"  # the param-group key of lr_schedule="multiplier"
# How an outer learning-rate schedule (the spec's `schedule` and lr controllers such as reduce_on_plateau)
# reaches an optimizer's step; the training loop reads nothing else to decide.
LR_SCHEDULES = {
    "group_lr": "the step size is group['lr'] (torch's convention): the loop sets it to initial_lr * factor",
    "multiplier": "the method owns its step size and multiplies it by group['lr_multiplier'], which the loop "
                  "sets to the factor",
    "refused": "the method owns its step size and takes no outer schedule: a spec with a non-constant schedule "
               "or an lr controller is refused at plan time",
}
# What `step` needs from the caller.
CLOSURES = {
    "none": "step() after the caller's backward pass, as torch.optim.SGD",
    "loss": "step(closure): closure(backward=True) zeroes the grads, evaluates the loss and back-propagates; "
            "closure(backward=False) evaluates the loss only (a trial point); a torch-style closure without "
            "arguments is accepted too and then pays a backward pass at trial points",
    "hvp": "as 'loss', and closure(backward=True, create_graph=True) keeps the graph of the gradients, so the "
           "optimizer can take Hessian-vector products (torch.autograd.grad of <grad, v>)",
}
TRIAL_BATCHNORM = ("frozen", "moving")  # BatchNorm running statistics at trial points: restored, or left to move
PARAM_GROUPS = ("many", "one")


@dataclass(frozen=True)
class OptimizerInfo:
    """What the training loop needs to know about an optimizer, as data (tests/test_optim_registry.py checks
    each declaration against the optimizer's behaviour)."""

    name: str
    target: str  # "module:attr" of a class or factory called as target(params_or_model, **hparams)
    defaults: Mapping[str, Any]  # the one-shot defaults; also the set of accepted hyperparameters
    # what each hyperparameter accepts (optrepro.params): the ones named here; the others follow the name's
    # convention (params.CONVENTIONS: lr > 0, betas in [0, 1), ...) or their default's type. Checked at plan time.
    hparam_types: Mapping[str, _params.Param] = field(default_factory=dict)
    impl_version: int = 1  # bump when a fix changes numbers: it changes every run id that uses it
    search_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    needs_model: bool = False  # takes the nn.Module (structure-aware, e.g. CaAdam), not parameters
    lr_schedule: str = "group_lr"  # a key of LR_SCHEDULES
    # hyperparameters that are functions of the run's length: their default is None, meaning "the run's total
    # number of optimizer steps", which the training loop fills in (a spec may give a number instead)
    run_length_hparams: tuple[str, ...] = ()
    closure: str = "none"  # a key of CLOSURES
    # BatchNorm running statistics at trial points (closure optimizers): one of TRIAL_BATCHNORM, or chosen by a
    # hyperparameter: {"mode": {"clean": "frozen", "as-run": "moving"}}
    trial_batchnorm: str | Mapping[str, Mapping[Any, str]] = "frozen"
    param_groups: str = "many"  # "one": hyperparameters are global, a second param group is refused
    internals: bool = False  # has internals() -> {name: float}, which the loop logs at log points
    paper: str = ""
    description: str = ""

    def __post_init__(self):
        for what, value, choices in (("lr_schedule", self.lr_schedule, LR_SCHEDULES),
                                     ("closure", self.closure, CLOSURES),
                                     ("param_groups", self.param_groups, PARAM_GROUPS)):
            if value not in choices:
                raise unknown(f"{what} of optimizer {self.name!r}", value, choices)
        check_keys(f"declared hyperparameter (hparam_types) of optimizer {self.name!r}", self.hparam_types,
                   self.defaults)
        for key, param in self.hparam_types.items():
            param.check(f"default of hyperparameter {key!r} of optimizer {self.name!r}", self.defaults[key])
        for key in self.run_length_hparams:
            if key not in self.defaults or self.defaults[key] is not None:
                raise ValueError(f"optimizer {self.name!r}: run-length hyperparameter {key!r} needs the default "
                                 f"None in `defaults` (got {self.defaults.get(key, '<missing>')!r})")
        if isinstance(self.trial_batchnorm, str):
            if self.trial_batchnorm not in TRIAL_BATCHNORM:
                raise unknown(f"trial_batchnorm of optimizer {self.name!r}", self.trial_batchnorm, TRIAL_BATCHNORM)
        else:
            for key, table in self.trial_batchnorm.items():
                check_keys(f"hyperparameter for trial_batchnorm of optimizer {self.name!r}", [key], self.defaults)
                for value in table.values():
                    if value not in TRIAL_BATCHNORM:
                        raise unknown(f"trial_batchnorm of optimizer {self.name!r}", value, TRIAL_BATCHNORM)

    @property
    def requires_closure(self) -> bool:
        return self.closure != "none"

    @property
    def owns_step_size(self) -> bool:
        return self.lr_schedule != "group_lr"

    def trial_batchnorm_for(self, hparams: Mapping[str, Any]) -> str:
        """The BatchNorm handling at trial points for these (resolved) hyperparameters."""
        if isinstance(self.trial_batchnorm, str):
            return self.trial_batchnorm
        ((key, table),) = self.trial_batchnorm.items()
        value = hparams.get(key, self.defaults[key])
        if value not in table:
            raise unknown(f"{key} of optimizer {self.name!r}", value, table)
        return table[value]

    def hparam(self, key: str) -> _params.Param:
        """What hyperparameter `key` accepts (its declaration, the name's convention, or its default's type)."""
        return _params.declared(key, self.defaults[key], self.hparam_types)

    def check_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Refuse an unknown key, or a value of the wrong type or out of its range, naming the key."""
        check_keys(f"hyperparameter for optimizer {self.name!r}", hparams, self.defaults)
        for key, value in hparams.items():
            self.hparam(key).check(f"hyperparameter {key!r} of optimizer {self.name!r}", value, key)

    def fill_run_length(self, hparams: Mapping[str, Any], total_steps: int) -> dict[str, Any]:
        """`hparams` with every run-length hyperparameter left at None set to the run's `total_steps`."""
        return {**hparams, **{k: total_steps for k in self.run_length_hparams if hparams.get(k) is None}}


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")


# the distribution types a search space may use (tests/test_optim_registry.py checks every entry)
DISTRIBUTIONS = ("log_uniform", "uniform", "choice", "one_minus_log_uniform", "int_uniform")


def register(info: OptimizerInfo) -> OptimizerInfo:
    return OPTIMIZERS.add(info.name, info)


def _load_catalogs() -> None:
    import_catalogs("optrepro.optim")


def available() -> list[str]:
    _load_catalogs()
    return OPTIMIZERS.names()


def info(name: str) -> OptimizerInfo:
    _load_catalogs()
    return OPTIMIZERS.get(name)


def resolve_hparams(name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `hparams`; unknown keys, and values of the wrong type or out of range, are refused
    by name, before any compute (the same check as the planner's, for users who call build directly)."""
    entry = info(name)
    entry.check_hparams(hparams)
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
    """The tuning space of `name` for a study version: that version's entry, else "default". A version no
    optimizer declares is refused (a typo would otherwise fall back to "default" silently)."""
    spaces = info(name).search_space
    known = {v for other in available() for v in info(other).search_space}
    if version not in known:
        raise unknown("study version", version, known)
    if version in spaces:
        return spaces[version]
    if "default" in spaces:
        return spaces["default"]
    raise unknown(f"study version for optimizer {name!r}", version, spaces)
