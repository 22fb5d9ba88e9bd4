"""ALSALS's transformer workloads: BERT-base on GLUE, GPT-2 small on OpenWebText (the authors' run_multiple.py and
TheMody/nanoGPTSLS@003004c).

GLUE: the prepared arrays hold bert-base-uncased WordPiece ids ([CLS] a [SEP] b [SEP], max length 256),
token types and lengths; a batch is cut to its longest sequence. The model is BertModel (no pooler) + a
linear head on [CLS]; full scale loads the pretrained weights from the local `bert_base_uncased` source.
The authors' loop never called model.train(), so dropout was inactive: `dropout` defaults to 0.0 (as run),
0.1 is BERT's own. They did not reshuffle (`shuffle=False`: batches in file order every epoch). The paper
reports validation accuracy: valid = test = the labelled GLUE validation split (MNLI: validation_matched).

GPT-2: windows of block_size+1 tokens of the OpenWebText token stream (nanoGPT's preparation). An
"example" is an aligned, non-overlapping window start, so an epoch visits every window once in a random
order (nanoGPT instead draws random offsets with replacement). Valid = test = the `val` stream.

Smoke: a 2-layer 32-wide BertConfig on generated token sequences whose label is a function of the first
token; a 2-layer 32-wide GPT2Config on the UTF-8 bytes of offline English text (vocabulary 256).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optrepro.problems.base import Output, Problem, Split, classification_output, data_root
from optrepro.problems.models.library import bert_classifier, gpt2_lm
from optrepro.problems.sources import english_text, load_source

_STREAMS: dict[tuple, dict[int, np.ndarray]] = {}


@dataclass
class GlueBert(Problem):
    name: ClassVar[str] = "alsals_glue_bert"
    task: ClassVar[str] = "sst2"
    num_labels: ClassVar[int] = 2
    validation_key: ClassVar[str] = "validation"
    dropout: float = 0.0
    shuffle: bool = False

    def data_args(self) -> dict:
        return {"shuffle": self.shuffle}

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
        valid_split = Split(*as_tensors(valid))
        return {"train": Split(*as_tensors(train), sequential=not self.shuffle), "valid": valid_split,
                "test": valid_split}

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
    metrics: ClassVar[tuple[str, ...]] = ("loss", "accuracy")
    block_size: int = 0  # 0: 1024 at full scale, 32 at smoke scale

    def __post_init__(self):
        self.block_size = self.block_size or (1024 if self.scale == "full" else 32)

    def data_args(self) -> dict:
        return {"block_size": self.block_size}

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

        def windows(stream_id: int) -> Split:
            starts = torch.arange(0, len(streams[stream_id]) - self.block_size - 1, self.block_size)
            return Split(starts, torch.full_like(starts, stream_id))

        train, val = windows(0), windows(1)
        if self.scale != "full":  # a few hundred windows per smoke epoch
            train = Split(*(t[:256] for t in train.tensors))
        return {"train": train, "valid": val, "test": val}

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
