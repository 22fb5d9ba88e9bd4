"""Run specs and the plan: config/papers/*.yaml -> fully resolved run specs with content-addressed ids.

A spec is a plain dict with every default resolved (docs/design.md, "Data flow"). Its run id is a hash of its
canonical JSON, minus `tags` (labels for the report that do not change what is computed) and minus `paper`
(which paper asked for it: two papers asking for the same run share it), so changing a hyperparameter makes a
new run and re-planning finds the runs that already exist. Nothing here imports torch.

Deferred specs are runs whose spec depends on another run's result (a tuning winner re-run, a NOS particle's
next step): a template plus the path of the JSON it depends on and the name of a resolver that fills the
template. The batch job resolves them at run time (`resolve_deferred`) with torch-free code.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from optrepro import optim, params, problems, schedules
from optrepro.registry import Registry, check_keys, unknown

# bump when the meaning of a spec field changes. 2: noise and augmentation draw from one stream per run (seeded
# from noise_seed / data_seed, checkpointed) instead of a reseed before every forward; a diverged run stops at
# the next log point (optrepro.train.LOG_EVERY_STEPS)
SPEC_VERSION = 2
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
RUN_ID_HEX = 20

SPEC_KEYS = ("spec_version", "paper", "problem", "problem_args", "problem_impl_version", "scale", "device",
             "precision", "optimizer", "schedule", "controllers", "init_seed", "data_seed", "noise_seed",
             "epochs", "batch_size", "grad_accum", "eval_every", "tags")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


# Fields that label a run without changing what it computes: they are not part of its identity.
LABELS = ("tags", "paper")


def run_content(spec: Mapping[str, Any]) -> str:
    """The canonical JSON of what a spec computes (its identity): everything but its labels."""
    return canonical_json({k: v for k, v in spec.items() if k not in LABELS})


def run_id(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(run_content(spec).encode()).hexdigest()[:RUN_ID_HEX]


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Type a hyperparameter like its default: YAML reads 1e-3 as a string, tuples arrive as lists."""
    if isinstance(default, bool) or default is None:
        return value
    if isinstance(default, numbers.Number) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"hyperparameter {name!r}: {value!r} is not a number") from None
    if isinstance(default, float) and isinstance(value, numbers.Number) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"hyperparameter {name!r}: {value!r} is not finite")
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return [_coerce(f"{name}[{i}]", v, d) for i, (v, d) in enumerate(zip(value, default))]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def make_spec(*, paper: str, problem: str, scale: str, optimizer: str, hparams: Mapping[str, Any] | None = None,
              schedule: Mapping[str, Any] | None = None, controllers: Iterable[Mapping[str, Any]] = (),
              seed: int = 0, init_seed: int | None = None, data_seed: int | None = None,
              noise_seed: int | None = None, epochs: int | None = None, batch_size: int | None = None,
              grad_accum: int | None = None, eval_every: int | None = None, device: str = "cpu",
              precision: str = "fp32", problem_args: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A fully resolved spec. Every name is checked against its registry, every value against what its key
    accepts (optrepro.params: the optimizer's and problem's declarations), before any compute is spent."""
    problems.registry.check_scale(scale)
    pinfo = problems.info(problem)
    oinfo = optim.info(optimizer)
    hparams = dict(hparams or {})
    oinfo.check_hparams(hparams)  # unknown keys, types and ranges, by name
    resolved = {k: _jsonable(_coerce(k, oinfo.hparam(k).normalize(hparams.get(k, d)), d))
                for k, d in oinfo.defaults.items()}
    schedule = dict(schedule or {"name": "constant"})
    sname = schedule.pop("name", "constant")
    sargs = _check_args(f"schedule {sname!r}", dict(schedule.pop("args", {}), **schedule),
                        schedules.SCHEDULES.get(sname)[1])
    schedules.build_schedule(sname, **sargs)  # refuses unknown names and arguments, checks ranges
    ctrl = []
    for c in controllers:
        c = dict(c)
        cname = c.pop("name")
        cargs = _check_args(f"controller {cname!r}", dict(c.pop("args", {}), **c),
                            schedules.CONTROLLERS.get(cname)[1])
        controller = schedules.build_controller(cname, **cargs)
        monitor = getattr(controller, "monitor", None)  # what it will read, its default included
        if monitor is not None:  # "<split>/<metric>" (the split was checked by build_controller)
            metric = monitor.partition("/")[2]
            if metric not in pinfo.metrics:
                raise unknown(f"metric monitored by controller {cname!r} on problem {problem!r}", metric,
                              pinfo.metrics)
        ctrl.append({"name": cname, "args": cargs})
    check_schedule_applies(optimizer, sname, [c["name"] for c in ctrl])
    if device not in DEVICES:
        raise unknown("device", device, DEVICES)
    if scale == "smoke":
        device = "cpu"  # smoke runs are pinned to the CPU: CI and reviewers' laptops have no GPU
    if precision not in PRECISIONS:
        raise unknown("precision", precision, PRECISIONS)
    defaults = pinfo.defaults[scale]
    for key, value in (("seed", seed), ("init_seed", init_seed), ("data_seed", data_seed), ("noise_seed", noise_seed)):
        if value is not None:
            SEED.check(key, value)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("grad_accum", grad_accum),
                       ("eval_every", eval_every)):
        if value is not None:
            COUNT.check(key, value)
    spec = {
        "spec_version": SPEC_VERSION,
        "paper": paper,
        "problem": problem,
        "problem_args": problems.registry.resolve_args(problem, problem_args or {}),
        "problem_impl_version": pinfo.impl_version,
        "scale": scale,
        "device": device,
        "precision": precision,
        "optimizer": {"name": optimizer, "impl_version": oinfo.impl_version, "hparams": resolved},
        "schedule": {"name": sname, "args": sargs},
        "controllers": ctrl,
        "init_seed": int(seed if init_seed is None else init_seed),
        "data_seed": int(seed if data_seed is None else data_seed),
        "noise_seed": int(seed if noise_seed is None else noise_seed),
        "epochs": int(epochs if epochs is not None else defaults["epochs"]),
        "batch_size": int(batch_size if batch_size is not None else defaults["batch_size"]),
        "grad_accum": int(grad_accum if grad_accum is not None else defaults.get("grad_accum", 1)),
        "eval_every": int(eval_every if eval_every is not None else defaults.get("eval_every", 1)),
        "tags": dict(tags or {}),
    }
    if spec["batch_size"] % spec["grad_accum"]:
        raise ValueError(f"batch_size {spec['batch_size']} is not divisible by grad_accum {spec['grad_accum']}")
    for key in ("epochs", "batch_size", "grad_accum", "eval_every"):
        if spec[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {spec[key]}")
    canonical_json(spec)  # fails early on NaN/inf or non-JSON values
    return spec


SEED = params.integer(0)
COUNT = params.integer(1)


def _check_args(what: str, args: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule's or controller's arguments: known keys, each of its default's kind (a number, never a
    boolean, where the default is a number), returned normalized (a number YAML left as a string is a float);
    the factory checks the ranges."""
    check_keys(f"argument for {what}", args, defaults)
    out = {}
    for key, value in args.items():
        param = params.loose(defaults[key])
        param.check(f"argument {key!r} of {what}", value)
        out[key] = param.normalize(value)
    return out


def check_schedule_applies(optimizer: str, schedule: str, controllers: Iterable[str]) -> None:
    """Refuse an outer lr schedule (a non-constant schedule or an lr controller) for an optimizer that owns its
    step size and declares that it takes none (OptimizerInfo.lr_schedule == "refused"): it would have no effect."""
    if optim.info(optimizer).lr_schedule != "refused":
        return
    changing = [c for c in controllers if schedules.controller_changes_lr(c)]
    if schedule != "constant" or changing:
        given = [f"schedule {schedule!r}"] if schedule != "constant" else []
        given += [f"controller {c!r}" for c in changing]
        raise ValueError(f"optimizer {optimizer!r} sets its own step size and takes no outer learning-rate schedule "
                         f"(its registry entry declares lr_schedule='refused'), but the spec gives "
                         f"{' and '.join(given)}: use the constant schedule and no lr controller")


def check_spec(spec: Mapping[str, Any]) -> None:
    """A spec read from disk: the same keys as make_spec writes, nothing more, nothing less."""
    check_keys("spec key", spec, SPEC_KEYS)
    missing = sorted(set(SPEC_KEYS) - set(spec))
    if missing:
        raise ValueError(f"spec is missing {', '.join(missing)}")


# --- deferred specs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeferredSpec:
    """A run whose spec is known only once `depends_on` exists; `key` names it stably in the plan."""

    key: str
    template: Mapping[str, Any]
    depends_on: str  # path of a JSON file produced by another job
    resolver: str  # name in RESOLVERS
    tags: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"deferred": True, "key": self.key, "template": dict(self.template), "depends_on": self.depends_on,
                "resolver": self.resolver, "tags": dict(self.tags)}


