# CaAdam's own stage: the learning-rate sweep's winners (optrepro.caadam.tuning). The sweep (stage tune) and the
# winners' re-runs (stage tuned, deferred specs resolved from the files written here) are ordinary batches of the
# plan; one job per swept cell reads that cell's problem's tune manifests and writes one selection file per arm.
from optrepro.caadam import design as caadam_design
from optrepro.workflow import paper_config

CAADAM = caadam_design.design({**paper_config(Path("config"), "caadam", SCALE), "paper": "caadam"}, SCALE, config)
CAADAM_SELECTIONS = [caadam_design.selection_path(CAADAM, c.name, a)
                     for c in CAADAM.swept_cells() for a in CAADAM.tuned_arms(c)]


def caadam_tune_manifests(wc):
    problem = CAADAM.cell(wc.cell).problem
    return [m for m in manifests("caadam", "tune") if f"/caadam/{problem}/" in m]


rule caadam_select:
    input:
        caadam_tune_manifests,
    output:
        [caadam_design.selection_path(CAADAM, "{cell}", a) for a in CAADAM.sweep_arms],
    log:
        f"{RESULTS}/logs/caadam/select-{{cell}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/caadam/select-{{cell}}.tsv"
    wildcard_constraints:
        cell="|".join(c.name for c in CAADAM.swept_cells()) or "no-cell",
    shell:
        "python -m optrepro.caadam.tuning --scale {SCALE} --cell {wildcards.cell} {input} > {log} 2>&1"


PAPER_REPORT_INPUTS["caadam"] = CAADAM_SELECTIONS
