"""The NOS particle search as stages of the DAG: genomes, evaluations, selections (Morgan & Hougen, arXiv 2404.06679).

The authors' ParticleMutationAlgorithm (OUStudent/NeuralOptimizerSearch@005dfce NeuralOptimizerSearch.py):
a pool of random valid genomes, each scored on the init proxy; the best `particles` of them become particles;
each particle is re-scored on the evolution proxy, then for `steps` steps gets `mutants` mutants, and the best
mutant replaces it (the parent is not kept, so fitness need not rise). A mutant whose evaluation fails is
replaced by a fresh mutant, up to `redo` attempts; a slot whose attempts all fail scores -1. Particles never
interact, so each is an independent chain of jobs:

    genomes-pool.json --(pool evaluations, in batches)--> pool.json
    pool.json --(particle i re-scored)--> particle-i/step-0.json --(mutants of step 1)--> particle-i/step-1.json ...

Files under results/<scale>/nos/<search>/ (this module's functions write them; Snakemake rules name them):
    genomes-pool.json, genomes-random.json   random valid genomes (+ draw statistics, integrity-rejected sample)
    pool.json                                the pool's scores and the chosen particles
    particle-<i>/step-<j>.json               particle i after step j: its genome, score, and expressions seen
    evals/<label>.json                       one evaluation's record (written by its resolver, in the run job)
    summary.json                             counts, chains and controls, for the report

An evaluation is a deferred spec (optrepro.plan.DeferredSpec) resolved in the run job by `resolve_evaluation`:
it builds the genome (for a mutant: mutation with the integrity check, deterministic from the search seed),
runs the protocol's learning-rate sweep as ordinary runs, writes evals/<label>.json and returns the final run's
spec, which the run job trains. A genome that fails the sweep has no final run: the resolver returns its best
sweep run (complete already, so nothing is trained again) and the record says "failed".

Deviation, for parallelism: the code draws the 7 mutants of a step one after another, each new against every
expression tried before it, including the earlier slots' failed attempts. Here the first attempts of a step's
slots are drawn in order from one stream (each new against the particle's history and the earlier slots' first
attempts), and a slot's re-draws from its own stream (new against the history, all first attempts and its own
earlier draws), so the slots of a step run in parallel.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from optrepro import plan as planmod
from optrepro.io import atomic_write_json
from optrepro.nos import fitness, search
from optrepro.nos.space import genome_to_json
from optrepro.registry import check_keys

ROLES = ("pool", "start", "slot", "reeval", "random", "rejected")
SETTINGS_KEYS = {"nesterov_form", "ema_form", "a14"}


@dataclass(frozen=True)
class Search:
    """One search run (the main one, or a control: another seed at reduced scale)."""

    name: str
    seed: int  # the genetic operators' seed
    pool: int
    particles: int
    steps: int
    mutants: int
    redo: int
    init: fitness.RunContext  # the pool's proxy
    evolution: fitness.RunContext  # the particles' proxy
    reeval_seed: int | None = None  # the winner's-curse control: run seed of the re-scores (None: off)
    random_evals: int = 0  # the random-search control: evaluations on the evolution proxy (0: off)
    rejected_sample: int = 0  # the false-rejection control: integrity-rejected genomes scored on the init proxy

    @property
    def dir(self) -> Path:
        return Path(self.init.results_dir) / "nos" / self.name

    @property
    def settings(self) -> dict:
        return dict(self.evolution.optimizer_settings)

    def to_json(self) -> dict:
        data = asdict(self)
        data["init"], data["evolution"] = self.init.to_json(), self.evolution.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Search":
        data = dict(data)
        data["init"] = fitness.RunContext.from_json(data["init"])
        data["evolution"] = fitness.RunContext.from_json(data["evolution"])
        return cls(**data)


# ---- configuration -----------------------------------------------------------------------------------

SEARCH_KEYS = {"name", "seed", "pool", "particles", "steps", "mutants", "redo", "run_seed", "optimizer"}
PROXY_KEYS = {"problem", "total_steps", "warmup_steps", "sweep_steps_per_epoch", "final_steps_per_epoch",
              "sweep_epochs", "final_epochs", "batch_size"}
PROTOCOL_KEYS = {"first", "then", "kill_threshold", "kill_from_epoch", "pass_threshold", "final_kill_from_epoch"}
CONTROL_KEYS = {"random_search", "seeds", "reeval", "rejected"}


def searches(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list[Search]:
    """The searches config/papers/nos.yaml asks for: the main search, then one per control seed."""
    from optrepro.planners.grid import device_for

    cfg = dict(pconfig["search"])
    check_keys("key in nos search", cfg, SEARCH_KEYS)
    settings = dict(cfg.get("optimizer", {}))
    check_keys("key in nos search optimizer", settings, SETTINGS_KEYS)
    protocol = dict(pconfig.get("protocol", {}))
    check_keys("key in nos protocol", protocol, PROTOCOL_KEYS)
    for key in ("first", "then"):
        if key in protocol:
            protocol[key] = tuple(float(x) for x in protocol[key])
    protocol = fitness.Protocol(**protocol)
    results = f"{global_config.get('results_dir', 'results')}/{scale}"
    contexts = {}
    for role in ("init", "evolution"):
        proxy = dict(pconfig["proxies"][role])
        check_keys(f"key in nos proxies.{role}", proxy, PROXY_KEYS)
        proxy = fitness.Proxy(**proxy)
        contexts[role] = fitness.RunContext(scale=scale, results_dir=results, proxy=proxy, protocol=protocol,
                                            seed=int(cfg.get("run_seed", 0)),
                                            device=device_for(proxy.problem, scale, global_config),
                                            optimizer_settings=settings)
    controls = dict(pconfig.get("controls", {}))
    check_keys("key in nos controls", controls, CONTROL_KEYS)

    def on(name: str) -> dict | None:
        block = dict(controls.get(name) or {})
        return block if block.pop("enabled", False) else None

    particles, steps, mutants = int(cfg["particles"]), int(cfg["steps"]), int(cfg["mutants"])
    random_search, reeval, rejected = on("random_search"), on("reeval"), on("rejected")
    main = Search(
        name=str(cfg.get("name", "main")), seed=int(cfg["seed"]), pool=int(cfg["pool"]), particles=particles,
        steps=steps, mutants=mutants, redo=int(cfg.get("redo", 4)), init=contexts["init"],
        evolution=contexts["evolution"],
        reeval_seed=int(reeval.get("run_seed", 1)) if reeval is not None else None,
        # the same number of evaluations as the particles get without retries: a re-score each, then K x M
        random_evals=particles * (1 + steps * mutants) if random_search is not None else 0,
        rejected_sample=int(rejected.get("sample", 50)) if rejected is not None else 0)
    _check(main)
    out = [main]
    seeds = on("seeds")
    if seeds is not None:
        for s in seeds.get("seeds", [1, 2, 3]):
            out.append(_check(replace(main, name=f"{main.name}-seed{s}", seed=int(s),
                                      pool=int(seeds.get("pool", main.pool)),
                                      particles=int(seeds.get("particles", main.particles)),
                                      steps=int(seeds.get("steps", main.steps)),
                                      mutants=int(seeds.get("mutants", main.mutants)),
                                      reeval_seed=None, random_evals=0, rejected_sample=0)))
    return out


def _check(s: Search) -> Search:
    if min(s.pool, s.particles, s.steps, s.mutants, s.redo) < 1:
        raise ValueError(f"nos search {s.name!r}: pool, particles, steps, mutants and redo must be >= 1")
    if s.particles > s.pool:
        raise ValueError(f"nos search {s.name!r}: {s.particles} particles need a pool of at least as many "
                         f"genomes, got pool {s.pool}")
    return s


# ---- names and paths ---------------------------------------------------------------------------------

def genomes_path(s: Search, kind: str) -> Path:
    return s.dir / f"genomes-{kind}.json"


def pool_path(s: Search) -> Path:
    return s.dir / "pool.json"


def step_path(s: Search, particle: int, step: int) -> Path:
    return s.dir / f"particle-{particle:03d}" / f"step-{step}.json"


def summary_path(s: Search) -> Path:
    return s.dir / "summary.json"


def eval_path(s: Search, label: str) -> Path:
    return s.dir / "evals" / f"{label}.json"


def stage(s: Search, what: str) -> str:
    """The batch stage of a group of evaluations: batches never mix stages, so a particle's jobs stay its own."""
    return f"{s.name}-{what}"


