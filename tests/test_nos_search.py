"""The NOS search: integrity check, genetic operators, the LR protocol, and the search as independent chains.

The search stages run here in-process, in the DAG's order (genomes, pool batch, pool selection, per particle: start,
steps, re-score; controls; summary), through the same run batches and selection functions the rules call.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from optrepro.io import atomic_write_json
from optrepro.nos import fitness, integrity, search, space, stages
from optrepro.nos.space import B, U, Genome, final_genome, genome_from_json, genome_to_json

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHECK = integrity.checker()


# ---- integrity check ----------------------------------------------------------------------------------

def test_integrity_accepts_adam_and_rejects_gradient_ignoring_updates():
    assert CHECK(final_genome("adam")) == (True, False)
    assert CHECK(final_genome("opt10")) == (True, False)
    ignoring = [Genome((U("id", "w3"),)),  # decay towards 0: at best sum(b^2) = 4.59
                Genome((U("id", "one"),)),  # the same step on every coordinate: at best 4.34
                Genome((U("id", "w3"),), momentum="nesterov"),
                Genome((B("add", "one", "w4"),), momentum="momentum")]
    for genome in ignoring:
        assert CHECK(genome) == (False, False), genome.text()


def test_integrity_keeps_an_ascending_genome_flipped_and_fails_nan_and_exceptions():
    assert CHECK(Genome((U("neg", "g"),))) == (True, True)  # descends only with its sign flipped
    assert CHECK(Genome((U("log_abs", "g"), U("inv", 0), U("exp", 1)))) == (False, False)  # inf/NaN steps
    # the authors' expMovAvg divides by 0: inf everywhere, unless an op saturates it
    ema = Genome((U("ema", "g"),))
    assert CHECK(ema) == (False, False)
    assert integrity.check(ema, integrity.Settings(ema_form="fixed")) == (True, False)
    assert integrity.check(final_genome("adam"), integrity.Settings(nesterov_form="bogus")) == (False, False)


def test_quadratic_starts_at_the_documented_loss():
    # lr 0 on the first step and a zero update: the loss stays at L(x0) = 7.1525
    zero = Genome((B("sub", "g", "g"),))
    assert integrity.quadratic_loss(zero, 1.0, False) == pytest.approx(7.1525, abs=1e-5)


# ---- genetic operators --------------------------------------------------------------------------------

PERMISSIVE = lambda genome: (True, False)  # noqa: E731 (structure only: no training on the quadratic)


def _well_formed(chrom: search.OptChrom) -> None:
    for pos in range(search.N_OPERANDS, search.SIZE):
        row = chrom.adj[pos]
        values = sorted(v for v in row if v)
        assert values == ([1, 2] if chrom.node(pos).binary else [1]), (pos, values)
    root_inputs = chrom.inputs(search.ROOT)
    assert any(k >= search.N_OPERANDS for k in root_inputs), "the root takes a hidden node"
    for (i, j), decay in chrom.decays.items():
        assert search.N_OPERANDS <= i < search.SIZE and 0 <= j < search.SIZE
        decay.expr()  # a well-formed decay expression


@pytest.mark.parametrize("seed", range(40))
def test_mutation_always_yields_a_valid_genome(seed):
    rng = search.rng_for("property", seed)
    chrom = search.random_genome(rng, PERMISSIVE)
    seen = {chrom.key()}
    for _ in range(25):  # a chain of mutants, each from the last
        _well_formed(chrom)
        child = search.mutate(chrom, rng, PERMISSIVE, seen)
        assert not child.has_cycle()
        genome = child.to_genome()  # validates: known ops and operands, inputs from earlier nodes
        assert child.key() not in seen
        assert genome_from_json(json.loads(json.dumps(genome_to_json(genome)))) == genome
        assert search.OptChrom.from_json(json.loads(json.dumps(child.to_json()))).to_genome() == genome
        seen.add(child.key())
        chrom = child


def test_mutation_with_the_integrity_check_passes_it():
    rng = search.rng_for("integrity", 0)
    parent = search.random_genome(rng, CHECK)
    for _ in range(5):
        child = search.mutate(parent, rng, CHECK, {parent.key()})
        passed, needs_flip = CHECK(child.to_genome())
        assert passed and (child.flip or not needs_flip)


def test_random_genomes_follow_the_code_draws():
    rng = search.rng_for("draws", 0)
    stats = search.DrawStats()
    genomes = [search.random_genome(rng, PERMISSIVE, stats) for _ in range(400)]
    roots_binary = np.mean([g.node(search.ROOT).binary for g in genomes])
    assert 0.68 < roots_binary < 0.82  # the root is binary with p = 0.75
    momentum = np.bincount([g.momentum for g in genomes], minlength=3) / len(genomes)
    assert np.all(np.abs(momentum - 1 / 3) < 0.07)
    unary_roots = [g for g in genomes if not g.node(search.ROOT).binary]
    with_decay = np.mean([(search.ROOT, g.inputs(search.ROOT)[0]) in g.decays for g in unary_roots])
    assert with_decay > 0.7  # code: a unary root's edge gets a decay with p = 0.85
    for g in genomes[:50]:
        for decay in g.decays.values():
            assert decay.in_unit_interval()  # new decays stay in [0, 1] on the 100-point grid


def test_op_tables_follow_the_code_order():
    assert search.UNARY_NAMES[0] == "id" and search.UNARY_NAMES[14 + 1] == "i1e"
    assert search.UNARY_NAMES[22 + 1] == "ema" and search.UNARY_NAMES[24 + 1] == "running_max"
    assert search.BINARY_NAMES[7] == "clip" and search.BINARY_NAMES[9] == "pow_abs"
    assert search.DECAY_UNARY_NAMES[6] == "i1e" and search.DECAY_UNARY_NAMES[12] == "id"
    assert space.SEARCH_OPERANDS[16] == "qhm_g3" and space.SEARCH_OPERANDS[17] == "aggmo_g"


def test_flip_is_inherited_by_mutants():
    rng = search.rng_for("flip", 0)
    parent = search.random_genome(rng, lambda g: (True, True))
    assert parent.flip
    child = search.mutate(parent, rng, PERMISSIVE, set())
    assert child.flip  # code: check_integrity never resets flip


def test_canonical_genome_ignores_hidden_positions():
    rng = search.rng_for("canonical", 1)
    chrom = search.random_genome(rng, PERMISSIVE)
    swapped = chrom.copy()
    # exchange two hidden positions everywhere: the same active graph, other positions
    a, b = search.N_OPERANDS, search.N_OPERANDS + 1
    perm = list(range(search.SIZE))
    perm[a], perm[b] = b, a
    swapped.nodes[0], swapped.nodes[1] = chrom.nodes[1], chrom.nodes[0]
    swapped.adj = [[chrom.adj[perm[i]][perm[j]] for j in range(search.SIZE)] for i in range(search.SIZE)]
    swapped.decays = {(perm[i], perm[j]): d for (i, j), d in chrom.decays.items()}
    assert swapped.to_genome() == chrom.to_genome()


def test_nos_genome_optimizer_runs_a_searched_genome_and_refuses_a_bad_one():
    import torch

    from optrepro import optim

    genome = genome_to_json(final_genome("opt10"))
    x = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.build("nos_genome", [x], genome=genome, lr=0.5, total_steps=10)
    assert opt.genome.text() == final_genome("opt10").text()
    with pytest.raises(ValueError, match="genome"):
        optim.build("nos_genome", [x], genome={"nodes": []}, total_steps=10)


# ---- the LR protocol ------------------------------------------------------------------------------------

SMOKE_PROXY = fitness.Proxy("nos_cifar10_convnet", total_steps=16, warmup_steps=8, sweep_steps_per_epoch=2,
                            final_steps_per_epoch=4, sweep_epochs=4, final_epochs=4, batch_size=32)


def test_protocol_runs_three_rates_then_four_then_the_final_run(tmp_path):
    ctx = fitness.RunContext("smoke", str(tmp_path), SMOKE_PROXY,
                             fitness.Protocol(kill_threshold=0.0, pass_threshold=0.0))
    record = fitness.evaluate(ctx, genome_to_json(final_genome("adam")))
    assert record["status"] == "ok" and record["rates"] == [10.0, 1e-2, 1e-5, 1.0, 1e-1, 1e-3, 1e-4]
    assert record["lr"] == record["rates"][int(np.argmax(record["accuracy"]))]
    assert 0 <= record["fitness"] <= 1
    final = json.loads((tmp_path / "runs" / record["final_run"] / "spec.json").read_text())
    assert final["optimizer"]["hparams"]["lr"] == record["lr"] and final["epochs"] == 4
    assert final["problem_args"]["epoch_examples"] == 4 * 32
    result = json.loads((tmp_path / "runs" / record["final_run"] / "result.json").read_text())
    assert result["deterministic"]["steps"] == 16


def test_protocol_stops_after_three_rates_when_all_are_below_the_kill_threshold(tmp_path):
    ctx = fitness.RunContext("smoke", str(tmp_path), SMOKE_PROXY,
                             fitness.Protocol(kill_threshold=1.01, pass_threshold=1.01))
    record = fitness.evaluate(ctx, genome_to_json(final_genome("adam")))
    assert record["status"] == "failed" and len(record["rates"]) == 3 and record["fitness"] is None
    for run in record["runs"]:  # each sweep run was killed at the end of epoch 3 (of 4)
        result = json.loads((tmp_path / "runs" / run / "result.json").read_text())
        assert result["deterministic"]["epochs"] == 3


def test_protocol_fails_when_the_best_rate_is_below_the_pass_threshold(tmp_path):
    ctx = fitness.RunContext("smoke", str(tmp_path), SMOKE_PROXY,
                             fitness.Protocol(kill_threshold=0.0, pass_threshold=1.01))
    record = fitness.evaluate(ctx, genome_to_json(final_genome("adam")))
    assert record["status"] == "failed" and len(record["rates"]) == 7 and record["final_run"] is None


def test_proxy_refuses_a_sweep_longer_than_the_warmup():
    with pytest.raises(ValueError, match="warm-up"):
        fitness.Proxy("nos_cifar10_convnet", total_steps=16, warmup_steps=4, sweep_steps_per_epoch=2,
                      final_steps_per_epoch=4, sweep_epochs=4, final_epochs=4)


# ---- the search as stages ------------------------------------------------------------------------------

def nos_config(**search_overrides) -> dict:
    pconfig = yaml.safe_load((ROOT / "config" / "papers" / "nos.yaml").read_text())
    smoke = pconfig.pop("smoke")
    from optrepro.workflow import deep_merge

    pconfig = deep_merge(pconfig, smoke)
    pconfig["search"].update(search_overrides)
    pconfig["paper"] = "nos"
    return pconfig


def run_stages(s: stages.Search) -> None:
    """One search in the DAG's order, in this process."""
    from optrepro.runner import run_batch

    entries = {e.key.rsplit("/", 1)[1]: e.to_json() for e in stages.evaluations(s)}

    def run(labels):
        assert run_batch([entries[label] for label in labels], Path(s.init.results_dir)) == 0

    atomic_write_json(stages.genomes_path(s, "pool"), stages.make_genomes(s, "pool"))
    run([f"pool-{k:04d}" for k in range(s.pool)])
    atomic_write_json(stages.pool_path(s), stages.select_pool(s))
    for i in range(s.particles):
        run([f"p{i:03d}-start"])
        atomic_write_json(stages.step_path(s, i, 0), stages.select_step(s, i, 0))
        for j in range(1, s.steps + 1):
            run([f"p{i:03d}-s{j}-m{m}" for m in range(s.mutants)])
            atomic_write_json(stages.step_path(s, i, j), stages.select_step(s, i, j))
        if s.reeval_seed is not None:
            run([f"p{i:03d}-reeval-s{j}" for j in range(s.steps + 1)])
    if s.random_evals:
        atomic_write_json(stages.genomes_path(s, "random"), stages.make_genomes(s, "random"))
        run([f"random-{k:04d}" for k in range(s.random_evals)])
    if s.rejected_sample:
        run([f"rejected-{k:04d}" for k in range(s.rejected_sample)])
    atomic_write_json(stages.summary_path(s), stages.summarize(s))


