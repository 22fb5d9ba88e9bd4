"""The NOS fitness of a genome: the learning-rate protocol on a CIFAR-10 proxy, as the authors' search code runs it.

OUStudent/NeuralOptimizerSearch@005dfce NeuralOptimizerSearch.py, `fitness_function_init` (the initial pool:
ConvNet base 32, T = 8,000) and `fitness_function_evolution` (particles and mutants: ConvNet base 48 with
augmentation and cutout, T = 16,000):

1. three short runs at peak rates 10, 1e-2, 1e-5: 4 epochs of 200 steps, each stopped early when its training
   accuracy is below 0.25 at the end of the third epoch or later. The optimizer's schedule is set for the full
   run (T steps, 800 warm-up), so these runs only ever see the warm-up.
2. all three below 0.25: the genome fails. Otherwise the same for 1, 1e-1, 1e-3, 1e-4.
3. the best of the seven below 0.40: the genome fails. Otherwise the final run at the rate of the best one:
   40 epochs of 200 (init) or 400 (evolution) steps, stopped early when its training accuracy is below 0.40 at
   the end of the fifth epoch or later.
4. fitness = the best validation accuracy of the final run over its epochs.

Each run is an ordinary optrepro run (content-addressed spec, `optrepro.runner.run_one`): cached, resumable and
listed like any other. A training accuracy here is measured after each epoch on a fixed 5,000 training images
in evaluation mode (the authors' Keras `accuracy` is the running mean over the epoch's training batches); the
values of epochs >= 1 count, as Keras's history holds only trained epochs.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from optrepro import plan as planmod


@dataclass(frozen=True)
class Proxy:
    """One proxy task. Epochs count steps (steps_per_epoch), as the authors' Keras fit(steps_per_epoch=...)."""

    problem: str
    total_steps: int  # T of the optimizer's in-run schedules (decays, momentum) and of the final run
    warmup_steps: int
    sweep_steps_per_epoch: int
    final_steps_per_epoch: int
    sweep_epochs: int = 4
    final_epochs: int = 40
    batch_size: int = 128

    def __post_init__(self):
        sweep = self.sweep_epochs * self.sweep_steps_per_epoch
        if sweep > self.warmup_steps:
            # a sweep run's loop schedule spans the sweep only; the authors' rate stays in its warm-up (t / W)
            raise ValueError(f"proxy {self.problem}: a sweep run of {sweep} steps must stay within the "
                             f"{self.warmup_steps} warm-up steps")
        if self.final_epochs * self.final_steps_per_epoch != self.total_steps:
            raise ValueError(f"proxy {self.problem}: the final run ({self.final_epochs} x "
                             f"{self.final_steps_per_epoch} steps) must last total_steps = {self.total_steps}")


@dataclass(frozen=True)
class Protocol:
    first: tuple[float, ...] = (10.0, 1e-2, 1e-5)
    then: tuple[float, ...] = (1.0, 1e-1, 1e-3, 1e-4)
    kill_threshold: float = 0.25  # sweep runs: stop below this training accuracy from kill_from_epoch on
    kill_from_epoch: int = 3  # the authors' FiveEpochCallback(epoch=2): Keras epoch index 2 is our epoch 3
    pass_threshold: float = 0.40  # the best sweep accuracy must reach this; the final run stops below it...
    final_kill_from_epoch: int = 5  # ...from this epoch on (FiveEpochCallback(epoch=4))


@dataclass(frozen=True)
class RunContext:
    """Everything about a fitness evaluation that is not the genome."""

    scale: str
    results_dir: str  # results/<scale>
    proxy: Proxy
    protocol: Protocol = Protocol()
    seed: int = 0
    device: str = "cpu"
    optimizer_settings: Mapping[str, Any] = field(default_factory=dict)  # nesterov_form, ema_form, a14
    tags: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["proxy"] = asdict(self.proxy)
        data["protocol"] = asdict(self.protocol)
        data["optimizer_settings"] = dict(self.optimizer_settings)
        data["tags"] = dict(self.tags)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RunContext":
        protocol = dict(data["protocol"])
        protocol["first"], protocol["then"] = tuple(protocol["first"]), tuple(protocol["then"])
        return cls(scale=data["scale"], results_dir=data["results_dir"], proxy=Proxy(**data["proxy"]),
                   protocol=Protocol(**protocol), seed=int(data["seed"]), device=data["device"],
                   optimizer_settings=dict(data["optimizer_settings"]), tags=dict(data["tags"]))