def particle_stage(s: Search, particle: int, step: int | str) -> str:
    return stage(s, f"p{particle:03d}-s{step}" if isinstance(step, int) else f"p{particle:03d}-{step}")


# ---- genomes -----------------------------------------------------------------------------------------

def _checker(s: Search):
    from optrepro.nos import integrity

    return integrity.checker(integrity.Settings(**s.settings))


def make_genomes(s: Search, kind: str) -> dict:
    """`kind` "pool": the pool (+ the first rejected_sample integrity-rejected draws); "random": the
    random-search control's genomes. One draw stream each, from the search seed."""
    count = {"pool": s.pool, "random": s.random_evals}.get(kind)
    if count is None:
        raise ValueError(f"unknown genome kind {kind!r}. Valid choices: pool, random")
    rng = search.rng_for(s.seed, "genomes", kind)
    stats = search.DrawStats()
    check = _checker(s)
    genomes = [search.random_genome(rng, check, stats, keep_rejected=s.rejected_sample if kind == "pool" else 0)
               for _ in range(count)]
    return {"search": s.name, "kind": kind, "genomes": [g.to_json() for g in genomes],
            "texts": [g.to_genome().text() for g in genomes], "draws": stats.to_json(),
            "rejected": stats.rejected, "rejected_texts": [search.OptChrom.from_json(g).to_genome().text()
                                                         for g in stats.rejected]}


