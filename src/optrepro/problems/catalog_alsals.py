"""ALSALS (Kenneweg et al. 2024) workloads as the authors' run scripts set them
(TheMody/Improving-Line-Search-Methods-for-Large-Scale-Neural-Network-Training@14be82a: run_multiple.py,
run_multiple_img.py; TheMody/nanoGPTSLS@003004c train.py).

GLUE: batch 32, 5 epochs, accuracy on validation each epoch. Images: micro-batch 128 x grad_accum 2 = 256,
12 epochs, test metrics each epoch. GPT-2: 12 sequences x 40 accumulation = 480 x 1024 tokens per step; the
number of steps the paper ran is not stated in any readable source, so `epochs` is a placeholder of 1 for configs to
override with a step budget.
"""
from optrepro.problems.registry import ProblemInfo, register

L = "optrepro.problems.language:"
I = "optrepro.problems.images:"

for task, cls, cost in (("sst2", "GlueSST2", 120.0), ("qnli", "GlueQNLI", 190.0), ("mnli", "GlueMNLI", 700.0),
                        ("mrpc", "GlueMRPC", 7.0)):
    register(ProblemInfo(
        name=f"alsals_glue_{task}_bert",
        target=L + cls,
        defaults={"full": {"batch_size": 32, "epochs": 5, "eval_every": 1, "weight_decay": 0.0},
                  "smoke": {"batch_size": 32, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}},
        args={"dropout": 0.0, "shuffle": False},
        datasets=(f"glue_{task}", "bert_base_uncased"),
        papers=("alsals",),
        cost_per_epoch_s={"full": cost, "smoke": 0.3},
        gpu=True,
        description=f"BERT-base (pretrained, local weights) + linear [CLS] head on GLUE {task.upper()}",
    ))

register(ProblemInfo(
    name="alsals_gpt2_owt",
    target=L + "GPT2OpenWebText",
    defaults={"full": {"batch_size": 480, "grad_accum": 40, "epochs": 1, "eval_every": 1, "weight_decay": 0.0},
              "smoke": {"batch_size": 32, "grad_accum": 1, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}},
    args={"block_size": 0},
    datasets=("openwebtext",),
    papers=("alsals",),
    cost_per_epoch_s={"full": 3.0e6, "smoke": 0.5},
    gpu=True,
    description="GPT-2 small (124M, from GPT2Config, vocab 50304, dropout 0) on OpenWebText, context 1024",
))

for name, cls, source, cost in (("alsals_cifar10_resnet34", "ALSALSCifar10ResNet34", "cifar10", 25.0),
                                ("alsals_cifar100_resnet34", "ALSALSCifar100ResNet34", "cifar100", 25.0),
                                ("alsals_imagenet_resnet50", "ALSALSImageNetResNet50", "imagenet", 1800.0)):
    register(ProblemInfo(
        name=name,
        target=I + cls,
        defaults={"full": {"batch_size": 256, "grad_accum": 2, "epochs": 12, "eval_every": 1, "weight_decay": 0.0},
                  "smoke": {"batch_size": 64, "grad_accum": 2, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}},
        args={"image_size": 0, "label_smoothing": 0.0,
              # ImageNet JPEG pipeline: the authors' Resize 256 + RandomCrop 224; valid = test (0 held out)
              **({"train_crop": "resize_random", "valid_images": 0} if source == "imagenet" else {})},
        datasets=(source,),
        papers=("alsals",),
        cost_per_epoch_s={"full": cost, "smoke": 0.5},
        gpu=True,
        description=f"torchvision ResNet from scratch on {source} "
                    + ("(JPEGs decoded per batch: Resize 256 + RandomCrop 224 + flip)" if source == "imagenet"
                       else "(crop pad 4 + flip)"),
    ))
