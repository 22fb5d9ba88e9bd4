"""The eight DeepOBS problems of "Descending through a Crowded Valley" (fsschneider/DeepOBS).

Defaults are DeepOBS's DEFAULT_TEST_PROBLEMS_SETTINGS (batch size, epochs). Each problem's L2 factor is the
problem argument `weight_decay` (also shown as `l2_in_loss`), applied as 0.5*wd*sum(w^2) on weights inside the
loss; the optimizer's own `weight_decay` default is 0.
cost_per_epoch_s["full"] is the authors' per-run wall time / epochs, from the gaps between consecutive
run timestamps in their logs (SirRob1997/Crowded-Valley---Results).
"""
from optrepro.params import integer
from optrepro.problems.registry import ProblemInfo, register

T = "optrepro.problems.deepobs:"

PROBLEMS = (
    # name, class, dataset, batch, epochs, weight decay, full s/epoch, smoke batch, gpu, description
    ("quadratic_deep", "QuadraticDeep", None, 128, 100, 0.0, 0.1, 128, False,
     "100-d noisy quadratic, 90 eigenvalues U(0,1) and 10 U(30,60), theta0 = 1"),
    ("mnist_vae", "MNISTVAE", "mnist", 64, 50, 0.0, 24.0, 64, True,
     "conv VAE (8-d latent, dropout 0.2) on MNIST, loss = squared error + KL"),
    ("fmnist_2c2d", "FashionMNIST2c2d", "fashion_mnist", 128, 100, 0.0, 4.4, 64, True,
     "2 conv + 2 dense (trunc-normal 0.05 init, bias 0.05) on Fashion-MNIST"),
    ("cifar10_3c3d", "Cifar10_3c3d", "cifar10", 128, 100, 0.002, 13.0, 64, True,
     "3 conv + 3 dense on CIFAR-10 with TF augmentation, L2 0.002"),
    ("fmnist_vae", "FashionMNISTVAE", "fashion_mnist", 64, 100, 0.0, 24.0, 64, True,
     "conv VAE (8-d latent, dropout 0.2) on Fashion-MNIST"),
    ("cifar100_allcnnc", "Cifar100AllCNNC", "cifar100", 256, 350, 5e-4, 24.0, 64, True,
     "All-CNN-C (dropout 0.2/0.5, bias 0.1) on CIFAR-100 with TF augmentation, L2 5e-4"),
    ("svhn_wrn164", "SVHNWRN164", "svhn", 128, 160, 5e-4, 97.0, 64, True,
     "Wide ResNet 16-4 (BN momentum 0.9) on SVHN with crop + lighting augmentation, L2 5e-4"),
    ("tolstoi_char_rnn", "TolstoiCharRNN", "tolstoi", 50, 200, 0.0, 90.0, 8, True,
     "2-layer LSTM(128) char model on War and Peace, seq 50, state carried across batches"),
)

# quadratic_deep 2: default Hessian = draw 0 (a fresh process) instead of 1, and the order_seed argument
# (paper/ambiguity/deepobs.yaml: deepobs-quadratic-hessian-instance, deepobs-tf1-epoch-order).
IMPL_VERSION = {"quadratic_deep": 2}
# what each evaluation logs: the classifiers with an L2 penalty also log reg_loss (loss + penalty, DeepOBS's
# logged loss); the char RNN has no penalty, the VAEs and the quadratic no accuracy
METRICS = {"quadratic_deep": ("loss",), "mnist_vae": ("loss",), "fmnist_vae": ("loss",),
           "tolstoi_char_rnn": ("loss", "accuracy")}

for name, cls, dataset, batch, epochs, wd, cost, smoke_batch, gpu, description in PROBLEMS:
    args = {} if name in ("quadratic_deep", "tolstoi_char_rnn") else {"weight_decay": wd}
    if name == "quadratic_deep":
        args = {"hessian_instance": 0, "order_seed": None}
    arg_types = {}
    if name == "tolstoi_char_rnn":
        args = {"batch_size": None, "seq_length": None}
        arg_types = {k: integer(1, nullable=True, note="null: the protocol's") for k in args}
    register(ProblemInfo(
        name=name,
        target=T + cls,
        # weight_decay: what the optimizer adds (none); l2_in_loss: the problem's own 0.5*wd*sum(w^2) penalty.
        defaults={"full": {"batch_size": batch, "epochs": epochs, "eval_every": 1, "weight_decay": 0.0,
                           "l2_in_loss": wd},
                  "smoke": {"batch_size": smoke_batch, "epochs": 2, "eval_every": 1, "weight_decay": 0.0,
                            "l2_in_loss": wd}},
        args=args,
        arg_types=arg_types,
        datasets=() if dataset is None else (dataset,),
        papers=("crowded_valley",),
        cost_per_epoch_s={"full": cost, "smoke": 0.3},
        gpu=gpu,
        impl_version=IMPL_VERSION.get(name, 1),
        metrics=METRICS.get(name, ("loss", "accuracy", "reg_loss")),
        description=description,
    ))