def first_attempts(s: Search, parent: search.OptChrom, seen: list[str], particle: int, step: int,
                   upto: int) -> list[search.OptChrom]:
    """The first-attempt mutants of slots 0..upto-1 of a step, drawn in order from the step's stream."""
    rng = search.rng_for(s.seed, "mutants", particle, step)
    check = _checker(s)
    taken = set(seen)
    out = []
    for _ in range(upto):
        child = search.mutate(parent, rng, check, taken)
        taken.add(child.key())
        out.append(child)
    return out


def redraw(s: Search, parent: search.OptChrom, seen: set[str], particle: int, step: int, slot: int,
           attempt: int) -> search.OptChrom:
    rng = search.rng_for(s.seed, "redo", particle, step, slot, attempt)
    return search.mutate(parent, rng, _checker(s), seen)


# ---- evaluations (deferred specs) ----------------------------------------------------------------------

def evaluation(s: Search, role: str, label: str, depends_on: Path, index: Mapping[str, int]) -> planmod.DeferredSpec:
    if role not in ROLES:
        raise ValueError(f"unknown evaluation role {role!r}. Valid choices: {', '.join(ROLES)}")
    ctx = s.init if role in ("pool", "rejected") else s.evolution
    proxy = ctx.proxy
    # the cost estimate that sizes batches counts the problem's epochs (passes over its training split, 45,000
    # images at full scale, 256 at smoke): the whole protocol's steps, in passes
    steps = (len(ctx.protocol.first) + len(ctx.protocol.then)) * proxy.sweep_epochs * proxy.sweep_steps_per_epoch
    steps += proxy.total_steps
    steps_per_pass = (45_000 if ctx.scale == "full" else 256) // proxy.batch_size
    where = {"pool": "pool", "rejected": "rejected", "random": "random"}.get(role)
    group = stage(s, where) if where else particle_stage(
        s, index["particle"], "reeval" if role == "reeval" else index.get("step", 0))
    template = {"paper": "nos", "problem": proxy.problem, "scale": ctx.scale,
                "epochs": max(1, round(steps / steps_per_pass)),
                "nos": {"search": s.to_json(), "role": role, "label": label, "index": dict(index), "stage": group}}
    return planmod.DeferredSpec(key=f"nos/{s.name}/{label}", template=template, depends_on=str(depends_on),
                                resolver="nos.evaluation", tags={"stage": group, "nos_role": role})


