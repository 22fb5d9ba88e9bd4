"""config/papers/caadam.yaml -> the study's runs (the `caadam` planner; docs/design.md, "Planners").

Per cell (a dataset and model: ResNet-20 on CIFAR-10/100 and Fashion-MNIST-56, six MLPs on California Housing):

- stage `main`: every arm x both protocols x `seeds` runs.
  * protocol `as_run`: the notebooks' design. They built the model once per cell and started all 30 runs of all
    seven optimizers from those weights (remigenet/CaAdam@ce14f7e results/*.ipynb, `clone_model` +
    `set_weights`), so here every run of the cell has init_seed = `as_run_init_seed`; run s draws its batch
    order and noise from seed s (the notebooks' runs differed only by batch order).
  * protocol `redrawn`: run s draws its initialization, batch order and noise from seed s. Arms share seeds,
    so comparisons are paired; the verdicts rest on this protocol.
  Arms: the notebooks' Keras baselines, CaAdam's three strategies in reference mode (what the runs did) and in
  described mode (what the paper defines), and Adam at lr x the kernel factor that reference mode gives this
  cell's model (`lr_of`: the LR-matched controls; depth has no single factor).
- stage `tune`: the learning-rate sweep, lr x `sweep.lr_factors` for each `sweep.arms`, `sweep.seeds` seeds of
  the redrawn protocol (seeds of their own, so that selecting on them does not bias the comparison after).
- stage `tuned`: each swept arm's winner (lowest mean validation loss, optrepro.caadam.tuning) re-run with the
  `seeds` seeds of the redrawn protocol. Planned as deferred specs resolved from the selection file that
  workflow/rules/caadam.smk writes (resolver `hparams_from`): a static design would have to run the full seed
  count at every grid point, six times the tuned runs.

Every spec's tags name its arm, cell, protocol and stage; a run two arms ask for (the same spec) is trained once,
and optrepro.caadam.analysis gives it to both arms by reading the plan, not the tags in its result.json.
Learning-rate floors: ReduceLROnPlateau's min_lr 2.5e-5 at lr 1e-3 is kept as the factor 1/40 of each arm's base lr
(`min_lr_factor` 0.025 in the callbacks), so an arm at another lr keeps the same schedule shape (the register
says so).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from optrepro import plan as planmod
from optrepro import problems
from optrepro.optim.caadam_rules import CONNECTION_STRATEGIES, DEFAULT_GAMMA, reference_multipliers
from optrepro.problems.catalog_caadam import parse_hidden
from optrepro.registry import check_keys, unknown

PROTOCOLS = ("as_run", "redrawn")
STAGES = ("main", "tune", "tuned")
TOP_KEYS = {"title", "order", "planner", "lr", "seeds", "as_run_init_seed", "callbacks", "cells", "arms", "sweep",
            "smoke"}
CELL_KEYS = {"name", "problem", "problem_args", "callbacks", "arms", "protocols", "sweep", "epochs"}
ARM_KEYS = {"optimizer", "hparams", "published", "lr_of", "label"}
SWEEP_KEYS = {"lr_factors", "seeds", "arms"}
CAADAM_OPTIMIZERS = {f"caadam_{s}": s for s in ("additive", "multiplicative", "depth")}


@dataclass(frozen=True)
class Arm:
    name: str
    optimizer: str
    hparams: Mapping[str, Any]
    label: str
    published: str | None = None  # the arm's name in paper/published/caadam.csv
    lr_of: str | None = None  # an Adam control: lr x the reference kernel factor of this CaAdam optimizer


@dataclass(frozen=True)
class Cell:
    name: str
    problem: str
    problem_args: Mapping[str, Any]
    callbacks: tuple[Mapping[str, Any], ...]
    arms: tuple[str, ...]
    protocols: tuple[str, ...]
    sweep: bool
    epochs: int | None = None


@dataclass(frozen=True)
class Design:
    paper: str
    scale: str
    lr: float
    seeds: tuple[int, ...]
    as_run_init_seed: int
    arms: Mapping[str, Arm]
    cells: tuple[Cell, ...]
    sweep_factors: tuple[float, ...]
    sweep_seeds: tuple[int, ...]
    sweep_arms: tuple[str, ...]
    results_dir: str  # results/<scale>
    device: Mapping[str, str] = field(default_factory=dict)  # problem -> device

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise unknown("CaAdam cell", name, [c.name for c in self.cells])

    def swept_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.sweep and self.sweep_arms]

    def tuned_arms(self, cell: Cell) -> list[str]:
        return list(self.sweep_arms) if cell.sweep else []


def _seeds(value: Any) -> tuple[int, ...]:
    return tuple(range(value)) if isinstance(value, int) else tuple(int(s) for s in value)


def design(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> Design:
    """The study config/papers/caadam.yaml asks for at `scale` (its smoke block already merged in)."""
    from optrepro.planners.grid import device_for

    paper = pconfig.get("paper", "caadam")
    check_keys(f"key in config/papers/{paper}.yaml", {k: v for k, v in pconfig.items() if k != "paper"}, TOP_KEYS)
    arms: dict[str, Arm] = {}
    for name, raw in pconfig["arms"].items():
        check_keys(f"key in {paper} arm {name!r}", raw, ARM_KEYS)
        lr_of = raw.get("lr_of")
        if lr_of is not None and lr_of not in CAADAM_OPTIMIZERS:
            raise unknown(f"lr_of of {paper} arm {name!r}", lr_of, CAADAM_OPTIMIZERS)
        if lr_of is not None and CAADAM_OPTIMIZERS[lr_of] not in CONNECTION_STRATEGIES:
            raise ValueError(f"{paper} arm {name!r}: depth scaling gives every tensor its own factor, there is no "
                             f"single learning rate to match; valid lr_of: caadam_additive, caadam_multiplicative")
        arms[name] = Arm(name=name, optimizer=raw["optimizer"], hparams=dict(raw.get("hparams") or {}),
                         label=raw.get("label", name), published=raw.get("published"), lr_of=lr_of)
    callbacks = {k: tuple(dict(c) for c in v) for k, v in pconfig["callbacks"].items()}
    cells = []
    for raw in pconfig["cells"]:
        check_keys(f"key in {paper} cell {raw.get('name')!r}", raw, CELL_KEYS)
        if raw["callbacks"] not in callbacks:
            raise unknown(f"callbacks of {paper} cell {raw['name']!r}", raw["callbacks"], callbacks)
        cell_arms = tuple(raw.get("arms", arms))
        for a in cell_arms:
            if a not in arms:
                raise unknown(f"arm of {paper} cell {raw['name']!r}", a, arms)
        swept = [a for a in (pconfig.get("sweep") or {}).get("arms", []) if a not in cell_arms]
        if raw.get("sweep", True) and swept:
            raise ValueError(f"{paper} cell {raw['name']!r} runs the sweep but not its arms {swept}: add them to the "
                             f"cell's arms or set sweep: false")
        protocols = tuple(raw.get("protocols", PROTOCOLS))
        for p in protocols:
            if p not in PROTOCOLS:
                raise unknown(f"protocol of {paper} cell {raw['name']!r}", p, PROTOCOLS)
        cells.append(Cell(name=raw["name"], problem=raw["problem"], problem_args=dict(raw.get("problem_args") or {}),
                          callbacks=callbacks[raw["callbacks"]], arms=cell_arms, protocols=protocols,
                          sweep=bool(raw.get("sweep", True)), epochs=raw.get("epochs")))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"{paper}: cell names must be unique, got {names}")
    sweep = dict(pconfig.get("sweep") or {})
    check_keys(f"key in {paper} sweep", sweep, SWEEP_KEYS)
    for a in sweep.get("arms", []):
        if a not in arms:
            raise unknown(f"arm of {paper} sweep", a, arms)
    results = f"{global_config.get('results_dir', 'results')}/{scale}"
    return Design(paper=paper, scale=scale, lr=float(pconfig["lr"]), seeds=_seeds(pconfig["seeds"]),
                  as_run_init_seed=int(pconfig["as_run_init_seed"]), arms=arms, cells=tuple(cells),
                  sweep_factors=tuple(float(f) for f in sweep.get("lr_factors", [])),
                  sweep_seeds=_seeds(sweep.get("seeds", [])), sweep_arms=tuple(sweep.get("arms", [])),
                  results_dir=results,
                  device={c.problem: device_for(c.problem, scale, global_config) for c in cells})


# --- the models' kernels, without torch ------------------------------------------------------------------

# The architectures of the CaAdam problems (optrepro.problems.caadam, models/keras_nets.py) at each scale:
# ResNet (classes, blocks per stage, widths) and MLP input width. tests/test_caadam_study.py checks the counts
# below against the problems' own models, at both scales.
RESNETS = {"caadam_cifar10_resnet20": 10, "caadam_cifar100_resnet20": 100, "caadam_fmnist_resnet20": 10}
RESNET_SHAPE = {"full": (3, (16, 32, 64)), "smoke": (1, (8, 16, 32))}
MLP_INPUTS = {"full": 8, "smoke": 10}  # California Housing's 8 features; smoke: scikit-learn's diabetes, 10


def resnet_kernel_counts(num_classes: int, blocks: int, widths: tuple[int, ...], in_channels: int = 3) -> list[int]:
    """Numel of each conv/dense kernel of KerasResNet, in registration order (stem, per block: 3x3 a, 1x1
    shortcut where the shape changes, 3x3 b; the Dense head last)."""
    counts = [9 * in_channels * widths[0]]
    cin = widths[0]
    for stage, width in enumerate(widths):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            counts.append(9 * cin * width)
            if stride != 1 or cin != width:
                counts.append(cin * width)
            counts.append(9 * width * width)
            cin = width
    return counts + [cin * num_classes]


def kernel_counts(problem: str, problem_args: Mapping[str, Any], scale: str) -> list[int]:
    """The kernel numels of a CaAdam cell's model at `scale`, in registration order."""
    if problem in RESNETS:
        blocks, widths = RESNET_SHAPE[scale]
        return resnet_kernel_counts(RESNETS[problem], blocks, widths)
    if problem == "caadam_california_mlp":
        widths = [MLP_INPUTS[scale], *parse_hidden(problem_args.get("hidden", "64,32")), 1]
        return [a * b for a, b in zip(widths[:-1], widths[1:])]
    raise unknown("CaAdam problem (no kernel counts known)", problem, [*RESNETS, "caadam_california_mlp"])