@pytest.fixture(scope="module")
def smoke_search(tmp_path_factory):
    results = tmp_path_factory.mktemp("nos")
    # the smoke config with two steps per chain, so that a step's mutants come from a mutant
    (main,) = stages.searches(nos_config(steps=2), "smoke", {"results_dir": str(results)})
    run_stages(main)
    return main


def test_smoke_search_runs_every_stage(smoke_search):
    s = smoke_search
    summary = json.loads(stages.summary_path(s).read_text())
    assert summary["pool"]["evaluated"] == s.pool and len(summary["chains"]) == s.particles == 2
    assert summary["evolution"]["slots"] == s.particles * s.steps * s.mutants
    assert summary["evolution"]["slot_evaluations"] >= summary["evolution"]["slots"]
    assert sum(summary["evolution"]["chosen_momentum"].values()) == summary["evolution"]["chosen_steps"]
    assert summary["random_search"]["evaluations"] == s.particles * (1 + s.steps * s.mutants)
    assert summary["integrity_check"]["sample"] == s.rejected_sample
    assert summary["winners_curse"]["pairs_by_step"] == [
        sum(1 for c in summary["chains"] if c["fitness"][j] >= 0 and c["reeval_fitness"][j] >= 0)
        for j in range(s.steps + 1)]
    for chain in summary["chains"]:
        assert len(chain["fitness"]) == len(chain["reeval_fitness"]) == s.steps + 1
    pool = json.loads(stages.pool_path(s).read_text())
    scores = [p["fitness"] or 0.0 for p in pool["pool"]]
    assert [p["init_fitness"] for p in pool["particles"]] == sorted(scores, reverse=True)[:s.particles]


