"""An MLP on scikit-learn's bundled 8x8 digits: real data, offline, trains in a second."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from optrepro.problems.base import Problem, Split, classification_output


@dataclass
class DigitsMLP(Problem):
    name: ClassVar[str] = "digits_mlp"
    hidden: int = 64
    dropout: float = 0.0

    def load_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x / 16.0, dtype=torch.float32)
        y = torch.tensor(y, dtype=torch.long)
        # A fixed split, independent of every seed: 1197 train, 300 valid, 300 test.
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        x, y = x[perm], y[perm]
        return {"train": Split(x[:1197], y[:1197]), "valid": Split(x[1197:1497], y[1197:1497]),
                "test": Split(x[1497:], y[1497:])}

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, self.hidden), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(self.hidden, 10))

    def forward(self, model, batch, carry=None):
        x, y = batch
        return classification_output(model(x), y)
