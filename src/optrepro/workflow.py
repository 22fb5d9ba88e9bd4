"""The plan behind the Snakemake DAG: config -> specs -> batches, cached by a hash of config and code.

Snakemake re-parses the Snakefile in every job (every SLURM job too), so planning must be cheap and must not
import torch. `load_plan(config)` expands config/papers/<paper>.yaml into specs once, groups them into
batches (jobs) and writes two files under <results>/plans/<hash>/:

    index.json     batch key -> {paper, problem, problems, stage, manifest, runs, cost_s, gpu, datasets, inputs,
                   offset, length}
    entries.jsonl  the specs, grouped by batch; a batch job reads only its byte range

A batch key is "<paper>/<problem>/<stage>-<bucket>-<digest>" (problem "mixed" for cheap problems sharing a job):
bucket = a stable hash of the run id modulo the number of buckets (adding a run touches one batch), digest = a
hash of the member ids (a membership change makes a new manifest, so Snakemake reruns exactly that batch).
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
from optrepro.registry import UnknownNameError

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


class ConfigError(ValueError):
    """A configuration refused before any job: the message names the file, the key and what is valid."""


def read_yaml(path: Path) -> Any:
    """A YAML file, with a parse error that names the file (not `<unicode string>`)."""
    import yaml

    try:
        with open(path) as stream:  # a stream, so that the parser's messages name the file and line
            return yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def available_papers(config_dir: Path) -> list[str]:
    """Every paper with a config file, in typesetting order (`order:` in its config, then the name)."""
    found = []
    for path in (Path(config_dir) / "papers").glob("*.yaml"):
        raw = read_yaml(path) or {}
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

            error = unknown("paper in `papers` (each needs config/papers/<paper>.yaml)", paper, choices)
            raise ConfigError(f"{Path(config_dir) / 'config.yaml'} (with --config overrides): at papers: {error}")
    return list(papers)


def paper_title(config_dir: Path, paper: str) -> str:
    """The section title of a paper (its config's `title:`; the paper's name when it has none)."""
    raw = read_yaml(Path(config_dir) / "papers" / f"{paper}.yaml") or {}
    return str(raw.get("title", paper)) if isinstance(raw, Mapping) else paper


def paper_config(config_dir: Path, paper: str, scale: str) -> dict[str, Any]:
    """config/papers/<paper>.yaml at `scale`: the full protocol, with its `smoke:` block merged in at smoke."""
    path = Path(config_dir) / "papers" / f"{paper}.yaml"
    if not path.exists():
        from optrepro.registry import unknown

        raise unknown("paper", paper, available_papers(config_dir))
    raw = read_yaml(path) or {}
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
                      if (paper is None or paper in b["papers"]) and (stage is None or b["stage"] == stage)
                      and (problem is None or problem in b["problems"]))

    def requests(self, paper: str) -> dict[str, Any]:
        return plan_requests(self.root, paper)

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


MIXED = "mixed"  # the problem part of the key of a batch that holds several cheap problems


def group_batches(entries: Mapping[str, Mapping[str, Any]], scale: str, results_dir: str, target_s: float,
                  max_runs: int) -> dict[str, dict[str, Any]]:
    """Batches sized by estimated cost: many cheap runs per job, one expensive run per job. `entries` maps each
    entry's key (run id, or a deferred spec's key) to the entry.

    Runs are grouped by paper, problem and stage; a group's runs are spread over buckets by a stable hash of
    their keys. Groups of one paper and stage that each cost less than half a job (`target_s`) share one batch,
    keyed with the problem part "mixed": starting a job costs seconds, and a smoke problem's runs, milliseconds."""
    groups: dict[tuple[str, str, str], list[tuple[str, Mapping[str, Any], float]]] = {}
    for key, e in entries.items():
        spec = e["template"] if e.get("deferred") else e
        stage = {**spec.get("tags", {}), **e.get("tags", {})}.get("stage", "main")
        groups.setdefault((spec["paper"], spec["problem"], stage), []).append((key, e, _cost_s(e, scale)))
    cheap: dict[tuple[str, str, str], list] = {}
    for (paper, problem, stage), members in sorted(groups.items()):
        if sum(cost for _, _, cost in members) < target_s / 2:
            cheap.setdefault((paper, MIXED, stage), []).append((problem, members))
    for (paper, _, stage), parts in cheap.items():
        if len(parts) > 1:  # one cheap problem alone keeps its own name
            for problem, _ in parts:
                del groups[(paper, problem, stage)]
            groups[(paper, MIXED, stage)] = [m for _, members in parts for m in members]
    batches: dict[str, dict[str, Any]] = {}
    for (paper, group, stage), members in sorted(groups.items()):
        total = sum(cost for _, _, cost in members)
        n_buckets = max(math.ceil(total / target_s), math.ceil(len(members) / max_runs), 1)
        n_buckets = min(n_buckets, len(members))
        buckets: dict[int, list] = {}
        for member in members:
            buckets.setdefault(planmod.stable_bucket(member[0], n_buckets), []).append(member)
        for bucket, items in sorted(buckets.items()):
            items.sort(key=lambda m: m[0])
            names = sorted({(e["template"] if e.get("deferred") else e)["problem"] for _, e, _ in items})
            infos = [problems.info(name) for name in names]
            digest = planmod.batch_digest(key for key, _, _ in items)
            key = f"{paper}/{group}/{stage}-{bucket}-{digest}"
            batches[key] = {
                "paper": paper, "problem": group, "problems": names, "stage": stage,
                "manifest": f"{results_dir}/batches/{key}.json",
                "runs": len(items), "cost_s": sum(cost for _, _, cost in items),
                "gpu": any(info.gpu for info in infos) and scale == "full",
                "datasets": sorted({d for info in infos for d in info.datasets}) if scale == "full" else [],
                "inputs": sorted({e["depends_on"] for _, e, _ in items if e.get("deferred")}),
                "entries": [e for _, e, _ in items], "keys": [key for key, _, _ in items],
            }
    return batches