def test_summary_ranks_the_final_particles_as_runnable_genomes(smoke_search):
    s = smoke_search
    summary = json.loads(stages.summary_path(s).read_text())
    best = summary["best"]
    finals = [c["fitness"][-1] for c in summary["chains"]]
    assert [b["fitness"] for b in best] == sorted([finals[b["particle"]] for b in best], reverse=True)
    assert len({b["key"] for b in best}) == len(best) and {b["particle"] for b in best} <= set(range(s.particles))
    # the compute the section reports: every training step of every evaluation, sweep runs included
    trained = [json.loads(path.read_text())["deterministic"]["steps"]
               for path in (Path(s.init.results_dir) / "runs").glob("*/result.json")]
    assert summary["train_steps_total"] >= sum(trained) > summary["pool"]["train_steps"]
    for b in best:
        genome = genome_from_json(b["genome"])  # what the evaluation's searched arms run
        assert genome.text() == b["text"] == summary["chains"][b["particle"]]["text"][-1]
        assert genome.latex() == b["latex"]


def test_the_best_mutant_replaces_the_particle(smoke_search):
    s = smoke_search
    for i in range(s.particles):
        for j in range(1, s.steps + 1):
            state = json.loads(stages.step_path(s, i, j).read_text())
            scores = [slot["fitness"] for slot in state["slots"]]
            assert state["fitness"] == max(scores)
            best = scores.index(max(scores))
            record = stages.read_eval(s, f"p{i:03d}-s{j}-m{best}")
            assert state["genome"] == record["attempts"][-1]["genome"]
            parent = json.loads(stages.step_path(s, i, j - 1).read_text())
            assert set(parent["seen"]) < set(state["seen"])
            keys = [a["key"] for m in range(s.mutants) for a in stages.read_eval(s, f"p{i:03d}-s{j}-m{m}")["attempts"]]
            assert len(set(keys)) == len(keys) and not set(keys) & set(parent["seen"])  # every mutant is new


