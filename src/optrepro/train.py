"""One run: seed, device, loop, evaluation, checkpoint/resume, divergence, metrics, provenance.

    train(spec, run_dir) -> result dict (also written to run_dir/result.json)

Determinism: the model is built right after torch.manual_seed(init_seed); the order of epoch e is a
permutation drawn from a generator seeded by (data_seed, e); the augmentation of step s of epoch e from
(data_seed, e, s, micro); the noise (dropout, sampling) from (noise_seed, e, s, micro), re-seeded before every
forward so a closure replays it. Nothing else draws random numbers, so a run resumed from a checkpoint at any
step continues exactly as the uninterrupted run, and a run gives the same result alone or in a batch.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from optrepro import optim, problems, schedules
from optrepro.closure import StepClosure
from optrepro.io import append_jsonl, atomic_write_json, truncate_lines
from optrepro.optim import _base as optim_base
from optrepro.provenance import provenance

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"
SPEC = "spec.json"


class Interrupted(Exception):
    """SIGTERM/SIGUSR1 arrived: a checkpoint was written and the run stops; a later job resumes it."""


class _Signals:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks after each step (SLURM sends them before a kill)."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints (stable across processes, unlike hash())."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


def _device(spec: Mapping[str, Any]) -> torch.device:
    if spec["device"] == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("spec asks for device 'cuda' but torch sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


_DEVICE_SPLITS: dict[tuple, dict] = {}


def _splits_on(problem, device: torch.device) -> dict:
    """The problem's splits moved to `device` once per process (shared by every run of a batch)."""
    key = (problem.cache_key(), str(device))
    if key not in _DEVICE_SPLITS:
        splits = problem.splits()
        _DEVICE_SPLITS[key] = splits if device.type == "cpu" else {k: s.to(device) for k, s in splits.items()}
    return _DEVICE_SPLITS[key]


def _autocast(spec, device):
    # an optimizer's finite-difference probe (fuzzy) asks for fp32 through the closure: bf16 stands down
    if spec["precision"] == "bf16" and not optim_base.full_precision_requested():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


@torch.no_grad()
def evaluate(problem, model, split, batch_size: int, device, spec, limit: int | None = None) -> dict[str, float]:
    """Mean metrics over the first `limit` examples of `split` (all by default), in order, unaugmented."""
    n = len(split) if limit is None else min(limit, len(split))
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}  # kept on the device: one synchronisation per evaluation, not per batch
    count = 0
    carry = problem.init_carry(batch_size, device)
    # Carried state needs full batches, and DeepOBS problems drop the partial last batch too.
    drop_last = carry is not None or problem.drop_last_eval
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n))
        if drop_last and len(index) != batch_size:
            break
        batch = split.batch(index.to(split.tensors[0].device))
        with _autocast(spec, device):
            out = problem.forward(model, batch, carry)
        carry = out.carry
        for k, v in out.sums.items():
            v = v.detach().double() if torch.is_tensor(v) else torch.tensor(float(v), dtype=torch.float64)
            sums[k] = sums[k] + v.to(sums[k].device) if k in sums else v
        count += out.count
    model.train(was_training)
    return {k: float(v) / max(count, 1) for k, v in sums.items()}


def _better(metric: str, new: float, old: float | None, higher: Mapping[str, bool]) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if higher.get(metric, False) else new < old


