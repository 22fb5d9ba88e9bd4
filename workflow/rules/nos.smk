# NOS: the particle search's own stages (optrepro.nos.stages). Its evaluations are deferred runs in the plan, trained
# by the generic run_batch rule; the rules here draw the genomes and make the selections those runs depend on:
#   genomes-pool.json -> pool batches -> pool.json -> per particle: step-0 -> step-1 -> ... -> step-K
# Each particle's batches depend on its own previous step only, so the 50 chains run side by side.
# The evaluation (optrepro.nos.evaluation): tuning runs -> per problem, each arm's rate (nos_eval_select) -> re-runs.
# Every job here writes a benchmark file, so the paper's smoke slice counts them (tests/test_workflow.py).
from optrepro.nos import evaluation as nos_evaluation
from optrepro.nos import stages as nos_stages
from optrepro.workflow import paper_config

NOS_CONFIG = {**paper_config(Path("config"), "nos", SCALE), "paper": "nos"}
NOS_SEARCHES = {s.name: s for s in nos_stages.searches(NOS_CONFIG, SCALE, config)}
NOS_EVALUATION = nos_evaluation.settings(NOS_CONFIG)
# the report reads the searches' summaries (chains, controls, the genomes found) besides its runs
PAPER_REPORT_INPUTS["nos"] = [str(nos_stages.summary_path(s)) for s in NOS_SEARCHES.values()]
NOS_ARGS = f"--scale {SCALE} --results-dir {config['results_dir']} --device {config.get('device', 'cuda')}"


def nos_step_inputs(wc):
    s, particle, step = NOS_SEARCHES[wc.search], int(wc.particle), int(wc.step)
    previous = [str(nos_stages.step_path(s, particle, step - 1))] if step > 0 else []
    return manifests("nos", nos_stages.particle_stage(s, particle, step)) + previous


def nos_summary_inputs(wc):
    s = NOS_SEARCHES[wc.search]
    files = [str(nos_stages.pool_path(s))]
    files += [str(nos_stages.step_path(s, i, s.steps)) for i in range(s.particles)]
    files += [m for i in range(s.particles) for m in manifests("nos", nos_stages.particle_stage(s, i, "reeval"))]
    files += manifests("nos", nos_stages.stage(s, "random")) + manifests("nos", nos_stages.stage(s, "rejected"))
    return files


rule nos_genomes:
    output:
        f"{RESULTS}/nos/{{search}}/genomes-{{kind}}.json",
    log:
        f"{RESULTS}/logs/nos/{{search}}/genomes-{{kind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/nos/{{search}}/genomes-{{kind}}.tsv"
    wildcard_constraints:
        search="[^/]+",
        kind="pool|random",
    shell:
        "optrepro nos genomes {NOS_ARGS} --search {wildcards.search} --kind {wildcards.kind} > {log} 2>&1"


rule nos_select_pool:
    input:
        lambda wc: manifests("nos", nos_stages.stage(NOS_SEARCHES[wc.search], "pool")),
    output:
        f"{RESULTS}/nos/{{search}}/pool.json",
    log:
        f"{RESULTS}/logs/nos/{{search}}/pool.log",
    benchmark:
        f"{RESULTS}/benchmarks/nos/{{search}}/pool.tsv"
    wildcard_constraints:
        search="[^/]+",
    shell:
        "optrepro nos select-pool {NOS_ARGS} --search {wildcards.search} > {log} 2>&1"


rule nos_select_step:
    input:
        nos_step_inputs,
    output:
        f"{RESULTS}/nos/{{search}}/particle-{{particle}}/step-{{step}}.json",
    log:
        f"{RESULTS}/logs/nos/{{search}}/particle-{{particle}}/step-{{step}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/nos/{{search}}/particle-{{particle}}/step-{{step}}.tsv"
    wildcard_constraints:
        search="[^/]+",
        particle=r"\d{3}",
        step=r"\d+",
    shell:
        "optrepro nos select-step {NOS_ARGS} --search {wildcards.search} --particle {wildcards.particle}"
        " --step {wildcards.step} > {log} 2>&1"


rule nos_summary:
    input:
        nos_summary_inputs,
    output:
        f"{RESULTS}/nos/{{search}}/summary.json",
    log:
        f"{RESULTS}/logs/nos/{{search}}/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/nos/{{search}}/summary.tsv"
    wildcard_constraints:
        search="[^/]+",
    shell:
        "optrepro nos summary {NOS_ARGS} --search {wildcards.search} > {log} 2>&1"


rule nos_eval_select:
    input:
        lambda wc: PLAN.manifests("nos", "tune", problem=wc.problem),
    output:
        f"{RESULTS}/nos/eval/select-{{problem}}.json",
    log:
        f"{RESULTS}/logs/nos/eval/select-{{problem}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/nos/eval/select-{{problem}}.tsv"
    params:
        rates=len(NOS_EVALUATION["rates"]) if NOS_EVALUATION else 0,
        select_on=NOS_EVALUATION["select_on"] if NOS_EVALUATION else "final",
    wildcard_constraints:
        problem="[a-z0-9_]+",
    shell:
        "optrepro nos eval-select --plan {PLAN_CURRENT} --problem {wildcards.problem} --rates {params.rates}"
        " --select-on {params.select_on} --output {output} > {log} 2>&1"


rule nos_search:
    # every search's summary: the main search and its controls
    input:
        [str(nos_stages.summary_path(s)) for s in NOS_SEARCHES.values()],


rule nos_evaluation:
    # the evaluation's re-runs on EfficientNetV2-S (and, through them, the search, tuning runs and selections)
    input:
        PLAN.manifests("nos", "rerun"),
