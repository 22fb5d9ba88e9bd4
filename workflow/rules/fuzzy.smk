# The fuzzy section's own stage: each protocol's tuning winners are selected (torch-free) from its tuning runs;
# its final runs (the winners with the final seeds, the ablations) are deferred specs that depend on that file
# (optrepro.planners.fuzzy). Runs come from the plan.
from optrepro.planners.fuzzy import selection_file

# the protocols whose tuning runs are in the plan (config `problems:` may leave some out)
FUZZY_PROBLEMS = sorted({p for b in PLAN.index.values() if "fuzzy" in b["papers"] and b["stage"] == "tune"
                         for p in b["problems"]})


rule fuzzy_select:
    localrule: True
    input:
        lambda wc: PLAN.manifests("fuzzy", "tune", problem=wc.problem),
    output:
        selection_file(RESULTS, "{problem}"),
    log:
        f"{RESULTS}/logs/fuzzy/select-{{problem}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fuzzy/select-{{problem}}.tsv"
    wildcard_constraints:
        problem="[^/]+",
    shell:
        "optrepro fuzzy-select --plan {PLAN_CURRENT} --problem {wildcards.problem} --scale {SCALE}"
        " --output {output} > {log} 2>&1"


PAPER_REPORT_INPUTS["fuzzy"] = [selection_file(RESULTS, p) for p in FUZZY_PROBLEMS]