def arm_lr(d: Design, cell: Cell, arm: Arm) -> float:
    """The arm's base learning rate in this cell: the study's lr, or for an Adam control lr x the kernel factor
    that reference mode gives this cell's model (e.g. 1.9195 for additive on ResNet-20/CIFAR-10)."""
    if arm.lr_of is None:
        return float(arm.hparams.get("lr", d.lr))
    strategy = CAADAM_OPTIMIZERS[arm.lr_of]
    kernel, _ = reference_multipliers(kernel_counts(cell.problem, cell.problem_args, d.scale), strategy,
                                      DEFAULT_GAMMA[strategy])
    return d.lr * kernel


# --- the specs ---------------------------------------------------------------------------------------------

def seeds_of(d: Design, protocol: str, seed: int) -> dict[str, int]:
    if protocol == "as_run":
        return {"init_seed": d.as_run_init_seed, "data_seed": seed, "noise_seed": seed}
    return {"init_seed": seed, "data_seed": seed, "noise_seed": seed}


def _kwargs(d: Design, cell: Cell, arm: Arm, lr: float, protocol: str, seed: int, tags: dict) -> dict:
    return dict(paper=d.paper, problem=cell.problem, problem_args=dict(cell.problem_args), scale=d.scale,
                optimizer=arm.optimizer, hparams={**arm.hparams, "lr": lr}, controllers=[dict(c) for c in cell.callbacks],
                epochs=cell.epochs or problems.info(cell.problem).defaults[d.scale]["epochs"],
                device=d.device[cell.problem], **seeds_of(d, protocol, seed),
                tags={"arm": arm.name, "cell": cell.name, "protocol": protocol, "seed": seed, **tags})


