"""The plan behind the Snakemake DAG: config -> specs -> batches, cached by a hash of config and code.

Snakemake re-parses the Snakefile in every job (every SLURM job too), so planning must be cheap and must not
import torch. `load_plan(config)` expands config/papers/<paper>.yaml into specs once, groups them into
batches (jobs) and writes two files under <results>/plans/<hash>/:

    index.json     batch key -> {paper, problem, stage, manifest, runs, cost_s, gpu, inputs, offset, length}
    entries.jsonl  the specs, grouped by batch; a batch job reads only its byte range

A batch key is "<paper>/<problem>/<stage>-<bucket>-<digest>": bucket = a stable hash of the run id modulo the
number of buckets (adding a run touches one batch), digest = a hash of the member ids (a membership change
makes a new manifest, so Snakemake reruns exactly that batch).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from optrepro import plan as planmod
from optrepro import problems
from optrepro.planners import get_planner

PACKAGE_DIR = Path(__file__).resolve().parent
ALL = "all"  # `papers: all`, `problems: all`
DEFAULT_ORDER = 50  # a paper config's `order:` when it has none: sections are typeset in increasing order


# --- paper configs -----------------------------------------------------------------------------------

def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> Any:
    """A YAML file, with a parse error that names the file (not `<unicode string>`)."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None


def available_papers(config_dir: Path) -> list[str]:
    """Every paper with a config file, in typesetting order (`order:` in its config, then the name)."""
    found = []
    for path in (Path(config_dir) / "papers").glob("*.yaml"):
        raw = _read_yaml(path) or {}
        order = raw.get("order", DEFAULT_ORDER) if isinstance(raw, Mapping) else DEFAULT_ORDER
        found.append((order if isinstance(order, int) else DEFAULT_ORDER, path.stem))
    return [name for _, name in sorted(found)]


def enabled_papers(config: Mapping[str, Any], config_dir: Path) -> list[str]:
    """The papers a run covers: `papers: all` (the default) means every config/papers/*.yaml in its order;
    a list is taken in its own order. Unknown names are refused with the valid choices."""
    choices = available_papers(config_dir)
    papers = config.get("papers", ALL)
    if papers == ALL:
        return choices
    for paper in papers:
        if paper not in choices:
            from optrepro.registry import unknown

            raise unknown("paper in `papers` (each needs config/papers/<paper>.yaml)", paper, choices)
    return list(papers)


def paper_title(config_dir: Path, paper: str) -> str:
    """The section title of a paper (its config's `title:`; the paper's name when it has none)."""
    raw = _read_yaml(Path(config_dir) / "papers" / f"{paper}.yaml") or {}
    return str(raw.get("title", paper)) if isinstance(raw, Mapping) else paper


def paper_config(config_dir: Path, paper: str, scale: str) -> dict[str, Any]:
    """config/papers/<paper>.yaml at `scale`: the full protocol, with its `smoke:` block merged in at smoke."""
    path = Path(config_dir) / "papers" / f"{paper}.yaml"
    if not path.exists():
        from optrepro.registry import unknown

        raise unknown("paper", paper, available_papers(config_dir))
    raw = _read_yaml(path) or {}
    smoke = raw.pop("smoke", {}) or {}
    return deep_merge(raw, smoke) if scale == "smoke" else raw


# --- the plan ----------------------------------------------------------------------------------------

def code_hash() -> str:
    """A hash of the package's source: a code change re-plans (run ids may depend on impl_version)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def config_hash(config: Mapping[str, Any], config_dir: Path) -> str:
    h = hashlib.sha256(planmod.canonical_json(config).encode())
    for paper in enabled_papers(config, config_dir):
        path = Path(config_dir) / "papers" / f"{paper}.yaml"
        h.update(path.read_bytes() if path.exists() else b"")
    h.update(code_hash().encode())
    return h.hexdigest()[:16]


def _cost_s(entry: Mapping[str, Any], scale: str) -> float:
    spec = entry["template"] if entry.get("deferred") else entry
    return float(problems.info(spec["problem"]).cost_per_epoch_s[scale]) * float(spec.get("epochs", 1))


@dataclass
class Plan:
    root: Path  # <results>/plans/<hash>
    index: dict[str, dict[str, Any]]

    def manifests(self, paper: str | None = None, stage: str | None = None, problem: str | None = None) -> list[str]:
        return sorted(b["manifest"] for b in self.index.values()
                      if (paper is None or b["paper"] == paper) and (stage is None or b["stage"] == stage)
                      and (problem is None or b["problem"] == problem))

    def digest(self, paper: str) -> str:
        """A short hash of a paper's batches (and so of its run ids): it names the plan behind a section and
        changes only when the section's runs do."""
        return hashlib.sha256("\n".join(self.manifests(paper)).encode()).hexdigest()[:12]

    def batch_for_manifest(self, manifest: str) -> dict[str, Any]:
        return self._by_manifest()[manifest]

    def _by_manifest(self) -> dict[str, dict[str, Any]]:
        if not hasattr(self, "_manifest_index"):
            self._manifest_index = {b["manifest"]: dict(b, key=k) for k, b in self.index.items()}
        return self._manifest_index