def test_failed_mutants_are_retried_up_to_redo(smoke_search):
    s = smoke_search
    for path in (s.dir / "evals").glob("p*-s*-m*.json"):
        record = json.loads(path.read_text())
        statuses = [a["status"] for a in record["attempts"]]
        assert 1 <= len(statuses) <= s.redo
        assert all(st == "failed" for st in statuses[:-1])  # retried only after a failure
        assert statuses[-1] == "ok" or len(statuses) == s.redo


def test_same_seed_gives_the_same_search(smoke_search, tmp_path):
    (again,) = stages.searches(nos_config(steps=2), "smoke", {"results_dir": str(tmp_path)})
    # the pool and the first step of the first chain again, in another directory (neither depends on the number
    # of particles or steps)
    again = replace(again, particles=1, steps=1, random_evals=0, rejected_sample=0, reeval_seed=None)
    run_stages(again)
    pool = lambda s: json.loads(stages.pool_path(s).read_text())  # noqa: E731
    assert pool(again)["pool"] == pool(smoke_search)["pool"]
    assert pool(again)["particles"] == pool(smoke_search)["particles"][:1]
    for i in range(again.particles):
        for j in range(again.steps + 1):
            assert stages.step_path(again, i, j).read_text() == stages.step_path(smoke_search, i, j).read_text()
    other = stages.make_genomes(replace(again, seed=1), "pool")
    assert other["genomes"] != json.loads(stages.genomes_path(again, "pool").read_text())["genomes"]