RESOLVERS: Registry[Callable[[Mapping[str, Any], Any], dict]] = Registry("resolver")


def register_resolver(name: str):
    def wrap(fn):
        RESOLVERS.add(name, fn)
        return fn

    return wrap


@register_resolver("hparams_from")
def _hparams_from(template: Mapping[str, Any], dependency: Any) -> dict:
    """Fill the template's optimizer hyperparameters from a JSON {"hparams": {...}} (a tuning winner)."""
    t = dict(template)
    return make_spec(**{**t, "hparams": {**t.get("hparams", {}), **dependency["hparams"]}})


def get_resolver(name: str) -> Callable[[Mapping[str, Any], Any], dict]:
    """A resolver by name. A planner's own resolver is named "<planner>.<name>" and registered by the planner's
    module, which a batch job has not imported: it is imported here on first use (as get_planner does)."""
    if name not in RESOLVERS and "." in name:
        from optrepro.planners import get_planner

        get_planner(name.split(".", 1)[0])
    return RESOLVERS.get(name)


def resolve_deferred(entry: Mapping[str, Any]) -> dict[str, Any]:
    dependency = json.loads(Path(entry["depends_on"]).read_text())
    spec = get_resolver(entry["resolver"])(entry["template"], dependency)
    spec["tags"] = {**spec.get("tags", {}), **entry.get("tags", {})}
    return spec