def build_plan(config: Mapping[str, Any], config_dir: Path) -> tuple[dict[str, dict], dict[str, dict[str, Any]]]:
    """(batches, requests): the batches of the enabled papers' runs, and per paper {run key: [the tag sets it
    gave]} (a run asked for by several papers, or under several labels, is trained once, in the batch of the
    first paper that asked)."""
    scale = config["scale"]
    entries: list[dict] = []
    for paper in enabled_papers(config, config_dir):
        entries.extend(paper_entries(config, config_dir, paper, scale))
    problems_wanted = config.get("problems", ALL)
    if problems_wanted != ALL:  # only these problems, e.g. the ones a CPU can run at full scale
        for name in problems_wanted:
            try:
                problems.info(name)  # an unknown name is refused with the valid ones
            except UnknownNameError as exc:
                raise ConfigError(f"{Path(config_dir) / 'config.yaml'} (with --config overrides): at problems: "
                                  f"{exc}") from None
        entries = [e for e in entries if (e["template"] if e.get("deferred") else e)["problem"] in problems_wanted]
    unique, requests = planmod.unique_entries(entries)
    results_dir = f"{config.get('results_dir', 'results')}/{scale}"
    batches = group_batches(unique, scale, results_dir, float(config["batch_target_s"][scale]),
                            int(config.get("batch_max_runs", 5000)))
    for batch in batches.values():  # every paper with a run in the batch reads its manifest
        batch["papers"] = sorted({p for key in batch.pop("keys") for p in requests[key]})
    by_paper: dict[str, dict[str, Any]] = {}
    for key, papers in requests.items():
        for paper, tags in papers.items():
            by_paper.setdefault(paper, {})[key] = tags
    return batches, by_paper