class Trainer:
    """The state of one run; `run()` trains from scratch or from the checkpoint in run_dir."""

    def __init__(self, spec: Mapping[str, Any], run_dir: Path, *, checkpoint_every_s: float = 600.0,
                 progress: bool | None = None, eval_batch_size: int | None = None):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.checkpoint_every_s = checkpoint_every_s
        self.progress = progress
        self.device = _device(spec)
        self.problem = problems.get(spec["problem"], spec["scale"], **spec["problem_args"])
        self.splits = _splits_on(self.problem, self.device)
        # Problems that drop partial batches (DeepOBS) evaluate in training batches, as DeepOBS does; others
        # in a multiple of it (carried state, e.g. the char-RNN, needs whole multiples of the training batch).
        multiple = 1 if self.problem.drop_last_eval else max(1, 256 // spec["batch_size"])
        self.eval_batch_size = eval_batch_size or spec["batch_size"] * multiple
        torch.manual_seed(spec["init_seed"])
        self.model = self.problem.build_model().to(self.device)
        self.model.train()
        n_train = len(self.splits["train"])
        self.steps_per_epoch = max(n_train // spec["batch_size"], 1)  # the last partial batch is dropped
        self.total_steps = self.steps_per_epoch * spec["epochs"]
        opt = spec["optimizer"]
        self.opt_info = optim.info(opt["name"])
        hparams = dict(opt["hparams"])
        if "total_steps" in hparams and hparams["total_steps"] is None:
            # Optimizers whose internals are functions of t/T (NOS decays, the fuzzy controller) get the run's
            # length; it follows from the spec, so the run id need not carry it.
            hparams["total_steps"] = self.total_steps
        self.optimizer = optim.build(opt["name"], self.model, **hparams)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group.get("lr", 1.0))
        self.schedule = schedules.build_schedule(spec["schedule"]["name"], **spec["schedule"]["args"])
        self.controllers = [schedules.build_controller(c["name"], **c["args"]) for c in spec["controllers"]]
        # progress state (all checkpointed)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.forward_passes = 0
        self.backward_passes = 0
        self.carry = None
        self.final: dict[str, dict[str, float]] = {}
        self.best: dict[str, dict[str, float]] = {}
        self.metrics_lines = 0
        self.evaluated_epoch0 = False
        self.status = "ok"
        self.resumes = 0

    # --- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "controllers": [c.state_dict() for c in self.controllers],
            "progress": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                         "forward_passes": self.forward_passes, "backward_passes": self.backward_passes,
                         "metrics_lines": self.metrics_lines, "evaluated_epoch0": self.evaluated_epoch0,
                         "resumes": self.resumes},
            "final": self.final,
            "best": self.best,
            "carry": self.carry,
        }

    def save_checkpoint(self) -> None:
        tmp = self.run_dir / (CHECKPOINT + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, self.run_dir / CHECKPOINT)

    def load_checkpoint(self) -> bool:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for c, s in zip(self.controllers, state["controllers"]):
            c.load_state_dict(s)
        for k, v in state["progress"].items():
            setattr(self, k, v)
        self.final, self.best, self.carry = state["final"], state["best"], state["carry"]
        self.resumes += 1
        truncate_lines(self.run_dir / METRICS, self.metrics_lines)  # drop records written after the checkpoint
        return True

    # --- logging ------------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.run_dir / METRICS, record)
        self.metrics_lines += 1

    def lr_factor(self, step: int) -> float:
        factor = self.schedule(step, self.total_steps, self.steps_per_epoch)
        for c in self.controllers:
            factor *= c.lr_factor
        return factor

    def evaluate_all(self) -> dict[str, float]:
        record: dict[str, float] = {}
        for split_name in ("train", "valid", "test"):
            if split_name not in self.splits:
                continue
            limit = self.problem.train_eval_size if split_name == "train" else None
            values = evaluate(self.problem, self.model, self.splits[split_name], self.eval_batch_size,
                              self.device, self.spec, limit)
            self.final[split_name] = values
            best = self.best.setdefault(split_name, {})
            for metric, value in values.items():
                if _better(metric, value, best.get(metric), self.problem.higher_is_better):
                    best[metric] = value
                record[f"{split_name}/{metric}"] = value
        return record

    def eval_and_log(self) -> bool:
        """Evaluate, log, feed the controllers; False when the evaluation diverged."""
        record = self.evaluate_all()
        self.log({"kind": "eval", "epoch": self.epoch, "step": self.global_step,
                  "lr_factor": self.lr_factor(self.global_step), **record})
        if not all(math.isfinite(v) for v in record.values()):
            return False
        for c in self.controllers:
            c.observe(self.epoch, record)
        return True

    # --- the loop -----------------------------------------------------------------------------------
    def micro_batches(self, order: torch.Tensor, epoch: int, step: int) -> list:
        spec = self.spec
        train = self.splits["train"]
        bs = spec["batch_size"]
        index = order[step * bs:(step + 1) * bs] if len(train) >= bs else order
        chunks = index.chunk(spec["grad_accum"])
        return [train.batch(chunk.to(train.tensors[0].device), generator(spec["data_seed"], epoch, step, m))
                for m, chunk in enumerate(chunks)]

    def forward(self, model, batch, carry):
        with _autocast(self.spec, self.device):
            return self.problem.forward(model, batch, carry)

    def train_step(self, order: torch.Tensor) -> float:
        spec = self.spec
        epoch, step = self.epoch, self.step_in_epoch
        batches = self.micro_batches(order, epoch, step)
        seeds = [derived_seed(spec["noise_seed"], epoch, step, m) for m in range(len(batches))]
        factor = self.lr_factor(self.global_step)
        for group in self.optimizer.param_groups:
            if "lr" in group:  # line searches set their own step size: they have no lr to schedule
                group["lr"] = group["initial_lr"] * factor
        closure = StepClosure(self.model, self.forward, batches, seeds, carry=self.carry,
                              trial_batchnorm=getattr(self.optimizer, "trial_batchnorm", "frozen"))
        if self.opt_info.requires_closure:
            loss = self.optimizer.step(closure)
            if loss is None:
                loss = closure.first_loss
        else:
            loss = closure()
            self.optimizer.step()
        self.forward_passes += closure.forward_passes
        self.backward_passes += closure.backward_passes
        carry = closure.first_outputs[-1].carry if closure.first_outputs else None
        self.carry = _detach(carry)
        internals = getattr(self.optimizer, "internals", None)
        if internals is not None:
            self.log({"kind": "optim", "step": self.global_step, **internals()})
        self.global_step += 1
        self.step_in_epoch += 1
        return float(loss)

    def run(self) -> dict[str, Any]:
        spec = self.spec
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.load_checkpoint():
            (self.run_dir / METRICS).write_text("")
        last_ckpt = time.monotonic()
        bar = _progress_bar(self.total_steps, self.global_step, self.progress)
        with _Signals() as signals:
            if not self.evaluated_epoch0:
                self.evaluated_epoch0 = True
                if not self.eval_and_log():
                    self.status = "diverged"
            while self.status == "ok" and self.epoch < spec["epochs"]:
                order = self.splits["train"].order(generator(spec["data_seed"], self.epoch))
                while self.step_in_epoch < self.steps_per_epoch:
                    loss = self.train_step(order)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                    if not math.isfinite(loss):
                        self.status = "diverged"
                        break
                    if signals.received is not None:
                        self.save_checkpoint()
                        raise Interrupted(f"signal {signals.received}: checkpoint written at step {self.global_step}")
                    if time.monotonic() - last_ckpt >= self.checkpoint_every_s:
                        self.save_checkpoint()
                        last_ckpt = time.monotonic()
                if self.status != "ok":
                    break
                self.epoch += 1
                self.step_in_epoch = 0
                self.carry = None
                if self.epoch % spec["eval_every"] == 0 or self.epoch == spec["epochs"]:
                    if not self.eval_and_log():
                        self.status = "diverged"
                    elif any(c.should_stop for c in self.controllers):
                        break
                    self.save_checkpoint()  # cheap relative to an epoch; an epoch boundary is a natural point
                    last_ckpt = time.monotonic()
        if bar is not None:
            bar.close()
        return self.result(time.perf_counter() - start)

    def result(self, wall_time_s: float) -> dict[str, Any]:
        forward_only = self.forward_passes - self.backward_passes
        deterministic = {
            "status": self.status,
            "final": self.final,
            "best": self.best,
            "steps": self.global_step,
            "epochs": self.epoch,
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
            "cost_units": self.backward_passes + forward_only / 3.0,
            "controllers": [c.state_dict() for c in self.controllers],
            "error": None,
        }
        return {"run_id": self.run_dir.name, "spec": dict(self.spec),
                "deterministic": _json_safe(deterministic),
                "volatile": {"wall_time_s": wall_time_s, "resumes": self.resumes, "provenance": provenance(self.device)}}


def _detach(carry):
    if carry is None:
        return None
    if isinstance(carry, torch.Tensor):
        return carry.detach()
    if isinstance(carry, (tuple, list)):
        return type(carry)(_detach(c) for c in carry)
    return carry


def _json_safe(obj):
    """NaN/inf (a diverged run's metrics) become strings so result.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _progress_bar(total: int, initial: int, progress: bool | None):
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", leave=False)


def train(spec: Mapping[str, Any], run_dir: Path, **kwargs) -> dict[str, Any]:
    """Train one spec in run_dir (resuming from its checkpoint if any); write result.json; return it."""
    run_dir = Path(run_dir)
    trainer = Trainer(spec, run_dir, **kwargs)
    result = trainer.run()
    atomic_write_json(run_dir / RESULT, result)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)  # the result is complete: the checkpoint is dead weight
    return result


def load_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.exists() else None