def main_specs(d: Design) -> list[dict]:
    return [planmod.make_spec(**_kwargs(d, cell, d.arms[a], arm_lr(d, cell, d.arms[a]), protocol, seed,
                                        {"stage": "main"}))
            for cell in d.cells for a in cell.arms for protocol in cell.protocols for seed in d.seeds]


def tune_specs(d: Design) -> list[dict]:
    return [planmod.make_spec(**_kwargs(d, cell, d.arms[a], arm_lr(d, cell, d.arms[a]) * factor, "redrawn", seed,
                                        {"stage": "tune", "lr_factor": factor}))
            for cell in d.swept_cells() for a in d.tuned_arms(cell) for factor in d.sweep_factors
            for seed in d.sweep_seeds]


def selection_path(d: Design, cell: str, arm: str) -> str:
    """The JSON {"hparams": {"lr": winner}, ...} that optrepro.caadam.tuning writes for one cell and arm."""
    return f"{d.results_dir}/{d.paper}/select/{cell}/{arm}.json"


def tuned_specs(d: Design) -> list[planmod.DeferredSpec]:
    out = []
    for cell in d.swept_cells():
        for a in d.tuned_arms(cell):
            for seed in d.seeds:
                template = _kwargs(d, cell, d.arms[a], arm_lr(d, cell, d.arms[a]), "redrawn", seed,
                                   {"stage": "tuned"})
                planmod.make_spec(**template)  # every name checked now, not when the winner is known
                out.append(planmod.DeferredSpec(key=f"{d.paper}-{cell.name}-tuned-{a}-{seed}", template=template,
                                                depends_on=selection_path(d, cell.name, a), resolver="hparams_from",
                                                tags=dict(template["tags"])))
    return out


def entries(d: Design) -> list[dict | planmod.DeferredSpec]:
    if d.sweep_arms and len(d.sweep_factors) == 0:
        raise ValueError(f"{d.paper} sweep: arms {list(d.sweep_arms)} but no lr_factors")
    return [*main_specs(d), *tune_specs(d), *tuned_specs(d)]
