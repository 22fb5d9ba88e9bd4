"""ALSALS's transformer workloads: BERT-base on GLUE, GPT-2 small on OpenWebText (the authors' run_multiple.py and
TheMody/nanoGPTSLS@003004c).

GLUE: the prepared arrays hold bert-base-uncased WordPiece ids ([CLS] a [SEP] b [SEP], max length 256),
token types and lengths; a batch is cut to its longest sequence. The model is BertModel (no pooler) + a
linear head on [CLS]; full scale loads the pretrained weights from the local `bert_base_uncased` source.
The authors' loop never called model.train(), so dropout was inactive: `dropout` defaults to 0.0 (as run),
0.1 is BERT's own. They did not reshuffle (`shuffle=False`: batches in file order every epoch). The paper
reports validation accuracy: test = the labelled GLUE validation split (MNLI: validation_matched), and by default
valid = test, as the authors ran it; `valid_examples=N` holds N training examples out instead (a fixed random
subset, independent of every run seed; the rest keep their file order), so tuning never sees the reported split.
Train metrics use the first 20,000 training examples: a full pass over MNLI's 392,702 every epoch would add a
third of an epoch's cost per evaluation.

GPT-2: windows of block_size+1 tokens of the OpenWebText token stream (nanoGPT's preparation). An
"example" is an aligned, non-overlapping window start, so an epoch visits every window once in a random
order (nanoGPT instead draws random offsets with replacement). The training set is the first `train_windows`
windows of the `train` stream: the default 480,000 windows (1,000 steps of 480 x 1,024 tokens, 491.5 M tokens) is
this replication's token budget, since the number of steps the authors ran is not stated in any readable source;
0 takes every window. Test = the `val` stream; valid = test by default, or with `valid_windows=N` the N windows of
the `train` stream that follow the training windows (never trained on). Train metrics use the first 48,000
training windows (a tenth of the budget).

Smoke: a 2-layer 32-wide BertConfig on generated token sequences whose label is a function of the first
token; a 2-layer 32-wide GPT2Config on the UTF-8 bytes of offline English text (vocabulary 256), at most 256
training windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optrepro.problems.base import Output, Problem, Split, classification_output, data_root
from optrepro.problems.imagenet import holdout_split
from optrepro.problems.models.library import bert_classifier, gpt2_lm
from optrepro.problems.sources import english_text, load_source

_STREAMS: dict[tuple, dict[int, np.ndarray]] = {}


@dataclass
class GlueBert(Problem):
    name: ClassVar[str] = "alsals_glue_bert"
    task: ClassVar[str] = "sst2"
    num_labels: ClassVar[int] = 2
    validation_key: ClassVar[str] = "validation"
    train_eval_size: ClassVar[int | None] = 20_000
    dropout: float = 0.0
    shuffle: bool = False
    valid_examples: int = 0  # 0: valid = test (the GLUE validation split); N: N training examples held out

    def __post_init__(self):
        if self.valid_examples < 0:
            raise ValueError(f"valid_examples must be >= 0 (0: validate on the test split), got {self.valid_examples}")

    def data_args(self) -> dict:
        return {"shuffle": self.shuffle, "valid_examples": self.valid_examples}

    def arrays(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        if self.scale == "full":
            splits = ("train", self.validation_key)
            keys = tuple(f"{k}_{s}" for s in splits for k in ("input_ids", "token_type_ids", "length", "y"))
            a = load_source(f"glue_{self.task}", keys)
            return tuple(tuple(a[f"{k}_{s}"] for k in ("input_ids", "token_type_ids", "length", "y")) for s in splits)
        rng = np.random.RandomState(7)
        n, length = 320, 16
        ids = rng.randint(5, 128, (n, length))
        ids[:, 0] = 1  # [CLS]
        lengths = rng.randint(8, length + 1, n)
        ids[np.arange(length)[None, :] >= lengths[:, None]] = 0  # [PAD]
        types = (np.arange(length)[None, :] >= lengths[:, None] // 2).astype(np.int64)
        y = ids[:, 1] % self.num_labels
        return (ids[:256], types[:256], lengths[:256], y[:256]), (ids[256:], types[256:], lengths[256:], y[256:])

    def load_splits(self) -> dict[str, Split]:
        (train, valid) = self.arrays()
        as_tensors = lambda a: (torch.from_numpy(np.asarray(a[0]).astype(np.int32)),  # noqa: E731
                                torch.from_numpy(np.asarray(a[1]).astype(np.int8)),
                                torch.from_numpy(np.asarray(a[2]).astype(np.int64)),
                                torch.from_numpy(np.asarray(a[3]).astype(np.int64)))
        test = Split(*as_tensors(valid))
        train = as_tensors(train)
        if not self.valid_examples:
            return {"train": Split(*train, sequential=not self.shuffle), "valid": test, "test": test}
        rows = holdout_split(len(train[0]), self.valid_examples, what="valid_examples")
        kept, held = (torch.from_numpy(r) for r in rows)
        return {"train": Split(*(t[kept] for t in train), sequential=not self.shuffle),
                "valid": Split(*(t[held] for t in train)), "test": test}

    def build_model(self) -> nn.Module:
        if self.scale == "full":
            from optrepro.data import weights_dir

            return bert_classifier(self.num_labels, self.dropout, weights_dir("bert_base_uncased", root=data_root()))
        return bert_classifier(self.num_labels, self.dropout, tiny=True)

    def forward(self, model, batch, carry=None) -> Output:
        ids, types, lengths, y = batch
        longest = int(lengths.max())
        ids, types = ids[:, :longest].long(), types[:, :longest].long()
        mask = (torch.arange(longest, device=ids.device)[None, :] < lengths[:, None]).long()
        return classification_output(model(ids, types, mask), y)


class GlueSST2(GlueBert):
    name: ClassVar[str] = "alsals_glue_sst2_bert"
    task: ClassVar[str] = "sst2"


class GlueQNLI(GlueBert):
    name: ClassVar[str] = "alsals_glue_qnli_bert"
    task: ClassVar[str] = "qnli"


class GlueMNLI(GlueBert):
    name: ClassVar[str] = "alsals_glue_mnli_bert"
    task: ClassVar[str] = "mnli"
    num_labels: ClassVar[int] = 3
    validation_key: ClassVar[str] = "validation_matched"


class GlueMRPC(GlueBert):
    name: ClassVar[str] = "alsals_glue_mrpc_bert"
    task: ClassVar[str] = "mrpc"


@dataclass
class GPT2OpenWebText(Problem):
    name: ClassVar[str] = "alsals_gpt2_owt"
    train_eval_size: ClassVar[int | None] = 48_000
    smoke_windows: ClassVar[int] = 256  # smoke scale trains on at most this many windows of its byte stream
    block_size: int = 0  # 0: 1024 at full scale, 32 at smoke scale
    train_windows: int = 480_000  # the first N windows of the train stream; 0: all of them
    valid_windows: int = 0  # 0: valid = test (the val stream); N: the N train-stream windows after the training ones

    def __post_init__(self):
        self.block_size = self.block_size or (1024 if self.scale == "full" else 32)
        for name in ("train_windows", "valid_windows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def data_args(self) -> dict:
        return {"block_size": self.block_size, "train_windows": self.train_windows,
                "valid_windows": self.valid_windows}

    def streams(self) -> dict[int, np.ndarray]:
        """Token streams (0: train, 1: val), loaded once per process; memory-mapped at full scale."""
        key = self.cache_key()
        if key not in _STREAMS:
            if self.scale == "full":
                a = load_source("openwebtext", ("train", "val"))
                _STREAMS[key] = {0: a["train"], 1: a["val"]}
            else:
                tokens = np.frombuffer(english_text().encode("utf-8"), dtype=np.uint8).astype(np.int64)
                cut = int(0.9 * len(tokens))
                _STREAMS[key] = {0: tokens[:cut], 1: tokens[cut:]}
        return _STREAMS[key]

    def load_splits(self) -> dict[str, Split]:
        streams = self.streams()

        def windows(stream_id: int) -> torch.Tensor:
            return torch.arange(0, len(streams[stream_id]) - self.block_size - 1, self.block_size)

        starts, val = windows(0), windows(1)
        n_train = self.train_windows or len(starts)
        if self.scale != "full":
            n_train = min(n_train, self.smoke_windows)
        if n_train + self.valid_windows > len(starts):
            raise ValueError(f"train_windows {n_train} + valid_windows {self.valid_windows} exceed the "
                             f"{len(starts)} windows of the training stream")
        split = lambda s, stream_id: Split(s, torch.full_like(s, stream_id))  # noqa: E731
        test = split(val, 1)
        valid = split(starts[n_train:n_train + self.valid_windows], 0) if self.valid_windows else test
        return {"train": split(starts[:n_train], 0), "valid": valid, "test": test}

    def build_model(self) -> nn.Module:
        if self.scale == "full":
            return gpt2_lm()
        return gpt2_lm(tiny=True, vocab_size=256, block_size=self.block_size)

    def forward(self, model, batch, carry=None) -> Output:
        starts, stream_ids = batch
        stream = self.streams()[int(stream_ids[0])]
        index = starts.cpu().numpy()[:, None] + np.arange(self.block_size + 1)[None, :]
        tokens = torch.from_numpy(np.asarray(stream[index]).astype(np.int64)).to(starts.device)
        x, y = tokens[:, :-1], tokens[:, 1:]
        logits = model(input_ids=x).logits
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        per_seq = per_token.view(y.shape).mean(dim=1)
        correct = (logits.argmax(-1) == y).float().mean(dim=1)
        return Output(loss=per_seq.mean(), sums={"loss": per_seq.sum().detach(), "accuracy": correct.sum().detach()},
                      count=len(y))