def group_batches(entries: Mapping[str, Mapping[str, Any]], scale: str, results_dir: str, target_s: float,
                  max_runs: int) -> dict[str, dict[str, Any]]:
    """Batches sized by estimated cost: many cheap runs per job, one expensive run per job. `entries` maps each
    entry's key (run id, or a deferred spec's key) to the entry."""
    groups: dict[tuple[str, str, str], list[tuple[str, Mapping[str, Any], float]]] = {}
    for key, e in entries.items():
        spec = e["template"] if e.get("deferred") else e
        stage = {**spec.get("tags", {}), **e.get("tags", {})}.get("stage", "main")
        groups.setdefault((spec["paper"], spec["problem"], stage), []).append((key, e, _cost_s(e, scale)))
    batches: dict[str, dict[str, Any]] = {}
    for (paper, problem, stage), members in sorted(groups.items()):
        total = sum(cost for _, _, cost in members)
        n_buckets = max(math.ceil(total / target_s), math.ceil(len(members) / max_runs), 1)
        n_buckets = min(n_buckets, len(members))
        buckets: dict[int, list] = {}
        for member in members:
            buckets.setdefault(planmod.stable_bucket(member[0], n_buckets), []).append(member)
        info = problems.info(problem)
        for bucket, items in sorted(buckets.items()):
            items.sort(key=lambda m: m[0])
            digest = planmod.batch_digest(key for key, _, _ in items)
            key = f"{paper}/{problem}/{stage}-{bucket}-{digest}"
            batches[key] = {
                "paper": paper, "problem": problem, "stage": stage,
                "manifest": f"{results_dir}/batches/{key}.json",
                "runs": len(items), "cost_s": sum(cost for _, _, cost in items),
                "gpu": bool(info.gpu and scale == "full"),
                "datasets": list(info.datasets) if scale == "full" else [],
                "inputs": sorted({e["depends_on"] for _, e, _ in items if e.get("deferred")}),
                "entries": [e for _, e, _ in items],
            }
    return batches


def build_plan(config: Mapping[str, Any], config_dir: Path) -> tuple[dict[str, dict], dict[str, Mapping]]:
    scale = config["scale"]
    entries: list[dict] = []
    for paper in enabled_papers(config, config_dir):
        pconfig = paper_config(config_dir, paper, scale)
        pconfig["paper"] = paper
        planner = get_planner(pconfig.get("planner", "grid"))
        entries.extend(e.to_json() if isinstance(e, planmod.DeferredSpec) else e
                       for e in planner(pconfig, scale, config))
    problems_wanted = config.get("problems", ALL)
    if problems_wanted != ALL:  # only these problems, e.g. the ones a CPU can run at full scale
        for name in problems_wanted:
            problems.info(name)  # an unknown name is refused with the valid ones
        entries = [e for e in entries if (e["template"] if e.get("deferred") else e)["problem"] in problems_wanted]
    unique = planmod.unique_entries(entries)
    results_dir = f"{config.get('results_dir', 'results')}/{scale}"
    batches = group_batches(unique, scale, results_dir, float(config["batch_target_s"][scale]),
                            int(config.get("batch_max_runs", 5000)))
    return batches, unique


def write_plan(batches: Mapping[str, dict], root: Path) -> dict[str, dict]:
    root.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict] = {}
    offset = 0
    chunks = []
    for key, batch in batches.items():
        blob = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in batch["entries"]).encode()
        chunks.append(blob)
        index[key] = {k: v for k, v in batch.items() if k != "entries"} | {"offset": offset, "length": len(blob)}
        offset += len(blob)
    tmp = root / "entries.jsonl.tmp"
    tmp.write_bytes(b"".join(chunks))
    tmp.replace(root / "entries.jsonl")
    from optrepro.io import atomic_write_json

    atomic_write_json(root / "index.json", index)  # written last: its presence means the plan is complete
    return index


