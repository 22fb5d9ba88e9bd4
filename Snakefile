# optrepro: one DAG from datasets to the report. `snakemake --cores all` runs the full scale;
# `snakemake --cores all --config scale=smoke` (or `make smoke`) the smoke scale. Rules hold no logic:
# they name files and call `optrepro ...` or a notebook; everything else lives in src/optrepro.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/runs.smk"


# One include per enabled paper: each registers its targets and its report inputs.
for _paper in config["papers"]:

    include: f"workflow/rules/{_paper}.smk"


include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        REPORT_PDF,
