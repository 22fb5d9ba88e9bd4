"""Model definitions, one module per family: Keras ports (CaAdam, NOS proxy), DeepOBS's TF nets, and
library models (torchvision ResNets, timm EfficientNets, transformers BERT/GPT-2) built without downloads."""
