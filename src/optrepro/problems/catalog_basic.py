"""The scikit-learn digits MLP: the loop's end-to-end test problem (real data, offline, seconds)."""
from optrepro.problems.registry import ProblemInfo, register

register(ProblemInfo(
    name="digits_mlp",
    target="optrepro.problems.digits:DigitsMLP",
    defaults={
        "full": {"batch_size": 64, "epochs": 30, "eval_every": 1},
        "smoke": {"batch_size": 64, "epochs": 3, "eval_every": 1},
    },
    args={"hidden": 64, "dropout": 0.0},
    cost_per_epoch_s={"full": 0.05, "smoke": 0.02},
    papers=("core",),
    description="MLP on scikit-learn's 8x8 digits (1797 images, bundled offline)",
))