def evaluations(s: Search) -> list[planmod.DeferredSpec]:
    """Every evaluation of a search, as deferred specs."""
    out = [evaluation(s, "pool", f"pool-{k:04d}", genomes_path(s, "pool"), {"genome": k}) for k in range(s.pool)]
    for i in range(s.particles):
        out.append(evaluation(s, "start", f"p{i:03d}-start", pool_path(s), {"particle": i, "step": 0}))
        for j in range(1, s.steps + 1):
            out.extend(evaluation(s, "slot", f"p{i:03d}-s{j}-m{m}", step_path(s, i, j - 1),
                                  {"particle": i, "step": j, "slot": m}) for m in range(s.mutants))
        if s.reeval_seed is not None:  # every genome the chain held: step 0 was not selected, steps >= 1 were
            out.extend(evaluation(s, "reeval", f"p{i:03d}-reeval-s{j}", step_path(s, i, j), {"particle": i, "step": j})
                       for j in range(s.steps + 1))
    out.extend(evaluation(s, "random", f"random-{k:04d}", genomes_path(s, "random"), {"genome": k})
               for k in range(s.random_evals))
    out.extend(evaluation(s, "rejected", f"rejected-{k:04d}", genomes_path(s, "pool"), {"genome": k})
               for k in range(s.rejected_sample))
    return out


def _attempt_record(chrom: search.OptChrom, record: Mapping[str, Any]) -> dict:
    keep = {k: v for k, v in record.items() if k != "final_spec"}
    keep["final_run"] = planmod.run_id(record["final_spec"]) if record["status"] == "ok" else None
    return {"genome": chrom.to_json(), "key": chrom.key(), "text": chrom.to_genome().text(), **keep}


@planmod.register_resolver("nos.evaluation")
def resolve_evaluation(template: Mapping[str, Any], dependency: Mapping[str, Any]) -> dict:
    """Build the genome, run the sweep (with the mutants' retries), record it, return the run to train."""
    nos = template["nos"]
    s = Search.from_json(nos["search"])
    role, index = nos["role"], nos["index"]
    ctx = s.init if role in ("pool", "rejected") else s.evolution
    ctx = replace(ctx, tags={"stage": nos["stage"], "nos_search": s.name, "nos_role": role, "nos_label": nos["label"]})
    if role == "reeval":
        ctx = replace(ctx, seed=int(s.reeval_seed))
    attempts = []
    if role == "slot":
        parent = search.OptChrom.from_json(dependency["genome"])
        seen = list(dependency["seen"])
        firsts = first_attempts(s, parent, seen, index["particle"], index["step"], s.mutants)
        taken = set(seen) | {c.key() for c in firsts}
        chrom = firsts[index["slot"]]
        for attempt in range(1, s.redo + 1):
            if attempt > 1:
                chrom = redraw(s, parent, taken, index["particle"], index["step"], index["slot"], attempt)
            taken.add(chrom.key())
            attempts.append((chrom, fitness.sweep(ctx, genome_to_json(chrom.to_genome()))))
            if attempts[-1][1]["status"] == "ok":
                break
    else:
        source = {"pool": lambda: dependency["genomes"][index["genome"]],
                  "random": lambda: dependency["genomes"][index["genome"]],
                  "rejected": lambda: dependency["rejected"][index["genome"]],
                  "start": lambda: dependency["particles"][index["particle"]]["genome"],
                  "reeval": lambda: dependency["genome"]}[role]()
        chrom = search.OptChrom.from_json(source)
        attempts.append((chrom, fitness.sweep(ctx, genome_to_json(chrom.to_genome()))))
    chrom, last = attempts[-1]
    genome = genome_to_json(chrom.to_genome())
    if last["status"] == "ok":
        spec = last["final_spec"]
    else:  # no final run: hand back the best sweep run, complete already
        best = max(range(len(last["accuracy"])), key=lambda k: (_finite(last["accuracy"][k]), -k))
        spec = fitness.run_spec(ctx, genome, last["rates"][best], "sweep")
    atomic_write_json(eval_path(s, nos["label"]), {
        "label": nos["label"], "role": role, "index": index, "status": last["status"],
        "attempts": [_attempt_record(c, r) for c, r in attempts], "final_run": planmod.run_id(spec)
        if last["status"] == "ok" else None})
    return spec


def _finite(x: float) -> float:
    return -math.inf if x is None or math.isnan(x) else x