# --- batches ----------------------------------------------------------------------------------------

def stable_bucket(text: str, n: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) % max(n, 1)


def batch_digest(members: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()[:12]


def unique_entries(entries: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Mapping[str, Any]],
                                                                   dict[str, dict[str, Any]]]:
    """Entries by key (run id, or a deferred spec's key), each canonicalised once, and who asked for each run.

    The same run asked for twice (two claims sharing a baseline, or two papers comparing the same optimizer on
    the same problem) is one run: the first request's entry is kept, and `requests[key]` maps every paper that
    asked for it to the list of distinct tag sets it gave (one paper can ask for one run under several labels:
    a published run that is also a one-shot seed). Two different specs sharing an id (a 20-hex prefix
    collision) is an error."""
    bodies: dict[str, str] = {}
    out: dict[str, Mapping[str, Any]] = {}
    requests: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e.get("deferred"):
            key, body = e["key"], canonical_json({k: v for k, v in e.items() if k != "tags"})
            paper = e["template"]["paper"]
        else:
            body = run_content(e)
            key, paper = hashlib.sha256(body.encode()).hexdigest()[:RUN_ID_HEX], e["paper"]
        if bodies.setdefault(key, body) != body:
            raise ValueError(f"two different specs share the id {key}")
        out.setdefault(key, e)
        asked = requests.setdefault(key, {}).setdefault(paper, [])
        if e.get("tags", {}) not in asked:
            asked.append(e.get("tags", {}))
    return out, requests
