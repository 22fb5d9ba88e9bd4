"""Registry entries for the papers' own optimizers: CaAdam, the line searches, the NOS expression optimizers,
the fuzzy second-order method and its prior art AdaHessian (torch-free metadata). Authors' code: remigenet/CaAdam@ce14f7e, OUStudent/NeuralOptimizerSearch@005dfce,
TheMody/Improving-Line-Search-Methods-for-Large-Scale-Neural-Network-Training@14be82a."""
from optrepro.nos.space import final_genome, genome_to_json
from optrepro.optim.registry import OptimizerInfo, register
from optrepro.params import choice, integer, mapping, non_negative, number, positive

_LR = {"type": "log_uniform"}

# ---- CaAdam (arXiv 2410.24216): the authors ran Keras Adam defaults (eps 1e-7 in the eps-hat form) --------
_CAADAM_COMMON = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "eps_hat": True, "weight_decay": 0.0,
                  "amsgrad": False, "mode": "reference", "one_d": "owner"}
# as optim/caadam.py's STRATEGIES, MODES and ONE_D; gamma = 0 is plain Adam for additive and depth
_CAADAM_TYPES = {"strategy": choice("additive", "multiplicative", "depth"), "mode": choice("described", "reference"),
                 "one_d": choice("owner", "exempt", "zero"), "gamma": non_negative()}
_GAMMA_SPACE = {"additive": {"type": "uniform", "low": 0.0, "high": 1.0},
                "multiplicative": {"type": "log_uniform", "low": 1.0, "high": 10.0},
                "depth": {"type": "uniform", "low": 0.0, "high": 2.0}}
for _strategy, _gamma in (("additive", 0.95), ("multiplicative", 5.0), ("depth", 1.0)):
    register(OptimizerInfo(
        name=f"caadam_{_strategy}",
        target="optrepro.optim.caadam:CaAdam",
        defaults={**_CAADAM_COMMON, "strategy": _strategy, "gamma": _gamma},
        impl_version=1,
        search_space={"default": {"lr": {**_LR, "low": 1e-4, "high": 1e-2}, "gamma": _GAMMA_SPACE[_strategy]}},
        needs_model=True,
        hparam_types=_CAADAM_TYPES,
        paper="caadam",
        description=f"CaAdam, {_strategy} scaling (gamma {_gamma}, the authors' code default); "
                    "mode 'reference' reproduces the Keras name collision, 'described' the paper's rule",
    ))

# ---- line searches (arXiv 2403.18519 and its baselines) -----------------------------------------------
_STEP0 = {"type": "log_uniform"}
# The search sets the step size: an outer schedule is refused. Its hyperparameters are global (one group);
# `mode` picks the BatchNorm handling at trial points (optim/line_search.py MODES).
# What their hyperparameters accept (optim/line_search.py: MODES, RESET_OPTIONS, BASE_OPTS): the Armijo constant c in
# (0, 1), step growth factors >= 1, a backtracking budget of at least one trial.
_LINE_SEARCH_TYPES = {"c": number(0.0, 1.0, low_open=True, high_open=True), "gamma": number(1.0),
                      "growth": number(1.0), "reset_option": choice(0, 1, 2), "n_batches_per_epoch": integer(1),
                      "max_backtracks": integer(1), "max_probe_bumps": integer(0), "probe_eps": positive(),
                      "base_opt": choice("adam", "amsgrad", "adagrad"), "mode": choice("clean", "as-run"),
                      "clip_grad": positive(nullable=True, note="null: no clipping")}


_LINE_SEARCH = dict(closure="loss", lr_schedule="refused", param_groups="one", internals=True,
                    trial_batchnorm={"mode": {"clean": "frozen", "as-run": "moving"}}, paper="alsals")


def _register_line_search(**entry):
    types = {k: t for k, t in _LINE_SEARCH_TYPES.items() if k in entry["defaults"]}
    register(OptimizerInfo(**entry, **_LINE_SEARCH, hparam_types=types))


_register_line_search(
    name="sls", target="optrepro.optim.line_search:SLS",
    defaults={"init_step_size": 1.0, "c": 0.1, "beta_b": 0.9, "gamma": 2.0, "reset_option": 1,
              "n_batches_per_epoch": 500, "max_backtracks": 100, "mode": "clean"},
    search_space={"default": {"init_step_size": {**_STEP0, "low": 1e-2, "high": 1e2},
                              "c": {"type": "log_uniform", "low": 1e-2, "high": 0.5}}},
    impl_version=2,  # 2026-11-21: review fixes against the authors' code change its numbers
    description="SGD + Armijo line search (Vaswani et al. 2019); no lr: the search sets the step")
