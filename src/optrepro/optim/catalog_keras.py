"""Registry entries for Keras 3's optimizers with Keras's defaults and formulas (torch-free metadata): the
baselines of the CaAdam notebooks (remigenet/CaAdam@ce14f7e results/*.ipynb), which ran Keras 3.5.0's Adam, AdamW,
Adamax and Nadam at learning_rate=1e-3. optim/keras.py holds the formulas; the registered `adam` / `nadam` are
TensorFlow 1's (Crowded Valley)."""
from optrepro.optim.registry import OptimizerInfo, register

_F = "optrepro.optim.keras:"
_LR = {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}}
_BETAS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}  # Keras 3 defaults, epsilon 1e-7 everywhere

for _name, _defaults, _description in (
    ("keras_adam", {**_BETAS, "amsgrad": False},
     "keras.optimizers.Adam: eps added to the un-bias-corrected sqrt(v) (epsilon hat), eps 1e-7"),
    ("keras_adamw", {**_BETAS, "weight_decay": 0.004, "amsgrad": False},
     "keras.optimizers.AdamW: theta -= lr wd theta before the Adam step (decoupled), wd 0.004, eps hat 1e-7"),
    ("keras_adamax", dict(_BETAS),
     "keras.optimizers.Adamax: u = max(b2 u, |g|), eps added outside the max (torch adds it inside)"),
    ("keras_nadam", dict(_BETAS),
     "keras.optimizers.Nadam: momentum schedule b1 (1 - 0.5 * 0.96^t) (torch.optim.NAdam, momentum_decay=1)"),
):
    register(OptimizerInfo(name=_name, target=_F + _name.removeprefix("keras_"), defaults=_defaults,
                           impl_version=1, search_space={"default": _LR}, paper="caadam",
                           description=_description))