# ---- planning: independent chains ------------------------------------------------------------------------

def full_plan(tmp_path):
    from optrepro.workflow import load_plan, validate_config

    for sub in ("config", "paper"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("build", "tables", "figures"))
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    config.update(papers=["nos"], scale="full", results_dir=str(tmp_path / "results"))
    validate_config(config, tmp_path / "config", ROOT / "workflow" / "schemas")
    return load_plan(config, tmp_path / "config"), config


def test_full_plan_has_the_paper_sizes_and_one_chain_per_particle(tmp_path):
    plan, config = full_plan(tmp_path)
    main = stages.searches(nos_config_full(), "full", config)[0]
    assert (main.pool, main.particles, main.steps, main.mutants, main.redo) == (500, 50, 5, 7, 4)
    chain = re.compile(r"^main-p(\d{3})-(s\d+|reeval)$")
    by_particle: dict[str, set] = {}
    for batch in plan.index.values():
        m = chain.match(batch["stage"])
        if not m:
            continue
        particle, step = m.groups()
        by_particle.setdefault(particle, set()).add(step)
        for path in batch["inputs"]:  # a particle's batches read its own previous step, or the pool's choice
            if step == "s0":
                assert path == str(stages.pool_path(main))
            elif step == "reeval":  # each genome the chain held, re-scored
                assert path in {str(stages.step_path(main, int(particle), j)) for j in range(main.steps + 1)}
            else:
                assert path == str(stages.step_path(main, int(particle), int(step[1:]) - 1))
    assert len(by_particle) == 50
    assert all(steps == {f"s{j}" for j in range(6)} | {"reeval"} for steps in by_particle.values())
    pool_batches = [b for b in plan.index.values() if b["stage"] == "main-pool"]
    assert len(pool_batches) > 1 and sum(b["runs"] for b in pool_batches) == 500  # evaluated in shards


def nos_config_full() -> dict:
    pconfig = yaml.safe_load((ROOT / "config" / "papers" / "nos.yaml").read_text())
    pconfig.pop("smoke")
    return {**pconfig, "paper": "nos"}


