"""Fuzzy second-order (Bensadok & Babar 2024) workloads. The paper's protocol could not be read (arXiv
2403.15416, §3 onward); these follow our own practical protocol: EfficientNet-B3 from scratch."""
from optrepro.problems.registry import ProblemInfo, register

I = "optrepro.problems.images:"

register(ProblemInfo(
    name="fuzzy_tinyimagenet_effb3",
    target=I + "FuzzyTinyImageNetEfficientNetB3",
    defaults={"full": {"batch_size": 128, "epochs": 30, "eval_every": 1, "weight_decay": 0.0},
              "smoke": {"batch_size": 64, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}},
    args={"image_size": 0, "label_smoothing": 0.0},
    datasets=("tiny_imagenet",),
    papers=("fuzzy",),
    cost_per_epoch_s={"full": 120.0, "smoke": 0.5},
    gpu=True,
    description="timm efficientnet_b3 (pretrained=False) on TinyImageNet 64x64, crop + flip",
))

register(ProblemInfo(
    name="fuzzy_imagenet_effb3",
    target=I + "FuzzyImageNetEfficientNetB3",
    defaults={"full": {"batch_size": 256, "epochs": 30, "eval_every": 1, "weight_decay": 0.0},
              "smoke": {"batch_size": 64, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}},
    args={"image_size": 0, "label_smoothing": 0.0, "train_crop": "random_resized", "valid_images": 10_000},
    datasets=("imagenet",),
    papers=("fuzzy",),
    cost_per_epoch_s={"full": 3600.0, "smoke": 0.5},
    gpu=True,
    description="timm efficientnet_b3 (pretrained=False) on ImageNet-1k, JPEGs decoded per batch: "
                "RandomResizedCrop 300 + flip; Resize 320 + CenterCrop 300 (bicubic)",
))
