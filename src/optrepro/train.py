"""One run: seed, device, loop, evaluation, checkpoint/resume, divergence, metrics, provenance.

    train(spec, run_dir) -> result dict (also written to run_dir/result.json)

The loop knows an optimizer only through its registry entry (optrepro.optim.registry.OptimizerInfo): how an
outer lr schedule reaches it, which hyperparameters take the run's length, whether it takes a closure, how
BatchNorm statistics behave at its trial points, and whether it has internals to log.

Randomness: each stream is seeded once per run from the spec and then flows on; a checkpoint holds the streams'
states, so a run resumed from a checkpoint at any step continues exactly as the uninterrupted run, and a run gives
the same result alone or in a batch:
- the model is built right after seeding torch's CPU generator with init_seed;
- the order of epoch e is a permutation drawn from a generator seeded by (data_seed, e);
- augmentation draws from one generator seeded by (data_seed, AUGMENT_STREAM);
- noise (dropout, sampling) draws from torch's default generators (closure.NoiseRNG), seeded by (noise_seed,
  NOISE_STREAM); a closure replays its step's noise by restoring their state (optrepro.closure).

Log points: every LOG_EVERY_STEPS steps and at the end of every epoch. Only there does the loop read device
values: the step losses since the last log point (their mean is logged, and a non-finite one stops the run as
diverged, `diverged_at_step` naming the first), the optimizer's internals, the progress bar's loss. Between log
points a step on a GPU does not synchronise with the host (tests/test_gpu.py checks it under
torch.cuda.set_sync_debug_mode("error"), which `Trainer(sync_check=True)` turns on between log points).

metrics.jsonl: {"kind": "eval", "epoch": epochs done, "step", "lr_factor", "<split>/<metric>": ...} before training
and after every eval_every-th epoch; {"kind": "train", "epoch": the epoch in progress, "step": steps done,
"loss": mean step loss since the last log point, **internals} at every log point.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from optrepro import optim, problems, schedules
from optrepro.closure import NoiseRNG, StepClosure
from optrepro.io import atomic_write_json, truncate_lines
from optrepro.optim.registry import LR_MULTIPLIER
from optrepro.plan import check_schedule_applies
from optrepro.provenance import provenance
from optrepro.stopping import Interrupted, StopSignals  # noqa: F401 (Interrupted: part of this module's API)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULT = "result.json"
SPEC = "spec.json"
LOG_EVERY_STEPS = 50
# second part of derived_seed(seed, stream) for the per-run streams; epochs are >= 0, so never an epoch's order
NOISE_STREAM, AUGMENT_STREAM = -1, -2


class _EvaluationStopped(Exception):
    """A stop signal arrived during an evaluation: the evaluation is abandoned and done again on resume."""


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


def _autocast(spec, device, full_precision: bool = False):
    """bf16 autocast for a bf16 spec; none in fp32, or when a closure asks for full precision (a finite
    difference, optrepro.closure)."""
    if spec["precision"] == "bf16" and not full_precision:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(problem, model, split, batch_size: int, device, spec, limit: int | None = None,
             signals: StopSignals | None = None) -> dict[str, float]:
    """Mean metrics over the first `limit` examples of `split` (all by default), in order, unaugmented.
    A signal on `signals` abandons the evaluation after the batch in progress (_EvaluationStopped)."""
    n = len(split) if limit is None else min(limit, len(split))
    was_training = model.training
    model.eval()
    names: list[str] | None = None
    rows: list[torch.Tensor] = []  # each batch's metric sums, kept on the device: one host read per evaluation
    count = 0
    carry = problem.init_carry(batch_size, device)
    # Carried state needs full batches, and DeepOBS problems drop the partial last batch too.
    drop_last = carry is not None or problem.drop_last_eval
    autocast = spec["precision"] != "fp32"
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if drop_last and stop - start != batch_size:
            break
        if autocast:
            with _autocast(spec, device):
                out = problem.forward(model, split.rows(start, stop), carry)
        else:
            out = problem.forward(model, split.rows(start, stop), carry)
        carry = out.carry
        sums = out.sums
        if names is None:
            names = list(sums)
        rows.append(torch.stack([torch.as_tensor(sums[k], device=device).detach() for k in names]))
        count += out.count
        if signals is not None and signals.received is not None:
            model.train(was_training)
            raise _EvaluationStopped()
    model.train(was_training)
    if not rows:
        return {}
    totals = [0.0] * len(names)
    for row in torch.stack(rows).double().tolist():  # summed in float64, batch after batch
        totals = [t + v for t, v in zip(totals, row)]
    return {k: t / max(count, 1) for k, t in zip(names, totals)}


def _better(metric: str, new: float, old: float | None, higher: Mapping[str, bool]) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if higher.get(metric, False) else new < old


class Trainer:
    """The state of one run; `run()` trains from scratch or from the checkpoint in run_dir.

    sync_check=True (CUDA only; a debugging aid, the GPU tests use it): torch.cuda.set_sync_debug_mode("error")
    between log points, so any host-device synchronisation in a step raises.
    """

    def __init__(self, spec: Mapping[str, Any], run_dir: Path, *, checkpoint_every_s: float = 600.0,
                 progress: bool | None = None, eval_batch_size: int | None = None, sync_check: bool = False):
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.checkpoint_every_s = checkpoint_every_s
        self.progress = progress
        self.device = _device(spec)
        self.sync_check = sync_check and self.device.type == "cuda"
        self.problem = problems.get(spec["problem"], spec["scale"], **spec["problem_args"])
        self.splits = _splits_on(self.problem, self.device)
        # Problems that drop partial batches (DeepOBS) evaluate in training batches, as DeepOBS does; others
        # in a multiple of it (carried state, e.g. the char-RNN, needs whole multiples of the training batch).
        multiple = 1 if self.problem.drop_last_eval else max(1, 256 // spec["batch_size"])
        self.eval_batch_size = eval_batch_size or spec["batch_size"] * multiple
        # the model is built on the CPU: its init draws from the CPU generator only (torch.manual_seed would
        # also seed every accelerator backend, through lazy calls that cost about 0.7 ms a run)
        torch.default_generator.manual_seed(spec["init_seed"])
        self.model = self.problem.build_model().to(self.device)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        n_train = len(self.splits["train"])
        self.steps_per_epoch = max(n_train // spec["batch_size"], 1)  # the last partial batch is dropped
        self.total_steps = self.steps_per_epoch * spec["epochs"]
        opt = spec["optimizer"]
        self.opt_info = optim.info(opt["name"])
        # make_spec refused this already; a spec written by hand must not log a factor it never applies
        check_schedule_applies(opt["name"], spec["schedule"]["name"], [c["name"] for c in spec["controllers"]])
        hparams = self.opt_info.fill_run_length(opt["hparams"], self.total_steps)
        self.optimizer = optim.build(opt["name"], self.model, **hparams)
        if self.opt_info.lr_schedule == "group_lr":
            for group in self.optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.trial_batchnorm = self.opt_info.trial_batchnorm_for(hparams)
        self.schedule = schedules.build_schedule(spec["schedule"]["name"], **spec["schedule"]["args"])
        self.controllers = [schedules.build_controller(c["name"], **c["args"]) for c in spec["controllers"]]
        self.noise = NoiseRNG(self.device)
        self.augment = torch.Generator()
        # progress state (all checkpointed)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.forward_passes = 0
        self.backward_passes = 0
        self.carry = None
        self.pending_losses: list[torch.Tensor] = []  # step losses since the last log point, on the device
        self.final: dict[str, dict[str, float]] = {}
        self.best: dict[str, dict[str, float]] = {}
        self.at_best_valid: dict[str, Any] = {}
        self.metrics_lines = 0
        self.evaluated_epoch0 = False
        self.eval_pending = False  # an evaluation was due when a signal stopped the run: done first on resume
        self.status = "ok"
        self.diverged_at_step: int | None = None
        self.resumes = 0
        self._metrics = None  # metrics.jsonl, open while the run runs

    # --- checkpoints --------------------------------------------------------------------------------
    def seed_streams(self) -> None:
        self.noise.seed(derived_seed(self.spec["noise_seed"], NOISE_STREAM))
        self.augment.manual_seed(derived_seed(self.spec["data_seed"], AUGMENT_STREAM))

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "controllers": [c.state_dict() for c in self.controllers],
            "progress": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                         "forward_passes": self.forward_passes, "backward_passes": self.backward_passes,
                         "metrics_lines": self.metrics_lines, "evaluated_epoch0": self.evaluated_epoch0,
                         "eval_pending": self.eval_pending, "resumes": self.resumes},
            "rng": {"noise": self.noise.get_state(), "augment": self.augment.get_state()},
            "pending_losses": [loss.detach() for loss in self.pending_losses],
            "final": self.final,
            "best": self.best,
            "at_best_valid": self.at_best_valid,
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
        self.noise.set_state(state["rng"]["noise"])
        self.augment.set_state(state["rng"]["augment"].cpu())
        self.pending_losses = list(state["pending_losses"])
        self.final, self.best, self.carry = state["final"], state["best"], state["carry"]
        self.at_best_valid = state["at_best_valid"]
        self.resumes += 1
        truncate_lines(self.run_dir / METRICS, self.metrics_lines)  # drop records written after the checkpoint
        return True

    # --- logging ------------------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        if self._metrics is None:  # kept open for the run: an open per record costs more than the record
            self._metrics = open(self.run_dir / METRICS, "a")
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()  # in the OS's hands before any checkpoint counts it (metrics_lines)
        self.metrics_lines += 1

    def lr_factor(self, step: int) -> float:
        factor = self.schedule(step, self.total_steps, self.steps_per_epoch)
        for c in self.controllers:
            factor *= c.lr_factor
        return factor

    def apply_schedule(self, step: int) -> None:
        """The outer schedule's factor for `step`, applied as the optimizer's registry entry declares."""
        how = self.opt_info.lr_schedule
        if how == "refused":  # the plan refused any schedule for it: the factor is 1
            return
        factor = self.lr_factor(step)
        for group in self.optimizer.param_groups:
            if how == "group_lr":
                group["lr"] = group["initial_lr"] * factor
            else:
                group[LR_MULTIPLIER] = factor

    def evaluate_all(self, signals: StopSignals | None = None) -> dict[str, float]:
        record: dict[str, float] = {}
        evaluated: dict[str, dict[str, float]] = {}
        for split_name in ("train", "valid", "test"):
            if split_name not in self.splits:
                continue
            limit = self.problem.train_eval_size if split_name == "train" else None
            evaluated[split_name] = evaluate(self.problem, self.model, self.splits[split_name],
                                             self.eval_batch_size, self.device, self.spec, limit, signals)
        for split_name, values in evaluated.items():  # state changes only once every split is evaluated
            best = self.best.setdefault(split_name, {})
            for metric, value in values.items():
                if _better(metric, value, best.get(metric), self.problem.higher_is_better):
                    best[metric] = value
                record[f"{split_name}/{metric}"] = value
        self.final = evaluated
        # the weights a Keras EarlyStopping(restore_best_weights) run would restore: the evaluation with the
        # lowest validation loss after training started (the epoch-0 evaluation is of the initial weights)
        valid_loss = evaluated.get("valid", {}).get("loss")
        if self.epoch > 0 and valid_loss is not None and \
                _better("loss", valid_loss, self.at_best_valid.get("valid", {}).get("loss"), {}):
            self.at_best_valid = {**evaluated, "epoch": self.epoch, "step": self.global_step}
        return record

    def eval_and_log(self, signals: StopSignals | None = None) -> bool:
        """Evaluate, log, feed the controllers; False when the evaluation diverged."""
        record = self.evaluate_all(signals)
        self.log({"kind": "eval", "epoch": self.epoch, "step": self.global_step,
                  "lr_factor": self.lr_factor(self.global_step), **record})
        if not all(math.isfinite(v) for v in record.values()):
            return False
        for c in self.controllers:
            c.observe(self.epoch, record)
        return True

    def log_point(self, bar) -> bool:
        """Read the step losses since the last log point (one host read), log their mean and the optimizer's
        internals; False when a loss was not finite (the run diverged at `diverged_at_step`)."""
        if not self.pending_losses:
            return True
        losses = torch.stack([loss.float() for loss in self.pending_losses]).tolist()
        first_step = self.global_step - len(losses)
        self.pending_losses = []
        record: dict[str, Any] = {"kind": "train", "epoch": self.epoch, "step": self.global_step,
                                  "loss": sum(losses) / len(losses)}
        if self.opt_info.internals:
            record.update(self.optimizer.internals())
        self.log(record)
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
        if bad:
            self.diverged_at_step = first_step + bad[0]
            return False
        return True

    # --- the loop -----------------------------------------------------------------------------------
    def epoch_order(self) -> torch.Tensor:
        train = self.splits["train"]
        order = train.order(generator(self.spec["data_seed"], self.epoch))
        return order.to(train.tensors[0].device)  # once per epoch: a step slices it where the data lives

    def micro_batches(self, order: torch.Tensor) -> list:
        spec = self.spec
        train = self.splits["train"]
        bs = spec["batch_size"]
        step = self.step_in_epoch
        index = order[step * bs:(step + 1) * bs] if len(train) >= bs else order
        chunks = index.chunk(spec["grad_accum"]) if spec["grad_accum"] > 1 else (index,)
        return [train.batch(chunk, self.augment) for chunk in chunks]

    def forward(self, model, batch, carry, full_precision: bool = False):
        with _autocast(self.spec, self.device, full_precision):
            return self.problem.forward(model, batch, carry)

    def train_step(self, order: torch.Tensor) -> None:
        """One optimizer step; its loss joins `pending_losses` on the device (read at the next log point)."""
        info = self.opt_info
        self.apply_schedule(self.global_step)
        closure = StepClosure(self.model, self.forward, self.micro_batches(order), carry=self.carry,
                              trial_batchnorm=self.trial_batchnorm, params=self.params,
                              noise=self.noise if info.requires_closure else None)
        if info.requires_closure:
            self.optimizer.step(closure)
            if closure.first_loss is None:
                raise RuntimeError(f"optimizer {info.name!r} is declared closure={info.closure!r} but its step "
                                   f"did not call the closure")
        else:
            closure()
            self.optimizer.step()
        self.forward_passes += closure.forward_passes
        self.backward_passes += closure.backward_passes
        carry = closure.first_outputs[-1].carry
        self.carry = None if carry is None else _detach(carry)
        self.pending_losses.append(closure.first_loss)
        self.global_step += 1
        self.step_in_epoch += 1

    def _check_syncs(self, on: bool) -> None:
        if self.sync_check:
            torch.cuda.set_sync_debug_mode("error" if on else "default")

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.load_checkpoint():
            (self.run_dir / METRICS).write_text("")
            self.seed_streams()
        bar = _progress_bar(self.total_steps, self.global_step, self.progress)
        try:
            self._loop(bar)
        finally:
            self._check_syncs(False)
            if self._metrics is not None:
                self._metrics.close()
                self._metrics = None
            if bar is not None:
                bar.close()
        return self.result(time.perf_counter() - start)

    def _loop(self, bar) -> None:
        spec = self.spec
        last_ckpt = time.monotonic()
        with StopSignals() as signals:
            if not self.evaluated_epoch0:
                self.evaluated_epoch0 = True
                self.eval_pending = True
            # the epoch-0 evaluation, or the one a signal interrupted (the run stops here if it says so)
            stopped = self.eval_pending and self._due_evaluation(signals)
            while not stopped and self.status == "ok" and self.epoch < spec["epochs"]:
                order = self.epoch_order()
                while self.step_in_epoch < self.steps_per_epoch:
                    self._check_syncs(True)
                    self.train_step(order)
                    if bar is not None:
                        bar.update(1)
                    mid_log = self.global_step % LOG_EVERY_STEPS == 0 and self.step_in_epoch < self.steps_per_epoch
                    due = time.monotonic() - last_ckpt >= self.checkpoint_every_s
                    if not (mid_log or due or signals.received is not None):
                        continue
                    self._check_syncs(False)
                    if mid_log and not self.log_point(bar):
                        self.status = "diverged"
                        break
                    if signals.received is not None:
                        self._interrupt(signals)
                    if due:
                        self.save_checkpoint()
                        last_ckpt = time.monotonic()
                self._check_syncs(False)
                if self.status != "ok":
                    break
                if not self.log_point(bar):
                    self.status = "diverged"
                    break
                self.epoch += 1
                self.step_in_epoch = 0
                self.carry = None
                if self.epoch % spec["eval_every"] == 0 or self.epoch == spec["epochs"]:
                    self.eval_pending = True
                    if self._due_evaluation(signals):
                        break
                if signals.received is not None and self.epoch < spec["epochs"]:  # the last epoch: finish
                    self._interrupt(signals)
                if time.monotonic() - last_ckpt >= self.checkpoint_every_s:
                    self.save_checkpoint()
                    last_ckpt = time.monotonic()

    def _due_evaluation(self, signals: StopSignals) -> bool:
        """The evaluation due now (eval_pending), then the controllers' verdict; True when the run stops here
        (diverged, or a controller's stop after training started). A signal during it writes a checkpoint that
        still owes the evaluation, so the resumed run logs it exactly as an uninterrupted one."""
        try:
            ok = self.eval_and_log(signals)
        except _EvaluationStopped:
            ok = False
            self._interrupt(signals)
        self.eval_pending = False
        if not ok:
            self.status = "diverged"
            return True
        return self.epoch > 0 and any(c.should_stop for c in self.controllers)

    def _interrupt(self, signals: StopSignals) -> None:
        self.save_checkpoint()
        raise Interrupted(f"signal {signals.received}: checkpoint written at step {self.global_step}")

    def result(self, wall_time_s: float) -> dict[str, Any]:
        forward_only = self.forward_passes - self.backward_passes
        deterministic = {
            "status": self.status,
            "final": self.final,
            "best": self.best,
            "at_best_valid": self.at_best_valid,
            "steps": self.global_step,
            "epochs": self.epoch,
            "diverged_at_step": self.diverged_at_step,
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
