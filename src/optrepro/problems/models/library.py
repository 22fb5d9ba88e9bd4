"""Library models, built from configs without downloads: torchvision ResNets, timm EfficientNets, BERT, GPT-2.

Full scale loads pretrained weights only from verified local data sources (optrepro.data.weights_dir /
weights_file); nothing here downloads. Libraries are imported inside the functions so that the problem
registry imports without them.
"""
from __future__ import annotations

from torch import nn

from optrepro.registry import unknown


# --- torchvision ResNets (ALSALS images) ----------------------------------------------------------
def torchvision_resnet(depth: int, num_classes: int) -> nn.Module:
    """torchvision ResNet-18/34/50 from scratch (weights=None), ImageNet stem kept (as the authors' stock models);
    depth 10 = ResNet(BasicBlock, [1, 1, 1, 1]), the smoke stand-in built by the same class."""
    from torchvision.models import resnet

    if depth == 10:
        return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    builders = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}
    if depth not in builders:
        raise unknown("ResNet depth", depth, (10, *builders))
    return builders[depth](weights=None, num_classes=num_classes)


# --- timm EfficientNets (fuzzy: B3; NOS: V2-S) ----------------------------------------------------
def timm_model(name: str, num_classes: int, weights_file: str | None = None, **kwargs) -> nn.Module:
    """timm model `name` with a new classifier; pretrained only from a local weights file (never the hub)."""
    import timm

    if weights_file is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    return timm.create_model(name, pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay={"file": str(weights_file)}, **kwargs)


# --- BERT (ALSALS GLUE) ---------------------------------------------------------------------------
class BertClassifier(nn.Module):
    """BertModel (no pooler) + a linear head on the [CLS] hidden state, as the ALSALS authors' embedder."""

    def __init__(self, encoder: nn.Module, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, token_type_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids,
                              attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[:, 0])


def bert_classifier(num_labels: int, dropout: float, pretrained_dir=None, tiny: bool = False) -> BertClassifier:
    """BERT-base from a local `from_pretrained` directory (full scale) or a tiny random BertConfig (smoke)."""
    from transformers import BertConfig, BertModel

    if pretrained_dir is not None:
        encoder = BertModel.from_pretrained(str(pretrained_dir), add_pooling_layer=False, local_files_only=True,
                                            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    else:
        config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout) if tiny else BertConfig(
                                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        encoder = BertModel(config, add_pooling_layer=False)
    return BertClassifier(encoder, num_labels)


# --- GPT-2 (ALSALS language modelling) ------------------------------------------------------------
def gpt2_lm(tiny: bool = False, vocab_size: int = 50304, block_size: int = 1024) -> nn.Module:
    """GPT-2 small (124M: 12 layers, 12 heads, 768 wide, context 1024, dropout 0, tied embeddings), built from
    a GPT2Config with nanoGPT's padded vocabulary 50304; smoke: 2 layers, 2 heads, 32 wide."""
    from transformers import GPT2Config, GPT2LMHeadModel

    size = dict(n_layer=2, n_head=2, n_embd=32) if tiny else dict(n_layer=12, n_head=12, n_embd=768)
    eot = min(50256, vocab_size - 1)  # GPT-2's <|endoftext|>; the last id of a toy vocabulary
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot, **size)
    return GPT2LMHeadModel(config)
