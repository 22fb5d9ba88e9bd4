"""CaAdam (Genet & Inzirillo 2024) workloads: Keras ResNet-20 and California Housing MLPs (remigenet/CaAdam@ce14f7e
results/*.ipynb).

Protocol defaults: batch 64 (California 128), at most 1000 epochs ended by EarlyStopping/ReduceLROnPlateau on
val_loss (controllers configured in config/papers/caadam.yaml), evaluation every epoch, no weight decay (the
ResNet's Keras l2(1e-4) is part of the problem's loss).
"""
from optrepro.params import string
from optrepro.problems.registry import ProblemInfo, register

T = "optrepro.problems.caadam:"


def parse_hidden(hidden: str) -> tuple[int, ...]:
    """The MLP's hidden widths from the problem argument "64,32" (torch-free: the CaAdam planner needs them)."""
    try:
        units = tuple(int(u) for u in str(hidden).split(","))
    except ValueError:
        units = ()
    if not units or any(u <= 0 for u in units):
        raise ValueError(f"hidden must be comma-separated positive ints such as '64,32'; got {hidden!r}. "
                         "The paper's: 64,32 | 128,64,32 | 128,128,64 | 256,128,64,32 | 128,128,128,128,128 | "
                         "1024,256,64,16")
    return units


RESNET_ARGS = {"l2": 1e-4, "validation_split": 0.2}
SMOKE = {"batch_size": 64, "epochs": 3, "eval_every": 1, "weight_decay": 0.0, "l2_in_loss": 1e-4}

for name, cls, source, full_cost in (
    ("caadam_cifar10_resnet20", "CaAdamCifar10", "cifar10", 2.2),
    ("caadam_cifar100_resnet20", "CaAdamCifar100", "cifar100", 2.2),
    ("caadam_fmnist_resnet20", "CaAdamFashionMNIST", "fashion_mnist", 4.3),
):
    register(ProblemInfo(
        name=name,
        target=T + cls,
        defaults={"full": {"batch_size": 64, "epochs": 1000, "eval_every": 1, "weight_decay": 0.0,
                           "l2_in_loss": 1e-4},
                  "smoke": SMOKE},
        args=RESNET_ARGS,
        datasets=(source,),
        papers=("caadam",),
        cost_per_epoch_s={"full": full_cost, "smoke": 0.4},
        gpu=True,
        impl_version=1,
        metrics=("loss", "accuracy", "reg_loss"),  # reg_loss: loss + L2 penalty, Keras's val_loss
        description=f"Keras ResNet-20 (conv biases, he_normal, L2 1e-4 on 3x3 kernels, BN 0.99/1e-3) on {source}, "
                    "last 20% of train as validation, no augmentation",
    ))

register(ProblemInfo(
    name="caadam_california_mlp",
    target=T + "CaAdamCaliforniaMLP",
    defaults={"full": {"batch_size": 128, "epochs": 1000, "eval_every": 1, "weight_decay": 0.0},
              "smoke": {"batch_size": 32, "epochs": 3, "eval_every": 1, "weight_decay": 0.0}},
    args={"hidden": "64,32", "validation_split": 0.2},
    arg_types={"hidden": string(r"[1-9][0-9]*(,[1-9][0-9]*)*", note="the hidden layers' widths, e.g. '64,32'")},
    datasets=("california_housing",),
    papers=("caadam",),
    cost_per_epoch_s={"full": 0.1, "smoke": 0.02},
    gpu=False,
    impl_version=1,
    metrics=("loss", "mae"),
    description="Keras MLP Dense(u, relu)... Dense(1) on standardized California Housing (MSE; RMSE = sqrt(loss))",
))