def test_snakemake_dag_has_fifty_independent_particle_chains(tmp_path):
    """`snakemake -n` at full scale: every job's inputs and outputs, so every dependency between jobs."""
    plan, config = full_plan(tmp_path)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({**config, "results_dir": "results"}))
    dry = subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--cores", "1", "-n", "--",
                          "nos_search"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = []  # (rule, inputs, outputs)
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry.stdout + dry.stderr):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if not rule:
            continue
        files = {key: re.search(rf"^\s+{key}: (.*)$", block, re.M) for key in ("input", "output")}
        jobs.append((rule.group(1), *(m.group(1).split(", ") if m else [] for m in files.values())))
    producer = {out: k for k, (_, _, outs) in enumerate(jobs) for out in outs}

    def particle(path):
        m = re.search(r"(main(?:-seed\d)?)[-/]p(?:article-)?(\d{3})", path)
        return m.groups() if m else None

    chain_of = {k: particle(outs[0]) for k, (_, _, outs) in enumerate(jobs) if outs and particle(outs[0])}
    within = 0
    for k, (rule, inputs, _) in enumerate(jobs):
        for path in inputs:
            j = producer.get(path)
            if k in chain_of and j in chain_of:
                assert chain_of[j] == chain_of[k], f"{rule} of {chain_of[k]} reads {path} of {chain_of[j]}"
                within += 1
    # each chain: step j's batch reads step j-1, step j's selection reads its batch and step j-1, + the re-score
    assert within >= 50 * (5 * 3 + 2) + 30 * (3 * 3 + 1)
    steps = {}
    for k, (rule, _, _) in enumerate(jobs):
        if rule == "nos_select_step":
            steps[chain_of[k]] = steps.get(chain_of[k], 0) + 1
    main = [p for (name, p) in steps if name == "main"]
    assert len(main) == 50 and all(steps[("main", p)] == 6 for p in main)
    assert sum(1 for name, _ in steps if name != "main") == 30  # three reduced searches of 10 particles


# ---- the authors' log ------------------------------------------------------------------------------------

LOG_EXCERPT = """INFO:root:TRAINING INITIAL POPULATION
INFO:root: MODEL 0/3 -> Val Acc: 0.74, Val Loss: 141.4, Time: 76.8, Fun: None ~ tanh(g)
INFO:root: INIT MODEL ARCHITECTURE FAILED...
INFO:root: MODEL 2/3 -> Val Acc: 0.75, Val Loss: 141.9, Time: 95.2, Fun: Nest ~ g
INFO:root:INIT PARTICLE 1/2 : Nest ~ g : val: 0.79 - Time: 198.1
INFO:root: Depth: 1/1
INFO:root:    Mom ~ g : FAILED
INFO:root:INIT PARTICLE 1/2 : Nest ~ g : val: 0.80 - Time: 196.7
INFO:root: Depth: 1/1
INFO:root:    Mom ~ g : FAILED
INFO:root:    None ~ g : FAILED
INFO:root:    None ~ v hat : FAILED
INFO:root:    Nest ~ v hat : FAILED
INFO:root:    Nest ~ sign(g) val: 0.81 - Time: 202.0
INFO:root:  Chosen Nest ~ sign(g) : 0.81 - ACCUMULATIVE TIME: 1800.1
INFO:root:INIT PARTICLE 2/2 : None ~ tanh(g) : FAILED
INFO:root: Depth: 1/1
INFO:root:    None ~ g val: 0.70 - Time: 131.6
INFO:root:  Chosen None ~ g : 0.70 - ACCUMULATIVE TIME: 3201.6
INFO:root: --- Time Elapsed: 53.4 min ---
"""


def test_authors_log_counts_follow_restarts_and_retries():
    from optrepro.nos.authors_log import parse

    counts = parse(LOG_EXCERPT.splitlines())
    assert counts["pool_candidates"] == 3 and counts["pool_passed"] == 2 and counts["pool_best_fitness"] == 0.75
    assert counts["particles"] == 2 and counts["particles_init_failed"] == 1
    assert counts["particles_init_median_fitness"] == 0.80  # the restarted block counts, not the aborted one
    assert counts["aborted_child_lines"] == 1
    assert counts["child_evaluations"] == 6 and counts["child_evaluations_failed"] == 4
    assert counts["slots_all_attempts_failed"] == 1  # four failures in a row close a slot
    assert counts["chosen_momentum"] == {"none": 1, "momentum": 0, "nesterov": 1}
    assert counts["final_max_fitness"] == 0.81 and counts["particle_phase_minutes"] == 53.4


def test_published_search_counts_load():
    from optrepro.report.published import load_published_file

    rows = load_published_file(ROOT / "paper" / "published" / "nos.csv").set_index("metric")["value"]
    assert rows["pool_passed"] == 101 and rows["pool_candidates"] == 500
    assert rows["child_evaluations_failed"] == 850 and rows["chosen_steps"] == 250


# ---- speed settings stay out of run ids ----------------------------------------------------------------------