_register_line_search(
    name="adasls", target="optrepro.optim.line_search:AdaSLS",
    defaults={"init_step_size": 1.0, "c": 0.1, "beta": 0.99, "momentum": 0.0, "base_opt": "adam", "beta_b": 0.9,
              "gamma": 2.0, "reset_option": 1, "n_batches_per_epoch": 500, "max_backtracks": 100, "mode": "clean"},
    search_space={"default": {"init_step_size": {**_STEP0, "low": 1e-2, "high": 1e2},
                              "c": {"type": "choice", "values": [0.1, 0.2, 0.5]}}},
    impl_version=2,  # 2026-11-21: review fixes against the authors' code change its numbers
    description="preconditioned Armijo line search, Vaswani et al. 2021 (IssamLaradji/ada_sls): Vaswani's Adam+SLS")
_register_line_search(
    name="adamsls", target="optrepro.optim.line_search:AdamSLS",
    defaults={"init_step_size": 0.1, "c": 0.2, "beta": 0.999, "momentum": 0.9, "beta_s": 0.999, "smooth": True,
              "beta_b": 0.9, "gamma": 2.0, "reset_option": 1, "n_batches_per_epoch": 500, "max_backtracks": 200,
              "speed_up": False, "mode": "clean"},
    search_space={"default": {"init_step_size": {**_STEP0, "low": 1e-3, "high": 1.0},
                              "c": {"type": "uniform", "low": 0.1, "high": 0.7}}},
    impl_version=2,  # 2026-11-21: review fixes against the authors' code change its numbers
    description="the ALSALS authors' ADAM+SLS (sls/adam_sls.py): smoothed Armijo, momentum only in the update")
_register_line_search(
    name="alsals", target="optrepro.optim.line_search:ALSALS",
    defaults={"init_step_size": 0.1, "c": 0.1, "betas": (0.9, 0.999), "beta_b": 0.9, "growth": 1 / 0.999,
              "smoothing": 0.99, "probe_eps": 5e-9, "max_backtracks": 100, "max_probe_bumps": 30,
              "clip_grad": None, "mode": "clean"},
    search_space={"default": {"init_step_size": {**_STEP0, "low": 1e-3, "high": 1.0},
                              "c": {"type": "uniform", "low": 0.1, "high": 0.7}}},
    description="ALSALS as the authors' code runs it (KenSLS): smoothed Armijo along the Adam direction, "
                "finite-difference slope; the runs used c=0.3 (GLUE, GPT-2) and c=0.5 (images)")

# ---- NOS expression optimizers (arXiv 2404.06679): decays off by default, as the authors' classes --------
_NOS_COMMON = {"lr": 1e-3, "use_decay": False, "total_steps": None, "momentum_schedule": "cyclical",
               "momentum": 0.9, "warmup_steps": 0, "hold_steps": 0, "nesterov_form": "final", "a14": "search"}
# as optim/nos_expr.py's MOMENTUM_SCHEDULES, NESTEROV_FORMS and EMA_FORMS, and nos/space.py's opt1 forms
_NOS_TYPES = {"momentum_schedule": choice("cyclical", "constant"), "nesterov_form": choice("final", "search"),
              "a14": choice("search", "final"), "ema_form": choice("fixed", "code"), "opt1_form": choice("code", "paper"),
              "genome": mapping()}
for _name in [f"opt{i}" for i in range(1, 11)] + [f"a{i}" for i in range(1, 6)]:
    _extra = {"opt1_form": "code"} if _name == "opt1" else {}
    register(OptimizerInfo(
        name=f"nos_{_name}",
        target=f"optrepro.optim.nos_expr:NOS{_name.capitalize()}",
        defaults={**_NOS_COMMON, **_extra},
        impl_version=2 if _name == "opt6" else 1,  # 2: its dtanh(a4) follows use_decay, as the authors' code
        run_length_hparams=("total_steps",),  # decays and cyclical momentum are functions of t/T
        hparam_types={k: t for k, t in _NOS_TYPES.items() if k in _NOS_COMMON or k in _extra},
        # the authors swept eta over {10, 1, 1e-1, ..., 1e-5} for every candidate (fitness_function_*)
        search_space={"default": {"lr": {**_LR, "low": 1e-5, "high": 10.0},
                                  "use_decay": {"type": "choice", "values": [False, True]}}},
        paper="nos",
        description=f"NOS final optimizer {_name} from its genome (finalOptimizers.py); "
                    "total_steps is needed when decays or cyclical momentum are on",
    ))

