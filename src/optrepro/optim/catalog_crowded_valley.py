"""Registry entries for the Crowded Valley optimizers (torch-free metadata)."""
from optrepro.optim.registry import OptimizerInfo, register

register(OptimizerInfo(
    name="sgd",
    target="torch.optim:SGD",
    defaults={"lr": 1e-2, "weight_decay": 0.0},
    search_space={"default": {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1.0}}},
    description="plain SGD (torch.optim.SGD)",
))
register(OptimizerInfo(
    name="adam",
    target="torch.optim:Adam",
    defaults={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    search_space={"default": {"lr": {"type": "log_uniform", "low": 1e-4, "high": 1.0}}},
    description="Adam (torch.optim.Adam)",
))
