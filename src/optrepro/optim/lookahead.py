"""Lookahead (Zhang et al., NeurIPS 2019): k fast steps of an inner optimizer, then pull the slow weights:

    every k-th step:  slow <- slow + alpha (fast - slow);  fast <- slow

Slow weights start at the parameters' values before the first step. The inner optimizer's state (momentum,
moments) is kept across synchronisations (the paper's default; the alternative, resetting it, is not offered).

`semantics` says which implementation's counting is followed:
- "torch" (the paper's Algorithm 1): every step is an inner step; after the k-th, 2k-th, ... inner step the
  weights are synchronised in the same step.
- "tf1": the TensorFlow-1 wrapper behind the Crowded Valley logs (a tf.train.Optimizer whose apply op is
  tf.cond(step % k == 0, synchronise, inner._apply_dense) with its own step counter from 0, and which never runs
  the inner optimizer's _finish). So the synchronisation *replaces* the inner step on steps 0, k, 2k, ... (step 0
  is a no-op: slow = fast), only k - 1 of every k gradients are applied, and the inner optimizer's step counters
  never advance: its bias corrections stay those of step 1 (RAdam's rho_1 = 1 < 5, so the inner RAdam is plain
  momentum lr * m / (1 - beta1) forever). Here that is the inner state's "step" reset before each inner step.
  The published Lookahead curves decide it: paper/ambiguity/crowded_valley.yaml, cv-lookahead-tf1-semantics.
`param_groups` is the inner optimizer's list, so LR schedulers and add_param_group act on the inner
optimizer; each group also carries its own `alpha` and `k`. state_dict = the inner state_dict (its groups carry
alpha/k) plus the slow weights and the step counter, so a resumed run continues bit-identically.
`compile=True` fuses the synchronisation (lerp + copy) into one compiled pass per tensor (optim/_compiled.py);
the inner optimizer's speed is its own (lookahead_radam(compile=True) wraps optrepro's compiled RAdam).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.optim.optimizer import Optimizer

from optrepro.optim import _compiled
from optrepro.optim._base import default_foreach, grouped
from optrepro.registry import unknown


SEMANTICS = ("torch", "tf1")


class Lookahead(Optimizer):
    def __init__(self, inner: Optimizer, alpha: float = 0.5, k: int = 5, *, semantics: str = "torch",
                 foreach: bool | None = None, compile: bool | str = False):
        if not isinstance(inner, Optimizer):
            raise TypeError(f"Lookahead wraps a torch.optim.Optimizer, got {type(inner).__name__}")
        if not 0.0 <= alpha <= 1.0 or int(k) != k or k < 1:
            raise ValueError(f"invalid Lookahead hyperparameters: alpha={alpha} (in [0, 1]), k={k} (integer >= 1)")
        if semantics not in SEMANTICS:
            raise unknown("Lookahead semantics", semantics, SEMANTICS)
        self.semantics = semantics
        # Optimizer.__init__ is not called: the parameters and their groups belong to the inner optimizer.
        self.inner = inner
        self.defaults = {**inner.defaults, "alpha": alpha, "k": int(k)}
        self.foreach = foreach
        self.compile_backend = _compiled.backend_of(compile)
        self.lookahead_step = 0
        self.slow: dict[torch.Tensor, torch.Tensor] = {}
        for group in inner.param_groups:
            group.setdefault("alpha", alpha)
            group.setdefault("k", int(k))
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    # --- the inner optimizer's groups and state are this optimizer's -------------------------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    @property
    def state(self):
        return self.inner.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.inner.add_param_group(param_group)
        group = self.inner.param_groups[-1]
        group.setdefault("alpha", self.defaults["alpha"])
        group.setdefault("k", self.defaults["k"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def __repr__(self) -> str:
        return f"Lookahead({self.inner!r})"

    # --- step --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:  # slow weights = the parameters before the first fast step
            for p in group["params"]:
                if p not in self.slow:
                    self.slow[p] = p.detach().clone(memory_format=torch.preserve_format)
        if self.semantics == "tf1":
            return self._step_tf1(closure)
        loss = self.inner.step(closure) if closure is not None else self.inner.step()
        self.lookahead_step += 1
        self._synchronise([g for g in self.param_groups if self.lookahead_step % g["k"] == 0])
        return loss

    def _step_tf1(self, closure):
        """The TF-1 wrapper: on steps 0, k, 2k, ... of its own counter a synchronisation instead of an inner step;
        the inner optimizer's step counters stay at their first step (its _finish never ran)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sync = [g for g in self.param_groups if self.lookahead_step % g["k"] == 0]
        if len(sync) < len(self.param_groups):
            for group in self.param_groups:
                for p in group["params"]:
                    if "step" in self.inner.state.get(p, {}):
                        self._reset_step(self.inner.state[p])
            # a group that synchronises this step takes no inner step: torch optimizers skip grad-less parameters
            stashed = [(p, p.grad) for g in sync for p in g["params"]]
            for p, _ in stashed:
                p.grad = None
            try:
                self.inner.step()
            finally:
                for p, grad in stashed:
                    p.grad = grad
        self.lookahead_step += 1
        self._synchronise(sync)
        return loss

    @staticmethod
    def _reset_step(state: dict) -> None:
        step = state["step"]
        if torch.is_tensor(step):
            step.zero_()
        else:
            state["step"] = 0

    def _synchronise(self, groups) -> None:
        for group in groups:
            fast = list(group["params"])
            if not fast:
                continue
            slow = [self.slow[p] for p in fast]
            if self.compile_backend is not None:
                take, rest = _compiled.split_compilable([fast, slow])
                if take:
                    kernel = _compiled.fused_kernel("lookahead_sync", self.compile_backend)
                    _compiled.run(kernel, [[fast[i] for i in take], [slow[i] for i in take]],
                                  [[group["alpha"]]] * len(take))
                fast, slow = [fast[i] for i in rest], [slow[i] for i in rest]
                if not fast:
                    continue
            foreach = self.foreach if self.foreach is not None else default_foreach(fast)
            if foreach:
                for (fs, ss), _ in grouped([fast, slow]):
                    torch._foreach_lerp_(ss, fs, group["alpha"])
                    torch._foreach_copy_(fs, ss)
            else:
                for f, s in zip(fast, slow):
                    s.lerp_(f, group["alpha"])
                    f.copy_(s)

    # --- checkpointing -----------------------------------------------------------------------------------
    def _param_index(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        params = self._param_index()
        return {
            "inner": self.inner.state_dict(),
            "lookahead_step": self.lookahead_step,
            "slow": {i: self.slow[p] for i, p in enumerate(params) if p in self.slow},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = {"inner", "lookahead_step", "slow"} - set(state_dict)
        if missing:
            raise KeyError(f"Lookahead state_dict lacks {sorted(missing)}; got keys {sorted(state_dict)}")
        self.inner.load_state_dict(state_dict["inner"])
        self.lookahead_step = int(state_dict["lookahead_step"])
        params = self._param_index()
        self.slow = {}
        for i, tensor in state_dict["slow"].items():
            p = params[int(i)]
            self.slow[p] = tensor.detach().to(dtype=p.dtype, device=p.device).clone()
