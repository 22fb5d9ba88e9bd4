"""Counts from the authors' search log, to set beside ours (torch-free).

The log is OUStudent/NeuralOptimizerSearch@005dfce nas_optimizer_particle_n50_k5_m7.log (Python logging of the
search's __main__, one run of n = 50, K = 5, M = 7). It is not part of this repository: paper/published/nos.csv
holds the counts `parse` derives from it. Lines that matter:

    " MODEL k/500 -> Val Acc: f, ..., Fun: <expr>"        a pool genome that passed, with its fitness
    " INIT MODEL ARCHITECTURE FAILED..."                 a pool genome that failed the protocol
    "INIT PARTICLE i/50 : <expr> : val: f - Time: s"      particle i re-scored (": FAILED" when it failed)
    " Depth: k/5"                                        a step begins
    "    <expr> val: f - Time: s" / "    <expr> : FAILED" one mutant evaluation
    "  Chosen <expr> : f - ACCUMULATIVE TIME: s"         the step's winner
    " --- Time Elapsed: m min --- "                     the particle phase's wall time

The run was restarted twice while on particle 1 (its "INIT PARTICLE 1/50" appears three times): the counts of the
particle phase use each particle's last block, the one that finished; `aborted_child_lines` counts the rest.
"""
from __future__ import annotations

import re
import statistics
from typing import Iterable

POOL_PASS = re.compile(r"^INFO:root: MODEL (\d+)/(\d+) -> Val Acc: ([0-9.eE+-]+|nan)")
POOL_FAIL = re.compile(r"^INFO:root: INIT MODEL ARCHITECTURE FAILED")
PARTICLE = re.compile(r"^INFO:root:INIT PARTICLE (\d+)/(\d+) : (.*) : (?:val: ([0-9.eE+-]+|nan) - Time|FAILED)")
CHILD_OK = re.compile(r"^INFO:root:    (.*) val: ([0-9.eE+-]+|nan) - Time: ")
CHILD_FAIL = re.compile(r"^INFO:root:    (.*) : FAILED")
CHOSEN = re.compile(r"^INFO:root:  Chosen (.*) : ([0-9.eE+-]+|nan|-1) - ACCUMULATIVE TIME")
ELAPSED = re.compile(r"--- Time Elapsed: ([0-9.]+) min ---")


def _momentum(expr: str) -> str:
    return {"None": "none", "Mom": "momentum", "Nest": "nesterov"}[expr.split(" ~ ", 1)[0]]


def parse(lines: Iterable[str]) -> dict:
    pool_pass: list[float] = []
    pool_fail = 0
    blocks: dict[int, dict] = {}  # particle -> its last block
    aborted_child_lines = 0
    current = None
    elapsed_min = None
    for line in lines:
        if m := POOL_PASS.match(line):
            pool_pass.append(float(m.group(3)))
        elif POOL_FAIL.match(line):
            pool_fail += 1
        elif m := PARTICLE.match(line):
            index = int(m.group(1))
            if index in blocks:  # a restart: the earlier block did not finish
                aborted_child_lines += len(blocks[index]["children"])
            current = blocks[index] = {"expr": m.group(3), "init": float(m.group(4)) if m.group(4) else None,
                                       "children": [], "chosen": []}
        elif current is not None and (m := CHILD_OK.match(line)):
            current["children"].append(float(m.group(2)))
        elif current is not None and CHILD_FAIL.match(line):
            current["children"].append(None)
        elif current is not None and (m := CHOSEN.match(line)):
            current["chosen"].append((m.group(1), float(m.group(2))))
        elif m := ELAPSED.search(line):
            elapsed_min = float(m.group(1))
    finished = [b for _, b in sorted(blocks.items()) if len(b["chosen"]) > 0]
    children = [c for b in finished for c in b["children"]]
    slots_all_failed = 0
    for b in finished:  # a slot: failures until a success, or REDO = 4 failures in a row
        run = 0
        for c in b["children"]:
            if c is None:
                run += 1
                if run == 4:
                    slots_all_failed += 1
                    run = 0
            else:
                run = 0
    inits = [b["init"] for b in finished if b["init"] is not None]
    last = [b["chosen"][-1][1] for b in finished]
    momentum = [_momentum(expr) for b in finished for expr, _ in b["chosen"]]
    return {
        "pool_candidates": len(pool_pass) + pool_fail,
        "pool_passed": len(pool_pass),
        "pool_best_fitness": max(pool_pass) if pool_pass else None,
        "particles": len(finished),
        "particles_init_failed": sum(1 for b in finished if b["init"] is None),
        "particles_init_median_fitness": statistics.median(inits) if inits else None,
        "particles_init_max_fitness": max(inits) if inits else None,
        "child_evaluations": len(children),
        "child_evaluations_failed": sum(1 for c in children if c is None),
        "slots_all_attempts_failed": slots_all_failed,
        "aborted_child_lines": aborted_child_lines,
        "chosen_steps": sum(len(b["chosen"]) for b in finished),
        "final_median_fitness": statistics.median(last) if last else None,
        "final_max_fitness": max(last) if last else None,
        "best_child_fitness": max((c for c in children if c is not None), default=None),
        "chosen_momentum": {k: momentum.count(k) for k in ("none", "momentum", "nesterov")},
        "particle_phase_minutes": elapsed_min,
    }
