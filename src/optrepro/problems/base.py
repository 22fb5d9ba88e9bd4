"""The problem contract used by the training loop (optrepro.train).

A Problem owns data, model, loss and metrics. The loop owns seeds, order, devices and the optimizer:

    problem.splits()                 -> {"train": Split, "valid": Split, "test": Split} (cached per process)
    problem.build_model()            -> nn.Module (the loop seeds torch with init_seed before calling it)
    problem.forward(model, batch, carry) -> Output(loss, sums, count, carry)
    problem.init_carry(batch_size, device) -> state carried across batches (char-RNN), else None

Randomness: the loop draws each epoch's order from a generator seeded by (data_seed, epoch) and passes one
per-run generator (from data_seed) to `Split.batch` for augmentation; dropout and sampling noise draw from
torch's default generators, seeded once per run from noise_seed, and replay exactly when a closure evaluates
the same batch again (optrepro.train, optrepro.closure).
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn


def data_root() -> Path:
    """Where verified datasets live (`data/` by default; the DAG sets OPTREPRO_DATA from config)."""
    return Path(os.environ.get("OPTREPRO_DATA", "data"))


class Split:
    """Examples held as tensors, decoded once. `transform(batch, generator)` augments training batches."""

    sequential: bool = False  # True: batches in order (carried state), never shuffled

    def __init__(self, *tensors: torch.Tensor, transform: Callable | None = None, sequential: bool = False):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("a Split needs tensors of equal length")
        self.tensors = tensors
        self.transform = transform
        self.sequential = sequential

    def __len__(self) -> int:
        return len(self.tensors[0])

    def order(self, generator: torch.Generator) -> torch.Tensor:
        if self.sequential:
            return torch.arange(len(self))
        return torch.randperm(len(self), generator=generator)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        batch = tuple(t[index] for t in self.tensors)
        if generator is not None and self.transform is not None:
            batch = self.transform(batch, generator)
        return batch

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        """Examples start..stop-1 in order, unaugmented (evaluation): views, no gather."""
        return tuple(t[start:stop] for t in self.tensors)

    def to(self, device) -> "Split":
        moved = Split(*(t.to(device) for t in self.tensors), transform=self.transform, sequential=self.sequential)
        return moved


class EpochSample(Split):
    """A training split whose epoch is `length` examples, not one pass: the epoch's order is fresh permutations
    of the whole split, concatenated and cut at `length` (an epoch longer than the split wraps around). For
    protocols that count an epoch in steps (Keras `steps_per_epoch` over a repeated dataset)."""

    def __init__(self, base: Split, length: int):
        if length < 1:
            raise ValueError(f"an epoch needs at least one example, got length {length}")
        super().__init__(*base.tensors, transform=base.transform)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def order(self, generator: torch.Generator) -> torch.Tensor:
        n = len(self.tensors[0])
        perms = [torch.randperm(n, generator=generator) for _ in range(-(-self.length // n))]
        return torch.cat(perms)[:self.length]

    def to(self, device) -> "EpochSample":
        return EpochSample(Split.to(self, device), self.length)


@dataclass
class Output:
    loss: torch.Tensor  # the mean loss that is differentiated (regularizer included)
    # per-metric sums over the batch, e.g. {"loss": ..., "accuracy": ...}; a LazySums computes them when read
    sums: MutableMapping[str, torch.Tensor]
    count: int  # examples in the batch (denominator of the sums)
    carry: Any = None  # state for the next batch (char-RNN), else None


_SPLITS_CACHE: dict[tuple, dict[str, Split]] = {}


@dataclass
class Problem:
    """Base class: subclasses set `name`, and implement `load_splits`, `build_model` and `forward`."""

    scale: str
    name: ClassVar[str] = "problem"
    # Evaluation drops a partial last batch (DeepOBS does, in every phase).
    drop_last_eval: ClassVar[bool] = False
    # Train-split metrics use the first `train_eval_size` training examples (None: all of them).
    train_eval_size: ClassVar[int | None] = None
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "accuracy": True, "error": False}

    # --- data -------------------------------------------------------------------------------------
    def cache_key(self) -> tuple:
        return (type(self).__qualname__, self.scale, tuple(sorted(self.data_args().items())), str(data_root()))

    def data_args(self) -> dict:
        """The subset of args that changes the data (the cache key); default: none."""
        return {}

    def splits(self) -> dict[str, Split]:
        """Train/valid/test, loaded once per process and shared by every run of a batch."""
        key = self.cache_key()
        if key not in _SPLITS_CACHE:
            _SPLITS_CACHE[key] = self.load_splits()
        return _SPLITS_CACHE[key]

    def load_splits(self) -> dict[str, Split]:
        raise NotImplementedError

    # --- model and loss ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, ...], carry: Any = None) -> Output:
        raise NotImplementedError

    def init_carry(self, batch_size: int, device) -> Any:
        return None


class LazySums(MutableMapping):
    """Output.sums computed on first access. A training step never reads the sums (the loop reads them only when
    it evaluates), so it need not pay for them: on the digits MLP the accuracy's argmax, comparison and reductions
    cost as much as a fifth of a step."""

    def __init__(self, compute: Callable[[], dict[str, torch.Tensor]]):
        self._compute: Callable[[], dict[str, torch.Tensor]] | None = compute
        self._sums: dict[str, torch.Tensor] = {}

    def _values(self) -> dict[str, torch.Tensor]:
        if self._compute is not None:
            self._sums, self._compute = dict(self._compute()), None
        return self._sums

    def __getitem__(self, key):
        return self._values()[key]

    def __setitem__(self, key, value):
        self._values()[key] = value

    def __delitem__(self, key):
        del self._values()[key]

    def __iter__(self):
        return iter(self._values())

    def __len__(self):
        return len(self._values())

    def __repr__(self):
        return f"LazySums({self._values()!r})"


def classification_output(logits: torch.Tensor, target: torch.Tensor, regularizer: torch.Tensor | float = 0.0) -> Output:
    """Cross-entropy mean loss (+ regularizer) and summed loss/accuracy for evaluation (computed when read)."""
    losses = nn.functional.cross_entropy(logits, target, reduction="none")
    loss = losses.mean()
    if torch.is_tensor(regularizer) or regularizer != 0:  # adding 0.0 changes nothing but costs a graph node
        loss = loss + regularizer

    def sums() -> dict[str, torch.Tensor]:
        correct = (logits.detach().argmax(dim=-1) == target).sum()
        return {"loss": losses.detach().sum(), "accuracy": correct.to(losses.dtype)}

    return Output(loss=loss, sums=LazySums(sums), count=len(target))