def test_provenance_says_whether_the_optimizer_step_ran_compiled():
    import torch

    from optrepro.optim.nos_expr import NOSGenome
    from optrepro.provenance import provenance

    provenance()  # starts a fresh count, as the end of the previous run does
    x = torch.nn.Parameter(torch.randn(4, 3))
    x.grad = torch.randn(4, 3)
    opt = NOSGenome([x], genome=genome_to_json(final_genome("opt1")), total_steps=10, compile="eager")
    opt.step()
    opt.step()
    assert provenance()["optimizer_step"] == {"compiled": True, "compiled_calls": {"eager": 2}}
    NOSGenome([x], genome=genome_to_json(final_genome("opt1")), total_steps=10).step()
    assert provenance()["optimizer_step"] == {"compiled": False, "compiled_calls": {}}


def test_search_runs_record_an_eager_step(smoke_search):
    runs = list((Path(smoke_search.init.results_dir) / "runs").glob("*/result.json"))
    assert runs
    for path in runs[:10]:
        assert json.loads(path.read_text())["volatile"]["provenance"]["optimizer_step"]["compiled"] is False


def test_threshold_stop_follows_five_epoch_callback():
    from optrepro.schedules import build_controller

    stop = build_controller("threshold_stop", threshold=0.25, start_from_epoch=3)
    for epoch, acc in ((0, 0.1), (1, 0.1), (2, 0.1)):
        stop.observe(epoch, {"train/accuracy": acc})
        assert not stop.should_stop  # Keras epoch indices 0 and 1: not yet judged
    stop.observe(3, {"train/accuracy": 0.249})
    assert stop.should_stop and stop.stopped_epoch == 3
    keep = build_controller("threshold_stop", threshold=0.25, start_from_epoch=3)
    keep.observe(3, {"train/accuracy": 0.25})
    keep.observe(4, {"train/accuracy": float("nan")})  # NaN < 0.25 is False in Keras too
    assert not keep.should_stop
    with pytest.raises(KeyError, match="train/accuracy"):
        keep.observe(5, {"valid/accuracy": 0.5})


def test_epoch_examples_sets_an_epoch_in_steps():
    import torch

    from optrepro import problems

    whole = problems.get("nos_cifar10_convnet", "smoke").splits()["train"]
    sampled = problems.get("nos_cifar10_convnet", "smoke", epoch_examples=300).splits()["train"]
    assert len(whole) == 256 and len(sampled) == 300  # longer than the split: it wraps around
    order = sampled.order(torch.Generator().manual_seed(0))
    assert len(order) == 300 and sorted(order[:256].tolist()) == list(range(256))
    assert sampled.tensors[0] is whole.tensors[0]  # the images are loaded once for every epoch length
    assert len(sampled.to("cpu")) == 300


def test_bad_nos_config_is_refused_naming_the_value(tmp_path):
    from optrepro.workflow import validate_config

    _, config = full_plan(tmp_path)
    path = tmp_path / "config" / "papers" / "nos.yaml"
    pconfig = yaml.safe_load(path.read_text())
    pconfig["proxies"]["init"]["warmup"] = 800
    path.write_text(yaml.safe_dump(pconfig))
    with pytest.raises(ValueError, match="warmup"):
        validate_config(config, tmp_path / "config", ROOT / "workflow" / "schemas")
    with pytest.raises(ValueError, match="pool of at least"):
        stages.searches(nos_config(particles=9), "smoke", {"results_dir": str(tmp_path)})


def test_a_genome_spec_is_content_addressed():
    from optrepro.plan import run_id

    ctx = fitness.RunContext("smoke", "results/smoke", SMOKE_PROXY)
    genome = final_genome("opt10")
    spec = lambda g: fitness.run_spec(ctx, json.loads(json.dumps(genome_to_json(g))), 1e-2, "final")  # noqa: E731
    named = Genome(genome.nodes, momentum=genome.momentum, name="another label")
    assert run_id(spec(genome)) == run_id(spec(named))  # the name is a label, not content
    assert run_id(spec(genome)) != run_id(spec(Genome(genome.nodes, momentum=genome.momentum, flip=True)))
    assert run_id(spec(genome)) != run_id(spec(Genome(genome.nodes, momentum="none")))
