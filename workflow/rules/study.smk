# The stages of studies that tune (the Crowded Valley planner's plan_study, used by crowded_valley and arena):
# each problem's tuning winners are selected (torch-free) from the paper's tuning runs, then re-run with more
# seeds by deferred specs that depend on the selection file. Runs come from the plan.
from optrepro.workflow import paper_config

# the papers whose planner tunes by the study's protocol (plan_study): their selection files come from here
STUDY_PAPERS = [p for p in PAPERS if paper_config(Path("config"), p, SCALE).get("planner") in ("crowded_valley",
                                                                                                "arena")]


rule study_select:
    input:
        lambda wc: PLAN.manifests(wc.paper, "tune", problem=wc.problem),
    output:
        f"{RESULTS}/{{paper}}/select/{{problem}}.json",
    log:
        f"{RESULTS}/logs/{{paper}}/select-{{problem}}.log",
    wildcard_constraints:
        paper="|".join(STUDY_PAPERS) or "no-paper",
        problem="[^/]+",
    shell:
        "optrepro select-winners --plan {PLAN_CURRENT} --paper {wildcards.paper} --problem {wildcards.problem}"
        " --scale {SCALE} --output {output} > {log} 2>&1"


rule valley_quadratic_full:
    # `snakemake valley_quadratic_full --cores all`: every run of the Crowded Valley study on quadratic_deep
    # (all optimizers, schedules and budgets, re-runs included). It needs no download and no GPU.
    input:
        PLAN.manifests("crowded_valley", problem="quadratic_deep") if "crowded_valley" in PAPERS else [],
