"""ALSALS (Kenneweg et al. 2024) workloads as the authors' run scripts set them
(TheMody/Improving-Line-Search-Methods-for-Large-Scale-Neural-Network-Training@14be82a: run_multiple.py,
run_multiple_img.py at 600739c; TheMody/nanoGPTSLS@003004c train.py).

GLUE: batch 32, 5 epochs, accuracy on validation each epoch. Images: micro-batch 128 x grad_accum 2 = 256,
12 epochs, test metrics each epoch; the CIFAR problems take `depth` (the scripts' ResNet-50 or the follow-up
table's ResNet-34). GPT-2: 12 sequences x 40 accumulation = 480 x 1024 tokens per step; the number of steps the
paper ran is not stated in any readable source, so the training set is a token budget (`train_windows`, default
480,000 windows = 1,000 steps = 491.5 M tokens) and one epoch visits it once.

Every problem can hold part of its training data out for tuning (`valid_examples`, `valid_images`,
`valid_windows`); by default valid = test, as the authors ran them (they selected nothing).

cost_per_epoch_s (full) are rough single-GPU estimates used only to size batches of runs. GPT-2's: one epoch of
the default budget is about 4.2e17 FLOPs (857 M per token forward+backward, nanoGPT's estimate for GPT-2 small
at context 1024), about 12 GPU-hours at half of an A100's 19.5 TFLOP/s in fp32 without TF32.
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
        impl_version=2,  # 2: train metrics on the first 20,000 training examples
        args={"dropout": 0.0, "shuffle": False, "valid_examples": 0},
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
    impl_version=2,  # 2: a token budget (train_windows) and train metrics on the first 48,000 windows
    args={"block_size": 0, "train_windows": 480_000, "valid_windows": 0},
    datasets=("openwebtext",),
    papers=("alsals",),
    cost_per_epoch_s={"full": 43_000.0, "smoke": 0.5},
    gpu=True,
    description="GPT-2 small (124M, from GPT2Config, vocab 50304, dropout 0) on OpenWebText, context 1024, "
                "a 491.5 M-token budget",
))

for name, cls, source, cost in (("alsals_cifar10_resnet34", "ALSALSCifar10ResNet34", "cifar10", 25.0),
                                ("alsals_cifar100_resnet34", "ALSALSCifar100ResNet34", "cifar100", 25.0),
                                ("alsals_imagenet_resnet50", "ALSALSImageNetResNet50", "imagenet", 1800.0)):
    imagenet = source == "imagenet"
    register(ProblemInfo(
        name=name,
        target=I + cls,
        defaults={"full": {"batch_size": 256, "grad_accum": 2, "epochs": 12, "eval_every": 1, "weight_decay": 0.0},
                  "smoke": {"batch_size": 64, "grad_accum": 2, "epochs": 2, "eval_every": 1, "weight_decay": 0.0}},
        args={"image_size": 0, "label_smoothing": 0.0, "valid_images": 0,
              # ImageNet JPEG pipeline: the authors' Resize 256 + RandomCrop 224
              **({"train_crop": "resize_random"} if imagenet else {"depth": 34})},
        datasets=(source,),
        papers=("alsals",),
        cost_per_epoch_s={"full": cost, "smoke": 0.5},
        gpu=True,
        description=f"torchvision ResNet from scratch on {source} "
                    + ("(JPEGs decoded per batch: Resize 256 + RandomCrop 224 + flip)" if imagenet
                       else "(crop pad 4 + flip; depth 34 or 50)"),
    ))
