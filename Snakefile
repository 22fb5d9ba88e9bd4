# optrepro: one DAG from datasets to the report. `snakemake --cores all` runs the full scale;
# `snakemake --cores all --config scale=smoke` (or `make smoke`) the smoke scale. Rules hold no logic:
# they name files and call `optrepro ...` or a notebook; everything else lives in src/optrepro.
# A paper is its own files (README, "Where things go"); only a paper with stages of its own (a search, a
# tuning step, raw results to fetch) has a workflow/rules/<paper>.smk, included here when it exists.
from pathlib import Path

from snakemake.utils import min_version

from optrepro.workflow import read_yaml

min_version("9.0")
read_yaml("config/config.yaml")  # a YAML error names this file and its line (Snakemake's own message does not)


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"  # `snakemake --report report.html`: the figures with their captions, the PDF


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/study.smk"


for _paper in PAPERS:
    if Path(workflow.basedir, "workflow", "rules", f"{_paper}.smk").exists():

        include: f"workflow/rules/{_paper}.smk"


include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        REPORT_PDF,
