"""NOS (Morgan & Hougen 2024) workloads: the CIFAR-10 search proxies and the EfficientNetV2-S transfer set
(proxies: OUStudent/NeuralOptimizerSearch@005dfce NeuralOptimizerSearch.py; transfer set: arXiv 2404.06679, abstract).
Proxy runs: 40 "epochs" of 200 (init) or 400 (evolution) steps of batch 128; `epochs` here counts passes over the
45k training images unless the problem argument `epoch_examples` sets an epoch's length (steps x batch size), as
the search does (optrepro.nos.fitness)."""
from optrepro.problems.registry import ProblemInfo, register

I = "optrepro.problems.images:"
SMOKE = {"batch_size": 64, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}

for name, cls, description in (
    ("nos_cifar10_convnet", "NOSCifar10ConvNet", "search surrogate (init): ConvNet base 32, no augmentation"),
    ("nos_cifar10_convnet48", "NOSCifar10ConvNetEvolution",
     "search surrogate (evolution): ConvNet base 48, standardised, reflect crop + flip + 8x8 cutout"),
):
    register(ProblemInfo(
        name=name,
        target=I + cls,
        defaults={"full": {"batch_size": 128, "epochs": 40, "eval_every": 1, "weight_decay": 0.0}, "smoke": SMOKE},
        args={"image_size": 0, "label_smoothing": 0.0, "epoch_examples": 0},
        datasets=("cifar10",),
        impl_version=2,  # 2: training metrics on a fixed 5,000 images; epoch_examples
        papers=("nos",),
        cost_per_epoch_s={"full": 4.0, "smoke": 0.2},
        gpu=True,
        description=f"NOS {description}; Keras CIFAR-10 images 45,000..49,999 validate",
    ))

for name, cls, source, cost in (
    ("nos_cifar100_effv2s", "NOSEfficientNetV2S", "cifar100", 300.0),
    ("nos_tinyimagenet_effv2s", "NOSTinyImageNetEfficientNetV2S", "tiny_imagenet", 600.0),
    ("nos_flowers102_effv2s", "NOSFlowers102", "flowers102", 15.0),
    ("nos_cars_effv2s", "NOSStanfordCars", "stanford_cars", 60.0),
    ("nos_caltech101_effv2s", "NOSCaltech101", "caltech101", 60.0),
):
    datasets = (source,) if cls in ("NOSEfficientNetV2S", "NOSTinyImageNetEfficientNetV2S") else (
        source, "efficientnetv2_s_in1k")
    register(ProblemInfo(
        name=name,
        target=I + cls,
        defaults={"full": {"batch_size": 64, "epochs": 30, "eval_every": 1, "weight_decay": 0.0}, "smoke": SMOKE},
        args={"image_size": 224, "label_smoothing": 0.0},
        datasets=datasets,
        papers=("nos",),
        cost_per_epoch_s={"full": cost, "smoke": 0.5},
        gpu=True,
        description=f"EfficientNetV2-S (timm tf_efficientnetv2_s) on {source}"
                    + (" fine-tuned from ImageNet-1k weights" if len(datasets) > 1 else " from scratch"),
    ))
