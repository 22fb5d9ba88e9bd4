"""Registry entries for common baselines the papers compare against that are not in the Crowded Valley catalog
(torch-free metadata). AdamW: torch.optim.AdamW on its fused path (the fuzzy section's baseline)."""
from optrepro.optim.registry import OptimizerInfo, register

register(OptimizerInfo(
    name="adamw", target="optrepro.optim.baselines:adamw",
    # torch.optim.AdamW's defaults (Loshchilov & Hutter, arXiv 1711.05101, decoupled weight decay)
    defaults={"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2},
    search_space={"default": {"lr": {"type": "log_uniform", "low": 1e-5, "high": 1e-1},
                              "weight_decay": {"type": "log_uniform", "low": 1e-4, "high": 1.0}}},
    description="AdamW (decoupled weight decay): torch.optim.AdamW, fused where torch has the kernel"))
