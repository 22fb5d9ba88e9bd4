"""Registry entries for the fifteen Crowded Valley optimizers (Schmidt, Schneider, Hennig; torch-free metadata).

Defaults are the one-shot settings of the published runs (the `results_main/oneshot/*` folder names), with the
TensorFlow-1 semantics those runs had (`semantics="tf1"`, AdaGrad's 0.1 accumulator, TF's AdaDelta defaults).
Search spaces are the random-search distributions, keyed by study version where the two versions differ:
"v1" (arXiv v1 / ICLR submission, 14 optimizers) and "icml" (ICML 2021, +AdaBelief); "default" otherwise.
Only the momentum-type parameters changed: v1 drew mu ~ LU(1e-3, 1) (mass near 0), ICML draws 1 - mu ~ LU(1e-4, 1)
(mass near 1), from the same uniform draw. AdaBelief exists only in the ICML study.
The ranges of betas, final_lr, gamma, alpha and k are the sample ranges observed in the logs (the paper's table
could not be read).
"""
from optrepro.optim.registry import OptimizerInfo, register
from optrepro.params import choice, integer, positive

PAPER = "crowded_valley"
_F = "optrepro.optim.crowded_valley:"

LR = {"type": "log_uniform", "low": 1e-4, "high": 1.0}
BETA1 = {"type": "log_uniform", "low": 0.5, "high": 0.999}
BETA2 = {"type": "log_uniform", "low": 0.8, "high": 0.999}
MOMENTUM_V1 = {"type": "log_uniform", "low": 1e-3, "high": 1.0}
MOMENTUM_ICML = {"type": "one_minus_log_uniform", "low": 1e-4, "high": 1.0}
LOOKAHEAD = {"alpha": {"type": "log_uniform", "low": 1e-4, "high": 1.0},
             "k": {"type": "int_uniform", "low": 1, "high": 19}}  # observed 1..19: scipy randint(1, 20) reading
BOUNDS = {"final_lr": {"type": "log_uniform", "low": 1e-3, "high": 0.5},
          "gamma": {"type": "log_uniform", "low": 1e-4, "high": 0.1}}


def _momentum_spaces(name: str, **rest) -> dict:
    """The v1/icml pair for an optimizer whose momentum-type hyperparameter `name` is tuned."""
    return {"v1": {**rest, name: MOMENTUM_V1}, "icml": {**rest, name: MOMENTUM_ICML}}


# impl_version 2 (checked against the published curves, paper/ambiguity/crowded_valley.yaml): AdaBelief
# rectifies (cv-adabelief-rectify), both Lookaheads count as the TF-1 wrapper did (cv-lookahead-tf1-semantics).
IMPL_VERSION = {"adabelief": 2, "lookahead_momentum": 2, "lookahead_radam": 2}


# What the hyperparameters without a shared convention accept (optrepro.params.CONVENTIONS has lr, betas, ...):
# semantics as optim/crowded_valley.py's SEMANTICS, Lookahead's k (steps between syncs), AdaBound's gamma (the
# bounds' convergence speed).
HPARAM_TYPES = {"semantics": choice("tf1", "torch"), "k": integer(1), "gamma": positive()}


def _cv(name, factory, defaults, search_space, description):
    register(OptimizerInfo(name=name, target=_F + factory, defaults=defaults, impl_version=IMPL_VERSION.get(name, 1),
                           search_space=search_space, paper=PAPER, description=description,
                           hparam_types={k: t for k, t in HPARAM_TYPES.items() if k in defaults}))


ADAM_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "semantics": "tf1"}

_cv("sgd", "sgd", {"lr": 1e-2, "weight_decay": 0.0}, {"default": {"lr": LR}},
    "plain SGD (GradientDescentOptimizer; torch.optim.SGD)")
_cv("momentum", "momentum", {"lr": 1e-2, "momentum": 0.99, "weight_decay": 0.0},
    _momentum_spaces("momentum", lr=LR), "heavy-ball momentum (MomentumOptimizer; torch.optim.SGD)")
_cv("nag", "nag", {"lr": 1e-2, "momentum": 0.99, "weight_decay": 0.0},
    _momentum_spaces("momentum", lr=LR), "Nesterov momentum (NAGOptimizer; torch.optim.SGD nesterov=True)")
_cv("adam", "adam", dict(ADAM_DEFAULTS), {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2}},
    "Adam (AdamOptimizer; semantics tf1: eps hat, torch: torch.optim.Adam)")
_cv("amsgrad", "amsgrad", {**ADAM_DEFAULTS, "lr": 1e-2}, {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2}},
    "AMSGrad (AMSGrad; torch.optim.Adam amsgrad=True, eps hat under tf1)")
_cv("nadam", "nadam", {**ADAM_DEFAULTS, "eps": 1e-7}, {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2}},
    "NAdam (NadamOptimizer; tf1: tf.contrib.opt Nesterov-Adam, torch: torch.optim.NAdam)")
_cv("radam", "radam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0},
    {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2}}, "RAdam (RAdamOptimizer; torch.optim.RAdam)")
_cv("adabelief", "adabelief",
    {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-14, "weight_decay": 0.0, "rectify": True},
    {"icml": {"lr": LR, "beta1": BETA1, "beta2": BETA2}}, "AdaBelief (AdaBeliefOptimizer, ICML study only)")
_BOUND_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "final_lr": 0.1, "gamma": 1e-3, "eps": 1e-8,
                   "weight_decay": 0.0}
_cv("adabound", "adabound", dict(_BOUND_DEFAULTS),
    {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2, **BOUNDS}}, "AdaBound (AdaBoundOptimizer)")
_cv("amsbound", "amsbound", dict(_BOUND_DEFAULTS),
    {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2, **BOUNDS}}, "AMSBound (AMSBoundOptimizer)")
_cv("adadelta", "adadelta", {"lr": 1e-3, "rho": 0.95, "eps": 1e-8, "weight_decay": 0.0},
    _momentum_spaces("rho", lr=LR), "AdaDelta with TF's defaults (AdadeltaOptimizer; torch.optim.Adadelta)")
_cv("adagrad", "adagrad", {"lr": 1e-2, "initial_accumulator_value": 0.1, "eps": 0.0, "weight_decay": 0.0},
    {"default": {"lr": LR}}, "AdaGrad with TF's accumulator 0.1 and no eps (AdagradOptimizer; torch.optim.Adagrad)")
_cv("rmsprop", "rmsprop",
    {"lr": 1e-3, "alpha": 0.9, "eps": 1e-10, "momentum": 0.0, "centered": False, "weight_decay": 0.0,
     "semantics": "tf1"},
    _momentum_spaces("alpha", lr=LR),
    "RMSProp (RMSPropOptimizer; tf1: accumulator starts at 1, eps inside the root; torch: torch.optim.RMSprop)")
_cv("lookahead_momentum", "lookahead_momentum",
    {"lr": 1e-2, "momentum": 0.99, "alpha": 0.5, "k": 5, "weight_decay": 0.0, "semantics": "tf1"},
    _momentum_spaces("momentum", lr=LR, **LOOKAHEAD), "Lookahead around heavy-ball momentum "
    "(LookaheadOptimizerMBGDMomentum)")
_cv("lookahead_radam", "lookahead_radam",
    {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "alpha": 0.5, "k": 5, "weight_decay": 0.0,
     "semantics": "tf1"},
    {"default": {"lr": LR, "beta1": BETA1, "beta2": BETA2, **LOOKAHEAD}},
    "Lookahead around RAdam (LookaheadOptimizerRAdam)")
