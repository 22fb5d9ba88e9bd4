# Configuration, validation and the plan. Everything here runs at parse time, in every job: keep it cheap
# (the plan is cached by a hash of config and code; nothing here imports torch).
from pathlib import Path

from optrepro.workflow import enabled_papers, load_plan, paper_title, validate_config

validate_config(config, Path("config"), Path(workflow.basedir) / "workflow" / "schemas")

SCALE = config["scale"]
RESULTS = f"{config['results_dir']}/{SCALE}"
DATA = config["data_dir"]
PAPERS = enabled_papers(config, Path("config"))  # `papers: all` = every config/papers/*.yaml, in their order
PLAN = load_plan(config, Path("config"))
PLAN_CURRENT = f"{RESULTS}/plans/current"  # a stable path: a re-plan changes no job's command line
THREADS = config["threads"][SCALE]
REPORT_PDF = f"paper/build/{SCALE}/main.pdf"
# A paper's section is typeset when it has a notebook and a section file; otherwise the PDF lists it as not run.
REPORTED_PAPERS = [p for p in PAPERS if Path(workflow.basedir, "workflow", "notebooks", f"{p}.py").exists()
                   and Path("paper", "sections", f"{p}.tex").exists()]
# Inputs a paper's own stages add to its report job (a search's winners, fetched raw results): its
# workflow/rules/<paper>.smk sets PAPER_REPORT_INPUTS["<paper>"] = [...].
PAPER_REPORT_INPUTS = {}


def manifests(paper, stage=None):
    """The batch manifests of `paper` in the current plan (aggregation reads these, never a glob)."""
    return PLAN.manifests(paper, stage)


def batch_info(wildcards):
    return PLAN.batch_for_manifest(f"{RESULTS}/batches/{wildcards.paper}/{wildcards.problem}/{wildcards.batch}.json")


def generated(paper):
    """The directory of one paper's generated tables, figures and verdicts.json (its report job's output)."""
    return f"paper/generated/{SCALE}/{paper}"