def paper_entries(config: Mapping[str, Any], config_dir: Path, paper: str, scale: str) -> list[dict[str, Any]]:
    """What one paper's config plans at `scale`: every value checked (optrepro.plan.make_spec), and any error
    named with the paper's file and the scale. A paper that plans no run is refused too (its report would have
    nothing to read)."""
    path = Path(config_dir) / "papers" / f"{paper}.yaml"
    where = f"{path} (at {scale} scale{', its smoke: block merged in' if scale == 'smoke' else ''})"
    try:
        pconfig = paper_config(config_dir, paper, scale)
        pconfig["paper"] = paper
        planner = get_planner(pconfig.get("planner", "grid"))
        entries = [e.to_json() if isinstance(e, planmod.DeferredSpec) else e for e in planner(pconfig, scale, config)]
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except KeyError as exc:  # a planner reading a key the config lacks
        raise ConfigError(f"{where}: missing key {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not entries:
        raise ConfigError(f"{where}: plans no run. Give it at least one experiment (an empty list in its smoke: "
                          f"block replaces the full-scale one), or leave {paper!r} out of `papers:` in the config")
    return entries


def check_other_scale(config: Mapping[str, Any], config_dir: Path) -> None:
    """Plan the enabled papers at the scale not being run, and throw the result away: a mistake in a paper's
    full-scale protocol is refused by a smoke run, and one in its smoke block by a full run."""
    other = next(s for s in problems.registry.SCALES if s != config["scale"])
    for paper in enabled_papers(config, config_dir):
        paper_entries({**config, "scale": other}, config_dir, paper, other)


def write_plan(batches: Mapping[str, dict], root: Path,
               requests: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict]:
    """index.json, entries.jsonl and papers/<paper>.json ({run key: the tag sets that paper gave the run})."""
    from optrepro.io import atomic_write_json

    root.mkdir(parents=True, exist_ok=True)
    for paper, keys in (requests or {}).items():
        atomic_write_json(root / "papers" / f"{paper}.json", keys)
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
        batches, requests = build_plan(config, config_dir)
        check_other_scale(config, config_dir)  # once per change of config or code, like the plan
        plan = Plan(root, write_plan(batches, root, requests))
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
    return sorted(b["manifest"] for b in index.values() if paper in b["papers"]
                  and (stage is None or b["stage"] == stage) and (problem is None or problem in b["problems"]))


def plan_requests(plan_root: Path, paper: str) -> dict[str, Any]:
    """{run key: [tag sets]} of the runs `paper` asked for (papers/<paper>.json of a written plan)."""
    path = Path(plan_root) / "papers" / f"{paper}.json"
    return json.loads(path.read_text()) if path.exists() else {}


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
    config = read_yaml(Path(args.config))
    if not isinstance(config, dict):
        raise ConfigError(f"{args.config}: the top level must be a mapping of keys")
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


def _schema_hint(error) -> str:
    """What the schema accepts where `error` happened, for the message (jsonschema's own names the bad value)."""
    compact = lambda x: json.dumps(x, separators=(", ", ": "))  # noqa: E731
    if error.validator == "additionalProperties" and isinstance(error.schema.get("properties"), Mapping):
        return f"; valid keys: {', '.join(sorted(error.schema['properties']))}"
    if error.validator in ("oneOf", "anyOf"):
        return "; valid: " + " or ".join(compact(sub) for sub in error.validator_value)
    if error.validator in ("type", "const", "pattern"):
        return f"; valid: {compact({k: v for k, v in error.schema.items() if k != 'description'})}"
    return ""


def validate_config(config: Mapping[str, Any], config_dir: Path, schema_dir: Path) -> None:
    """Validate config.yaml and every enabled paper's config (both scales' blocks) against their JSON schemas;
    a message names the file, the key and what is valid. Values are checked against the optimizers' and
    problems' declarations when the plan is built (load_plan, also for the scale not being run)."""
    import jsonschema
    import yaml

    def check(instance, schema_path: Path, what: str):
        schema = yaml.safe_load(schema_path.read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            hint = _schema_hint(e)
            # oneOf/anyOf: "is not valid under any of the given schemas" hides what is wrong; name the failure
            # inside the alternative whose type the value has (a repeated seed, a bad item), when there is one
            inner = [c for c in e.context or () if c.validator != "type" or c.relative_path]
            if e.validator in ("oneOf", "anyOf") and inner:
                e = max(inner, key=lambda c: len(c.absolute_path))
            where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
            raise ConfigError(f"{what}: at {where}: {e.message}{hint}")

    if not isinstance(config, Mapping):
        raise ConfigError(f"{Path(config_dir) / 'config.yaml'}: the top level must be a mapping of keys")
    check(config, schema_dir / "config.schema.yaml", f"{Path(config_dir) / 'config.yaml'} (with --config overrides)")
    for paper in enabled_papers(config, config_dir):
        path = Path(config_dir) / "papers" / f"{paper}.yaml"
        pconfig = read_yaml(path) or {}
        if not isinstance(pconfig, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        try:
            get_planner(pconfig.get("planner", "grid"))  # an unknown planner is named with the valid choices
        except UnknownNameError as exc:
            raise ConfigError(f"{path}: at planner: {exc}") from None
        schema = paper_schema(paper, pconfig, schema_dir)
        if not schema.exists():
            raise ConfigError(f"{path}: no schema {schema}")
        check(pconfig, schema, str(path))


def add_commands(sub) -> None:
    p = sub.add_parser("plan", help="expand the config into run specs and batches (cached), print a summary")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--schema-dir", default="workflow/schemas")
    p.add_argument("--scale", choices=problems.registry.SCALES)
    p.add_argument("--list", action="store_true", help="list every batch")
    p.set_defaults(func=_cmd_plan)