# ---- selections (torch-free) ---------------------------------------------------------------------------

def read_eval(s: Search, label: str) -> dict:
    path = eval_path(s, label)
    if not path.exists():
        raise FileNotFoundError(f"{path}: evaluation {label!r} has no record; its run batch has not run")
    record = json.loads(path.read_text())
    record["fitness"] = (fitness.best_metric(s.init.results_dir, record["final_run"], "valid/accuracy")
                         if record["status"] == "ok" else None)
    return record


def select_pool(s: Search) -> dict:
    """The best `particles` of the pool by init fitness (failed genomes score 0, as the code's init_fitness;
    ties keep pool order)."""
    genomes = json.loads(genomes_path(s, "pool").read_text())["genomes"]
    records = [read_eval(s, f"pool-{k:04d}") for k in range(s.pool)]
    scores = [r["fitness"] if r["fitness"] is not None else 0.0 for r in records]
    order = sorted(range(s.pool), key=lambda k: (-_finite(scores[k]), k))[:s.particles]
    return {"search": s.name,
            "pool": [{"genome": k, "status": r["status"], "fitness": r["fitness"], "text": r["attempts"][0]["text"]}
                     for k, r in enumerate(records)],
            "particles": [{"pool_index": k, "genome": genomes[k], "init_fitness": scores[k],
                           "text": records[k]["attempts"][0]["text"]} for k in order]}


def select_step(s: Search, particle: int, step: int) -> dict:
    """Particle `particle` after step `step`: step 0 is its re-score on the evolution proxy; step j >= 1 the best
    of its slots (a failed slot scores -1; ties keep slot order), which replaces it whatever its score."""
    if step == 0:
        record = read_eval(s, f"p{particle:03d}-start")
        attempt = record["attempts"][0]
        return {"search": s.name, "particle": particle, "step": 0, "genome": attempt["genome"],
                "text": attempt["text"], "fitness": _score(record), "status": record["status"],
                "seen": [attempt["key"]], "slots": []}
    parent = json.loads(step_path(s, particle, step - 1).read_text())
    records = [read_eval(s, f"p{particle:03d}-s{step}-m{m}") for m in range(s.mutants)]
    scores = [_score(r) for r in records]
    best = max(range(len(records)), key=lambda m: (_finite(scores[m]), -m))
    winner = records[best]["attempts"][-1]
    seen = list(parent["seen"]) + [a["key"] for r in records for a in r["attempts"]]
    return {"search": s.name, "particle": particle, "step": step, "genome": winner["genome"],
            "text": winner["text"], "fitness": scores[best], "status": records[best]["status"], "seen": seen,
            "slots": [{"slot": m, "status": r["status"], "fitness": scores[m], "attempts": len(r["attempts"]),
                       "text": r["attempts"][-1]["text"]} for m, r in enumerate(records)]}


def _score(record: Mapping[str, Any]) -> float:
    return -1.0 if record["fitness"] is None else record["fitness"]


# ---- summary -------------------------------------------------------------------------------------------

def _run_steps(results_dir: str, run: str) -> int:
    path = Path(results_dir) / "runs" / run / "result.json"
    return int(json.loads(path.read_text())["deterministic"]["steps"])


def _eval_steps(s: Search, record: Mapping[str, Any]) -> int:
    """Training steps an evaluation spent: its sweep runs and its final run, over all attempts."""
    runs = [run for a in record["attempts"] for run in a["runs"] + ([a["final_run"]] if a["final_run"] else [])]
    return sum(_run_steps(s.init.results_dir, run) for run in runs)


def best_genomes(s: Search, chains: list[dict]) -> list[dict]:
    """What the search found: the particles' final genomes, best last fitness first (ties: particle order), one
    entry per distinct genome, as canonical JSON (a run's `genome` hyperparameter) and LaTeX. The evaluation's
    arms "searched<k>" are the k-th of these (optrepro.nos.evaluation)."""
    finals = []
    for i, chain in enumerate(chains):
        chrom = search.OptChrom.from_json(json.loads(step_path(s, i, s.steps).read_text())["genome"])
        genome = chrom.to_genome()
        finals.append({"particle": i, "fitness": chain["fitness"][-1],
                       "reeval_fitness": chain["reeval_fitness"][-1] if "reeval_fitness" in chain else None,
                       "key": chrom.key(), "text": genome.text(), "latex": genome.latex(),
                       "genome": genome_to_json(genome)})
    finals.sort(key=lambda f: (-_finite(f["fitness"]), f["particle"]))
    out, keys = [], set()
    for f in finals:
        if f["key"] not in keys:
            keys.add(f["key"])
            out.append({"rank": len(out) + 1, **f})
    return out