# A searched genome (optrepro.nos.search) as a run: the genome is a hyperparameter, so the run id addresses it.
# Defaults are the search code's: decays on, its Nesterov form (w += b - lr u) and its expMovAvg; the default
# genome is Adam's, v_hat / (sqrt(s_hat) + eps), with betas (0.9, 0.99).
register(OptimizerInfo(
    name="nos_genome", target="optrepro.optim.nos_expr:NOSGenome",
    defaults={"genome": genome_to_json(final_genome("adam")), "lr": 1e-3, "use_decay": True, "total_steps": None, "momentum_schedule": "cyclical",
              "momentum": 0.9, "warmup_steps": 0, "hold_steps": 0, "nesterov_form": "search", "a14": "search",
              "ema_form": "code"},
    search_space={"default": {"lr": {**_LR, "low": 1e-5, "high": 10.0}}},
    hparam_types={k: t for k, t in _NOS_TYPES.items() if k != "opt1_form"},
    paper="nos",
    description="a NOS genome given as canonical JSON (optrepro.nos.space.genome_to_json); the search's "
                "settings by default; total_steps is needed when decays or cyclical momentum are on"))

# ---- fuzzy second-order method (arXiv 2403.15416): every open choice is a named argument (our defaults) ----
# Two entries, one class (optim/fuzzy.py): with the controller, which owns the step size, and without it (the
# same finite-difference optimizer, whose lr a schedule drives: the control "tuned warmup + cosine instead of
# the controller"). The controller's hyperparameters belong to the first only, so each declaration is true for
# every spec that can name it.
_FD_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta3": 0.99, "r": 1e-3, "fd_mode": "ones", "hess_every": 1,
                "eps_curv": 1e-4, "weight_decay": 0.0, "seed": 0, "clip_rho": None, "relative_step": False}
# as optim/fuzzy.py's FD_MODES and fuzzy_controller.py's RULE_BASES; r is the finite-difference step
_FD_TYPES = {"fd_mode": choice("ones", "rademacher", "update"), "hess_every": integer(1), "r": positive(),
             "eps_curv": non_negative(), "clip_rho": positive(nullable=True, note="null: no clipping")}
_CONTROLLER_TYPES = {"fuzzy_every": integer(1), "lr_min": positive(), "lr_max": positive(),
                     "max_lr_ratio": number(1.0), "rule_base": choice("default", "loss_only", "progress_only")}
register(OptimizerInfo(
    name="fuzzy_second_order", target="optrepro.optim.fuzzy:fuzzy_second_order",
    defaults={**_FD_DEFAULTS, "fuzzy_every": 100, "total_steps": None, "lr_min": 1e-4, "lr_max": 1e-2,
              "beta3_min": 0.5, "beta3_max": 0.999, "max_lr_ratio": 2.0, "loss_ema": 0.9, "rule_base": "default"},
    search_space={"default": {"lr": {**_LR, "low": 1e-4, "high": 1e-1},
                              "lr_min": {**_LR, "low": 1e-5, "high": 1e-3},
                              "lr_max": {**_LR, "low": 1e-3, "high": 1e-1}}},
    impl_version=2,  # 2026-11-21: review fixes against the authors' code change its numbers
    # the fuzzy controller owns the lr (ambiguity register fuzzy-lr-schedule): an outer schedule is refused
    closure="loss", lr_schedule="refused", run_length_hparams=("total_steps",), trial_batchnorm="frozen",
    param_groups="one", internals=True, paper="fuzzy",
    hparam_types={**_FD_TYPES, **_CONTROLLER_TYPES},
    description="finite-difference diagonal Hessian + Newton-like update + fuzzy lr/beta3 controller "
                "(illustrative rule bases: the paper's could not be read); `lr` is the step size until the "
                "controller's first call"))
register(OptimizerInfo(
    name="fd_second_order", target="optrepro.optim.fuzzy:fd_second_order",
    defaults=dict(_FD_DEFAULTS),
    search_space={"default": {"lr": {**_LR, "low": 1e-4, "high": 1e-1}}},
    closure="loss", lr_schedule="group_lr", trial_batchnorm="frozen", param_groups="one", internals=True,
    hparam_types=_FD_TYPES, paper="fuzzy",
    description="the fuzzy method's finite-difference optimizer without the controller: step size group['lr'] "
                "(an outer schedule drives it), beta3 fixed"))
# AdaHessian (arXiv 2006.00719): the Hutchinson diagonal through a Hessian-vector product, the fuzzy method's
# closest prior art; defaults of the authors' code (amirgholami/adahessian image_classification/optim_adahessian.py)
register(OptimizerInfo(
    name="adahessian", target="optrepro.optim.adahessian:AdaHessian",
    defaults={"lr": 0.15, "beta1": 0.9, "beta2": 0.999, "eps": 1e-4, "weight_decay": 0.0, "hessian_power": 1.0,
              "seed": 0},
    search_space={"default": {"lr": {**_LR, "low": 1e-3, "high": 1.0}}},
    closure="hvp", paper="fuzzy",
    hparam_types={"hessian_power": number(0.0, 1.0)},  # the power k of the Hessian diagonal, 0 (Adam) to 1
    description="AdaHessian (Yao et al. 2021): Adam with the squared Hutchinson Hessian diagonal, spatially "
                "averaged over convolution kernels; needs create_graph (closure='hvp')"))
