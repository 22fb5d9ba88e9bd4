# Configuration, validation and the plan. Everything here runs at parse time, in every job: keep it cheap
# (the plan is cached by a hash of config and code; nothing here imports torch).
from pathlib import Path

from optrepro.workflow import load_plan, validate_config

validate_config(config, Path("config"), Path(workflow.basedir) / "workflow" / "schemas")

SCALE = config["scale"]
RESULTS = f"{config['results_dir']}/{SCALE}"
DATA = config["data_dir"]
PLAN = load_plan(config, Path("config"))
PLAN_CURRENT = f"{RESULTS}/plans/current"  # a stable path: a re-plan changes no job's command line
THREADS = config["threads"][SCALE]
REPORT_PDF = f"paper/build/{SCALE}/main.pdf"
REPORT_INPUTS = []  # per-paper .smk files append the tables, figures and numbers their section \input's


def manifests(paper, stage=None):
    """The batch manifests of `paper` in the current plan (aggregation reads these, never a glob)."""
    return PLAN.manifests(paper, stage)


def batch_info(wildcards):
    return PLAN.batch_for_manifest(f"{RESULTS}/batches/{wildcards.paper}/{wildcards.problem}/{wildcards.batch}.json")
