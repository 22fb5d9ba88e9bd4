# Crowded Valley's own stages: each problem's tuning winners are selected (torch-free) from its tuning runs,
# then re-run with more seeds (deferred specs that depend on the selection file). Runs come from the plan.
from optrepro.planners.crowded_valley import budgets_of
from optrepro.workflow import paper_config

_VALLEY_BUDGETS = ",".join(f"{k}={v}" for k, v in budgets_of(paper_config(Path("config"), "crowded_valley",
                                                                          SCALE)).items())


rule valley_select:
    input:
        lambda wc: PLAN.manifests("crowded_valley", "tune", problem=wc.problem),
    output:
        f"{RESULTS}/valley/select/{{problem}}.json",
    log:
        f"{RESULTS}/logs/crowded_valley/select-{{problem}}.log",
    shell:
        "optrepro select-winners --plan {PLAN_CURRENT} --problem {wildcards.problem} --budgets {_VALLEY_BUDGETS}"
        " --output {output} > {log} 2>&1"


rule valley_quadratic_full:
    # `snakemake valley_quadratic_full --cores all`: every run of the study on quadratic_deep (all optimizers,
    # schedules and budgets, re-runs included). It needs no download and no GPU.
    input:
        PLAN.manifests("crowded_valley", problem="quadratic_deep"),