def load_plan(config: Mapping[str, Any], config_dir: Path = Path("config")) -> Plan:
    """The plan for `config`, from the cache when config, paper configs and code are unchanged.

    <results>/plans/current points at it: batch jobs name that stable path, so a code change that leaves
    run ids alone changes no job's command line and reruns nothing.
    """
    plans = Path(config.get("results_dir", "results")) / config["scale"] / "plans"
    root = plans / config_hash(config, config_dir)
    index_path = root / "index.json"
    if index_path.exists():
        plan = Plan(root, json.loads(index_path.read_text()))
    else:
        batches, _ = build_plan(config, config_dir)
        plan = Plan(root, write_plan(batches, root))
        _prune_plans(plans, keep=root)
    current = plans / "current"
    if not (current.is_symlink() and current.readlink() == Path(root.name)):
        tmp = plans / f".current.{root.name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(root.name)
        tmp.replace(current)
    return plan


def _prune_plans(plans: Path, keep: Path, kept: int = 3) -> None:
    """Every code change makes a new plan (a full-scale one is tens of MB): keep the newest few, which covers
    jobs still running under the plan before."""
    import shutil

    old = sorted((p for p in plans.iterdir() if p.is_dir() and not p.is_symlink() and p != keep),
                 key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in old[kept - 1:]:
        shutil.rmtree(stale, ignore_errors=True)


def plan_manifests(plan_root: Path, paper: str, stage: str | None = None, problem: str | None = None) -> list[str]:
    """The manifests of a written plan's batches of `paper` (and `stage`, `problem` when given)."""
    index = json.loads((Path(plan_root) / "index.json").read_text())
    return sorted(b["manifest"] for b in index.values() if b["paper"] == paper
                  and (stage is None or b["stage"] == stage) and (problem is None or b["problem"] == problem))


def batch_entries(plan_root: Path, key: str) -> list[dict[str, Any]]:
    """The entries of one batch, read from its byte range of entries.jsonl."""
    plan_root = Path(plan_root)
    index = json.loads((plan_root / "index.json").read_text())
    if key not in index:
        raise ValueError(f"batch {key!r} is not in the plan {plan_root}")
    with open(plan_root / "entries.jsonl", "rb") as f:
        f.seek(index[key]["offset"])
        blob = f.read(index[key]["length"])
    return [json.loads(line) for line in blob.decode().splitlines()]


# --- CLI ---------------------------------------------------------------------------------------------

def _cmd_plan(args) -> int:
    import yaml

    config = yaml.safe_load(Path(args.config).read_text())
    if args.scale:
        config["scale"] = args.scale
    validate_config(config, Path(args.config).parent, Path(args.schema_dir))
    plan = load_plan(config, Path(args.config).parent)
    runs = sum(b["runs"] for b in plan.index.values())
    print(f"plan {plan.root}: {runs} runs in {len(plan.index)} batches")
    if args.list:
        for key, b in sorted(plan.index.items()):
            print(f"{key}\t{b['runs']} runs\t{b['cost_s']:.0f} s")
    return 0


def paper_schema(paper: str, pconfig: Mapping[str, Any], schema_dir: Path) -> Path:
    """A paper's own schema (`workflow/schemas/papers/<paper>.schema.yaml`) if it has one, else its planner's."""
    own = Path(schema_dir) / "papers" / f"{paper}.schema.yaml"
    return own if own.exists() else Path(schema_dir) / "papers" / f"{pconfig.get('planner', 'grid')}.schema.yaml"


def validate_config(config: Mapping[str, Any], config_dir: Path, schema_dir: Path) -> None:
    """Validate config.yaml and every enabled paper's config against their JSON schemas (names the bad key)."""
    import jsonschema
    import yaml

    def check(instance, schema_path: Path, what: str):
        schema = yaml.safe_load(schema_path.read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            raise ValueError(f"{what}: at {where}: {e.message}")

    check(config, schema_dir / "config.schema.yaml", "config")
    for paper in enabled_papers(config, config_dir):
        pconfig = _read_yaml(Path(config_dir) / "papers" / f"{paper}.yaml") or {}
        if not isinstance(pconfig, Mapping):
            raise ValueError(f"config/papers/{paper}.yaml: the top level must be a mapping of keys")
        get_planner(pconfig.get("planner", "grid"))  # an unknown planner is named with the valid choices
        schema = paper_schema(paper, pconfig, schema_dir)
        if not schema.exists():
            raise ValueError(f"config/papers/{paper}.yaml: no schema {schema}")
        check(pconfig, schema, f"config/papers/{paper}.yaml")


def add_commands(sub) -> None:
    p = sub.add_parser("plan", help="expand the config into run specs and batches (cached), print a summary")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--schema-dir", default="workflow/schemas")
    p.add_argument("--scale", choices=problems.registry.SCALES)
    p.add_argument("--list", action="store_true", help="list every batch")
    p.set_defaults(func=_cmd_plan)
