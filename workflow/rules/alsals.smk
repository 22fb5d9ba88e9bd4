# ALSALS: the paper's own stages (optrepro.planners.alsals). Its runs are ordinary and deferred entries of the plan,
# trained by the generic run_batch rule; the rules here write the two files the deferred runs depend on:
#   tune batches -> <task>/<arm>_lr.json (the sweep's winner) -> tuned batches
#   main batches + <task>/<arm>_lr.json -> <task>/<arm>_budget.json (ALSALS's measured units) -> tuned batches
# (the tuned re-runs and the equal-compute runs share the stage `tuned`: both use the sweep's winner)
from optrepro.planners import alsals as alsals_planner
from optrepro.workflow import paper_config

ALSALS_STAGES = alsals_planner.task_stages({**paper_config(Path("config"), "alsals", SCALE), "paper": "alsals"},
                                           SCALE, config)
ALSALS_LR = {f: (s, arm) for s in ALSALS_STAGES.values() for arm, f in s.lr_files.items()}
ALSALS_BUDGET = {f[0]: (s, arm) for s in ALSALS_STAGES.values() for arm, f in s.budget_files.items()}


def alsals_manifests(task, stage):
    """The batch manifests holding one task's problem at a stage (cheap problems may share a `mixed` batch; the
    selection reads only its task's runs)."""
    return PLAN.manifests("alsals", stage, problem=ALSALS_STAGES[task].problem)


def _alsals_lr_inputs(wc):
    stages, arm = ALSALS_LR[f"{RESULTS}/alsals/{wc.task}/{wc.arm}_lr.json"]
    return alsals_manifests(stages.task, "tune")


def _alsals_budget_inputs(wc):
    stages, arm = ALSALS_BUDGET[f"{RESULTS}/alsals/{wc.task}/{wc.arm}_budget.json"]
    _, like, units_of = stages.budget_files[arm]
    return {"lr": stages.lr_files[like], "runs": alsals_manifests(stages.task, "main")}


def _alsals_select_args(wc):
    stages, arm = ALSALS_LR[f"{RESULTS}/alsals/{wc.task}/{wc.arm}_lr.json"]
    return f"--split {stages.select[arm]['split']} --metric {stages.select[arm]['metric']}"


def _alsals_units_of(wc):
    stages, arm = ALSALS_BUDGET[f"{RESULTS}/alsals/{wc.task}/{wc.arm}_budget.json"]
    return stages.budget_files[arm][2]


rule alsals_select_lr:
    input:
        _alsals_lr_inputs,
    output:
        f"{RESULTS}/alsals/{{task}}/{{arm}}_lr.json",
    params:
        select=_alsals_select_args,
    log:
        f"{RESULTS}/logs/alsals/{{task}}/{{arm}}_lr.log",
    benchmark:
        f"{RESULTS}/benchmarks/alsals/{{task}}/{{arm}}_lr.tsv"
    wildcard_constraints:
        task="[a-z0-9_]+",
        arm="[a-z0-9_]+",
    shell:
        "python -m optrepro.planners.alsals select-lr --experiment {wildcards.task} --arm {wildcards.arm}"
        " {params.select} --output {output} {input} > {log} 2>&1"


rule alsals_budget:
    input:
        unpack(_alsals_budget_inputs),
    output:
        f"{RESULTS}/alsals/{{task}}/{{arm}}_budget.json",
    params:
        units_of=_alsals_units_of,
    log:
        f"{RESULTS}/logs/alsals/{{task}}/{{arm}}_budget.log",
    benchmark:
        f"{RESULTS}/benchmarks/alsals/{{task}}/{{arm}}_budget.tsv"
    wildcard_constraints:
        task="[a-z0-9_]+",
        arm="[a-z0-9_]+",
    shell:
        "python -m optrepro.planners.alsals budget --experiment {wildcards.task} --units-of {params.units_of}"
        " --lr {input.lr} --output {output} {input.runs} > {log} 2>&1"


# The section shows the sweeps' winners and the budgets.
PAPER_REPORT_INPUTS["alsals"] = sorted(ALSALS_LR) + sorted(ALSALS_BUDGET)
