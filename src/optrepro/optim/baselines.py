"""Factories for the baselines of optim/catalog_baselines.py: torch's classes on their fastest path."""
from __future__ import annotations

import torch

from optrepro.optim._base import as_param_list, fastest_torch_kwargs


def adamw(params, lr, beta1, beta2, eps, weight_decay):
    params = as_param_list(params)
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                             **fastest_torch_kwargs(params, True))
