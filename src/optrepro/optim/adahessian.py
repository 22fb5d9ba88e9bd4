"""AdaHessian (Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney, AAAI 2021, arXiv 2006.00719): Adam with the
squared gradient replaced by the square of a Hutchinson estimate of the Hessian diagonal. The fuzzy section's
closest prior art: a diagonal curvature estimate from a random +-1 probe, as the fuzzy method's `rademacher`
reading, but through an exact Hessian-vector product instead of a finite difference.

    opt = AdaHessian(model.parameters(), lr=0.15)
    opt.step(closure)    # closure(backward=True, create_graph=True) keeps the gradients' graph
                         # (optrepro.closure.StepClosure does; registry closure="hvp")

One step, per parameter tensor (the paper's Algorithm 1 with its spatial averaging, Eqs. 10-12, as the authors'
code computes it: amirgholami/adahessian, image_classification/optim_adahessian.py):
  z      Rademacher (+-1) per coordinate, drawn from a generator seeded by (seed, step), so a resumed run
         draws the same probes
  Hz     d<g, z>/dw, one Hessian-vector product through the gradients' graph
  D      |Hz|, which equals |z * Hz|, the Hutchinson estimate of diag(H) up to its sign; for a 4-D convolution
         kernel, D is averaged over the kernel's two spatial dimensions (the paper's spatial averaging with a
         k x k block; the paper averages z * Hz and then squares, the authors' code averages |Hz|: register
         entry adahessian-spatial-averaging)
  m      <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) D^2
  denom  (sqrt(v / (1 - beta2^t)))^k + eps, k = hessian_power
  w      <- w - lr (m / (1 - beta1^t) / denom + weight_decay w)   (decay decoupled from the preconditioner)
Defaults are the authors' code's: lr 0.15, betas (0.9, 0.999), eps 1e-4, hessian_power 1, weight_decay 0.
The Hessian-vector product costs about one more backward pass (through the first backward's graph), so a step
costs a forward, a backward with its graph kept, and the double backward; no extra forward.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from optrepro.closure import optimizer_closure

SEED_STRIDE = 1_000_003  # generator seed = seed * stride + step: distinct (seed, step) pairs, distinct probes


class AdaHessian(Optimizer):
    def __init__(self, params, lr: float = 0.15, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-4,
                 weight_decay: float = 0.0, hessian_power: float = 1.0, seed: int = 0):
        if not lr >= 0 or not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"need lr, eps, weight_decay >= 0 (got {lr}, {eps}, {weight_decay})")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"need 0 <= beta1, beta2 < 1 (got {beta1}, {beta2})")
        if not 0 <= hessian_power <= 1:
            raise ValueError(f"hessian_power must be in [0, 1] (got {hessian_power})")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                      hessian_power=hessian_power, seed=seed))
        self.state["adahessian"] = {"step": 0}  # global: numbers the probes

    def _rademacher(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        step = self.state["adahessian"]["step"]
        generators: dict[torch.device, torch.Generator] = {}
        out = []
        for p in params:
            if p.device not in generators:
                generators[p.device] = torch.Generator(device=p.device).manual_seed(
                    self.param_groups[0]["seed"] * SEED_STRIDE + step)
            z = torch.randint(0, 2, p.shape, generator=generators[p.device], device=p.device)
            out.append(z.to(p.dtype).mul_(2).sub_(1))
        return out

    def hutchinson_diagonal(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """D = |H z| per tensor (spatially averaged for 4-D kernels), from gradients that carry their graph."""
        with_graph = [i for i, g in enumerate(grads) if g.requires_grad]
        if not with_graph:
            raise RuntimeError(
                "AdaHessian needs the gradients' graph for its Hessian-vector product: pass a closure that takes "
                "create_graph=True (closure(backward=True, create_graph=True), as optrepro.closure.StepClosure "
                "does) or, in torch's zero-argument form, one that calls loss.backward(create_graph=True)")
        z = self._rademacher(params)
        hz = torch.autograd.grad([grads[i] for i in with_graph], params,
                                 grad_outputs=[z[i] for i in with_graph], allow_unused=True)
        diagonal = []
        for p, h in zip(params, hz):
            d = torch.zeros_like(p) if h is None else h.detach().abs()
            if d.dim() == 4:  # convolution kernel: average over its spatial block (k x k)
                d = d.mean(dim=(2, 3), keepdim=True).expand_as(d)
            diagonal.append(d)
        return diagonal

    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("AdaHessian requires a closure: step(closure), with closure(backward=True, "
                               "create_graph=True) or torch's closure() that back-propagates with create_graph")
        all_params = [p for group in self.param_groups for p in group["params"]]
        closure = optimizer_closure(closure, all_params)
        with torch.enable_grad():
            loss = closure(backward=True, create_graph=True)
            params = [p for p in all_params if p.grad is not None]
            grads = [p.grad for p in params]
            diagonal = self.hutchinson_diagonal(params, grads) if params else []
        for p, g in zip(params, grads):
            p.grad = g.detach()  # frees the graph (and the cycle param -> grad -> graph -> param)
        by_param = dict(zip(map(id, params), diagonal))
        with torch.no_grad():
            for group in self.param_groups:
                self._update_group(group, [p for p in group["params"] if id(p) in by_param], by_param)
        self.state["adahessian"]["step"] += 1
        return loss.detach() if torch.is_tensor(loss) else loss

    def _update_group(self, group, params, by_param) -> None:
        if not params:
            return
        grads = [p.grad for p in params]
        squares = [by_param[id(p)] * by_param[id(p)] for p in params]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_hessian_diag_sq"] = torch.zeros_like(p)
            state["step"] += 1
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_hessian_diag_sq"] for p in params]
        beta1, beta2, k = group["beta1"], group["beta2"], group["hessian_power"]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_add_(v, squares, alpha=1 - beta2)
        lr, wd = group["lr"], group["weight_decay"]
        for p, m_p, v_p in zip(params, m, v):
            t = self.state[p]["step"]
            denom = (v_p / (1 - beta2 ** t)).sqrt_().pow_(k).add_(group["eps"])
            update = (m_p / (1 - beta1 ** t)).div_(denom)
            if wd:
                update.add_(p, alpha=wd)
            p.add_(update, alpha=-lr)