def summarize(s: Search) -> dict:
    """What the report needs of a search: the counts the authors' log gives too, the chains, the controls."""
    pool_genomes = json.loads(genomes_path(s, "pool").read_text())
    pool = json.loads(pool_path(s).read_text())
    pool_records = [read_eval(s, f"pool-{k:04d}") for k in range(s.pool)]
    chains = []
    slot_evals = slot_failed = slots_all_failed = 0
    evolution_steps = 0
    for i in range(s.particles):
        states = [json.loads(step_path(s, i, j).read_text()) for j in range(s.steps + 1)]
        start = read_eval(s, f"p{i:03d}-start")
        evolution_steps += _eval_steps(s, start)
        for j in range(1, s.steps + 1):
            for m in range(s.mutants):
                record = read_eval(s, f"p{i:03d}-s{j}-m{m}")
                evolution_steps += _eval_steps(s, record)
                slot_evals += len(record["attempts"])
                slot_failed += sum(1 for a in record["attempts"] if a["status"] != "ok")
                slots_all_failed += record["status"] != "ok"
        chain = {"particle": i, "fitness": [st["fitness"] for st in states], "text": [st["text"] for st in states],
                 "momentum": [search.MOMENTUM[st["genome"]["momentum"]] for st in states]}
        if s.reeval_seed is not None:
            chain["reeval_fitness"] = [_score(read_eval(s, f"p{i:03d}-reeval-s{j}")) for j in range(s.steps + 1)]
        chains.append(chain)
    out: dict[str, Any] = {
        "best": best_genomes(s, chains),
        "search": s.name, "scale": s.init.scale,
        "settings": {"seed": s.seed, "pool": s.pool, "particles": s.particles, "steps": s.steps,
                     "mutants": s.mutants, "redo": s.redo},
        "pool": {"draws": pool_genomes["draws"], "evaluated": s.pool,
                 "passed": sum(1 for r in pool_records if r["status"] == "ok"),
                 "best_fitness": max((r["fitness"] for r in pool_records if r["fitness"] is not None), default=None),
                 "train_steps": sum(_eval_steps(s, r) for r in pool_records)},
        "particles": {"chosen_init_fitness": [p["init_fitness"] for p in pool["particles"]]},
        "evolution": {"slot_evaluations": slot_evals, "slot_evaluations_failed": slot_failed,
                      "slots": s.particles * s.steps * s.mutants, "slots_all_attempts_failed": slots_all_failed,
                      "chosen_steps": s.particles * s.steps, "train_steps": evolution_steps,
                      # as the authors' log counts them: the winners of steps 1..K
                      "chosen_momentum": {k: sum(c["momentum"][1:].count(k) for c in chains)
                                          for k in search.MOMENTUM},
                      "final_fitness": [c["fitness"][-1] for c in chains]},
        "chains": chains,
    }
    if s.reeval_seed is not None:  # score minus re-score, where both succeeded
        gaps = {j: [c["fitness"][j] - c["reeval_fitness"][j] for c in chains
                    if c["fitness"][j] >= 0 and c["reeval_fitness"][j] >= 0] for j in range(s.steps + 1)}
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        out["winners_curse"] = {
            "gap_unselected_mean": mean(gaps[0]),  # step 0: the particle's first score, not a max over mutants
            "gap_selected_mean": mean([g for j in range(1, s.steps + 1) for g in gaps[j]]),
            "gap_by_step_mean": [mean(gaps[j]) for j in range(s.steps + 1)],
            "pairs_by_step": [len(gaps[j]) for j in range(s.steps + 1)],
            "train_steps": sum(_eval_steps(s, read_eval(s, f"p{i:03d}-reeval-s{j}"))
                               for i in range(s.particles) for j in range(s.steps + 1))}
    if s.random_evals:
        records = [read_eval(s, f"random-{k:04d}") for k in range(s.random_evals)]
        out["random_search"] = {
            "evaluations": len(records), "passed": sum(1 for r in records if r["status"] == "ok"),
            "best_fitness": max((r["fitness"] for r in records if r["fitness"] is not None), default=None),
            "fitness": [r["fitness"] for r in records], "train_steps": sum(_eval_steps(s, r) for r in records)}
    if s.rejected_sample:
        records = [read_eval(s, f"rejected-{k:04d}") for k in range(min(s.rejected_sample,
                                                                          len(pool_genomes["rejected"])))]
        draws = pool_genomes["draws"]
        accepted = s.pool
        steps = [_eval_steps(s, r) for r in records]
        mean_steps = sum(steps) / len(steps) if steps else None
        out["integrity_check"] = {
            "rejected_draws": draws["failed_integrity"], "accepted_draws": accepted,
            "sample": len(records), "sample_passed_surrogate": sum(1 for r in records if r["status"] == "ok"),
            "sample_fitness": [r["fitness"] for r in records],
            "false_rejection_rate": (sum(1 for r in records if r["status"] == "ok") / len(records)
                                     if records else None),
            "mean_train_steps_per_rejected": mean_steps,
            # what scoring every rejected draw of the pool would have cost, in training steps on the init proxy
            "train_steps_saved": mean_steps * draws["failed_integrity"] if mean_steps is not None else None,
            "train_steps": sum(steps)}
    # every training step the search and its controls spent (sweep runs included, which no manifest lists)
    out["train_steps_total"] = sum(block.get("train_steps", 0) for block in (
        out["pool"], out["evolution"], out.get("winners_curse", {}), out.get("random_search", {}),
        out.get("integrity_check", {})))
    return out


