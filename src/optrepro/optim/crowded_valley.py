"""Factories for the fifteen Crowded Valley optimizers: registry targets called as f(params, **hparams).

Where torch implements the algorithm exactly, the factory returns torch's class on its fastest path (fused where
torch has a fused kernel; else foreach on GPUs and the for-loop on CPU, which is faster there). Otherwise it
returns one of optrepro's classes. `semantics="tf1"` selects what TensorFlow 1.x (the published runs)
computes, "torch" what torch.optim computes; see tf1.py for the formulas. Hyperparameter names follow torch
(alpha = RMSProp decay, rho = AdaDelta decay), except that Adam-type betas are split into beta1 and beta2 so
each can be tuned alone.

`compile` (keyword-only, not a hyperparameter: the registry does not pass it and run ids do not include it) turns
on the fused torch.compile'd kernels of AdaBelief, AdaBound, AMSBound and Lookahead(RAdam) (optim/_compiled.py);
their numbers agree with the eager paths to float rounding. Off by default: compiling costs seconds per process.
"""
from __future__ import annotations

import torch

from optrepro.optim._base import as_param_list, fastest_torch_kwargs
from optrepro.optim.adabelief import AdaBelief as _AdaBelief
from optrepro.optim.adabound import AdaBound as _AdaBound, AMSBound as _AMSBound
from optrepro.optim.lookahead import Lookahead
from optrepro.optim.radam import RAdam as _RAdam
from optrepro.optim.tf1 import EpsHatAdam, TF1Nadam, TF1RMSprop
from optrepro.registry import unknown

SEMANTICS = ("tf1", "torch")


def _check_semantics(optimizer: str, semantics: str) -> bool:
    """True for TF-1 semantics; a bad value is refused with the valid choices."""
    if semantics not in SEMANTICS:
        raise unknown(f"semantics for optimizer {optimizer!r}", semantics, SEMANTICS)
    return semantics == "tf1"


def _torch_sgd(params, lr, momentum, nesterov, weight_decay):
    params = as_param_list(params)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                           **fastest_torch_kwargs(params, True))


def sgd(params, lr, weight_decay):
    return _torch_sgd(params, lr, 0.0, False, weight_decay)


def momentum(params, lr, momentum, weight_decay):
    """Heavy ball. TF's MomentumOptimizer (accum <- mu accum + g; theta -= lr accum) equals torch's SGD with
    dampening 0, including the first step (TF's accumulator starts at zero, torch's buffer at g)."""
    return _torch_sgd(params, lr, momentum, False, weight_decay)


def nag(params, lr, momentum, weight_decay):
    """Nesterov momentum; TF's use_nesterov=True (theta -= lr (g + mu accum)) equals torch's nesterov=True."""
    return _torch_sgd(params, lr, momentum, True, weight_decay)


def adam(params, lr, beta1, beta2, eps, weight_decay, semantics, amsgrad=False):
    tf1 = _check_semantics("amsgrad" if amsgrad else "adam", semantics)
    params = as_param_list(params)
    cls = EpsHatAdam if tf1 else torch.optim.Adam
    return cls(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
               **fastest_torch_kwargs(params, True))


def amsgrad(params, lr, beta1, beta2, eps, weight_decay, semantics):
    """AMSGrad: Adam on the running maximum of v (torch's amsgrad=True; TF-1 ports use eps hat)."""
    return adam(params, lr, beta1, beta2, eps, weight_decay, semantics, amsgrad=True)


def nadam(params, lr, beta1, beta2, eps, weight_decay, semantics):
    tf1 = _check_semantics("nadam", semantics)
    params = as_param_list(params)
    if tf1:
        return TF1Nadam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    return torch.optim.NAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                             **fastest_torch_kwargs(params, False))


def radam(params, lr, beta1, beta2, eps, weight_decay):
    """torch.optim.RAdam (rectification threshold rho_t > 5; eps added to the un-corrected root)."""
    params = as_param_list(params)
    return torch.optim.RAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                             **fastest_torch_kwargs(params, False))


def adabelief(params, lr, beta1, beta2, eps, weight_decay, rectify, *, compile=False):
    return _AdaBelief(as_param_list(params), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                      rectify=rectify, compile=compile)


def adabound(params, lr, beta1, beta2, final_lr, gamma, eps, weight_decay, *, compile=False):
    return _AdaBound(as_param_list(params), lr=lr, betas=(beta1, beta2), final_lr=final_lr, gamma=gamma,
                     eps=eps, weight_decay=weight_decay, compile=compile)


def amsbound(params, lr, beta1, beta2, final_lr, gamma, eps, weight_decay, *, compile=False):
    return _AMSBound(as_param_list(params), lr=lr, betas=(beta1, beta2), final_lr=final_lr, gamma=gamma,
                     eps=eps, weight_decay=weight_decay, compile=compile)


def adadelta(params, lr, rho, eps, weight_decay):
    """TF's ApplyAdadelta and torch.optim.Adadelta compute the same update; only the defaults differ."""
    params = as_param_list(params)
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                **fastest_torch_kwargs(params, False))


def adagrad(params, lr, initial_accumulator_value, eps, weight_decay):
    """TF's AdagradOptimizer is torch's Adagrad with initial_accumulator_value=0.1 and eps=0 (TF has none).
    torch's fused Adagrad exists on CPU only: on CUDA, fused=True raises (seen on an H200), so foreach there."""
    params = as_param_list(params)
    return torch.optim.Adagrad(params, lr=lr, initial_accumulator_value=initial_accumulator_value, eps=eps,
                               weight_decay=weight_decay, **fastest_torch_kwargs(params, True, ("cpu",)))


def rmsprop(params, lr, alpha, eps, momentum, centered, weight_decay, semantics):
    tf1 = _check_semantics("rmsprop", semantics)
    params = as_param_list(params)
    if tf1:
        return TF1RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                          weight_decay=weight_decay, initial_accumulator_value=1.0)
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                               weight_decay=weight_decay, **fastest_torch_kwargs(params, False))


def lookahead_momentum(params, lr, momentum, alpha, k, weight_decay, semantics, *, compile=False):
    """Lookahead around torch's SGD (fused); compile fuses only the slow-weight synchronisation.
    semantics="tf1": the TF-1 wrapper's counting (lookahead.py), "torch": the paper's Algorithm 1."""
    _check_semantics("lookahead_momentum", semantics)
    return Lookahead(_torch_sgd(params, lr, momentum, False, weight_decay), alpha=alpha, k=k, semantics=semantics,
                     compile=compile)


def lookahead_radam(params, lr, beta1, beta2, eps, alpha, k, weight_decay, semantics, *, compile=False):
    """Lookahead around optrepro's RAdam: torch.optim.RAdam's formula (tests compare them) with fewer eager ops
    and a fused compiled kernel, which torch's RAdam lacks; the same class either way, so checkpoints do not
    depend on `compile`. semantics="tf1" (the published runs): the TF-1 wrapper never advances the inner RAdam's
    step, so RAdam stays in its un-rectified first step, lr * m / (1 - beta1) (lookahead.py)."""
    _check_semantics("lookahead_radam", semantics)
    inner = _RAdam(as_param_list(params), lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                   compile=compile)
    return Lookahead(inner, alpha=alpha, k=k, semantics=semantics, compile=compile)