def run_spec(ctx: RunContext, genome: Mapping[str, Any], lr: float, phase: str) -> dict:
    """The spec of one run of the protocol: phase "sweep" or "final"."""
    if phase not in ("sweep", "final"):
        raise ValueError(f"unknown phase {phase!r}. Valid choices: sweep, final")
    proxy, protocol = ctx.proxy, ctx.protocol
    sweep = phase == "sweep"
    steps = proxy.sweep_steps_per_epoch if sweep else proxy.final_steps_per_epoch
    threshold = protocol.kill_threshold if sweep else protocol.pass_threshold
    start = protocol.kill_from_epoch if sweep else protocol.final_kill_from_epoch
    return planmod.make_spec(
        paper="nos", problem=proxy.problem, scale=ctx.scale, optimizer="nos_genome",
        hparams={"genome": dict(genome), "lr": float(lr), "total_steps": proxy.total_steps,
                 "warmup_steps": proxy.warmup_steps, **ctx.optimizer_settings},
        schedule={"name": "warmup_hold_cosine", "warmup_steps": proxy.warmup_steps},
        controllers=[{"name": "threshold_stop", "monitor": "train/accuracy", "threshold": threshold,
                      "start_from_epoch": start}],
        seed=ctx.seed, epochs=proxy.sweep_epochs if sweep else proxy.final_epochs, batch_size=proxy.batch_size,
        eval_every=1, device=ctx.device, problem_args={"epoch_examples": steps * proxy.batch_size},
        tags={**ctx.tags, "nos_phase": phase, "lr": float(lr)})


def run_dir(results_dir: str | Path, spec: Mapping[str, Any]) -> Path:
    return Path(results_dir) / "runs" / planmod.run_id(spec)


def best_metric(results_dir: str | Path, run: str, key: str) -> float:
    """The best (max) of `key` ("train/accuracy", "valid/accuracy") over a run's evaluations after epoch 0
    (epoch 0 only when the run stopped inside its first epoch); NaN when there is none."""
    path = Path(results_dir) / "runs" / run / "metrics.jsonl"
    evals = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [r for r in evals if r.get("kind") == "eval"]
    trained = [r for r in evals if r["epoch"] >= 1] or evals
    values = [float(r[key]) for r in trained if key in r and not math.isnan(float(r[key]))]
    return max(values) if values else math.nan


def _run(ctx: RunContext, spec: dict) -> str:
    from optrepro.runner import run_one

    return run_one(spec, Path(ctx.results_dir))["run_id"]


def sweep(ctx: RunContext, genome: Mapping[str, Any]) -> dict:
    """Steps 1-3: {"status": "ok" | "failed", "lr": the chosen rate, "rates": [...], "accuracy": [...],
    "runs": [...], "final_spec": the final run's spec (ok only), "reason": why it failed}."""
    protocol = ctx.protocol
    out: dict[str, Any] = {"rates": [], "accuracy": [], "runs": []}

    def try_rates(rates):
        for lr in rates:
            rid = _run(ctx, run_spec(ctx, genome, lr, "sweep"))
            out["rates"].append(float(lr))
            out["runs"].append(rid)
            out["accuracy"].append(best_metric(ctx.results_dir, rid, "train/accuracy"))

    try_rates(protocol.first)
    if all(a < protocol.kill_threshold for a in out["accuracy"]):  # NaN is not below, as np.all(acc < 0.25)
        return {**out, "status": "failed", "reason": f"first rates below {protocol.kill_threshold}"}
    try_rates(protocol.then)
    finite = [a for a in out["accuracy"] if not math.isnan(a)]
    if not finite or max(finite) < protocol.pass_threshold:
        return {**out, "status": "failed", "reason": f"best rate below {protocol.pass_threshold}"}
    best = max(range(len(out["accuracy"])), key=lambda k: (-math.inf if math.isnan(out["accuracy"][k])
                                                           else out["accuracy"][k], -k))  # first of the best
    lr = out["rates"][best]
    return {**out, "status": "ok", "lr": lr, "final_spec": run_spec(ctx, genome, lr, "final")}


def evaluate(ctx: RunContext, genome: Mapping[str, Any]) -> dict:
    """The whole protocol, final run included: the sweep's record plus "final_run" and "fitness" (None when
    the genome failed)."""
    record = sweep(ctx, genome)
    if record["status"] != "ok":
        return {**record, "fitness": None, "final_run": None}
    final = _run(ctx, record["final_spec"])
    return {**record, "final_run": final, "fitness": best_metric(ctx.results_dir, final, "valid/accuracy")}