# ---- CLI -----------------------------------------------------------------------------------------------

def _search_from_args(args) -> Search:
    import yaml

    from optrepro.workflow import paper_config

    config = yaml.safe_load(Path(args.config).read_text())
    config["scale"] = args.scale
    if args.results_dir:
        config["results_dir"] = args.results_dir
    if args.device:
        config["device"] = args.device
    pconfig = paper_config(Path(args.config).parent, "nos", args.scale)
    found = {s.name: s for s in searches(pconfig, args.scale, config)}
    if args.search not in found:
        raise ValueError(f"unknown nos search {args.search!r}. Valid choices: {', '.join(found)}")
    return found[args.search]


def _cmd(args) -> int:
    s = _search_from_args(args)
    if args.nos_command == "genomes":
        data, path = make_genomes(s, args.kind), genomes_path(s, args.kind)
    elif args.nos_command == "select-pool":
        data, path = select_pool(s), pool_path(s)
    elif args.nos_command == "select-step":
        data, path = select_step(s, args.particle, args.step), step_path(s, args.particle, args.step)
    else:
        data, path = summarize(s), summary_path(s)
    atomic_write_json(path, data)
    print(f"optrepro nos {args.nos_command}: wrote {path}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("nos", help="the NOS search's own stages (genomes, selections, summary)")
    nos = p.add_subparsers(dest="nos_command", required=True)
    from optrepro.nos import evaluation

    evaluation.add_command(nos)
    for name, text in (("genomes", "draw a search's random valid genomes"),
                       ("select-pool", "score the pool and choose the particles"),
                       ("select-step", "choose a particle's next genome from its step's mutants"),
                       ("summary", "a search's counts, chains and controls")):
        q = nos.add_parser(name, help=text)
        q.add_argument("--config", default="config/config.yaml")
        q.add_argument("--scale", required=True, choices=("full", "smoke"))
        q.add_argument("--search", default="main")
        q.add_argument("--results-dir", help="override config results_dir")
        q.add_argument("--device", help="override config device")
        if name == "genomes":
            q.add_argument("--kind", required=True, choices=("pool", "random"))
        if name == "select-step":
            q.add_argument("--particle", type=int, required=True)
            q.add_argument("--step", type=int, required=True)
        q.set_defaults(func=_cmd)
