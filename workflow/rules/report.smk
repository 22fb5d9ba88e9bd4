# The LaTeX report: one generic job per typeset paper runs workflow/notebooks/<paper>.py into
# paper/generated/<scale>/<paper>/, then paper/main.tex -> paper/build/<scale>/main.pdf (`optrepro pdf` also
# writes the list of sections and the appendix of ambiguity registers not shown in a section).
# Byte-reproducible: SOURCE_DATE_EPOCH + FORCE_SOURCE_DATE fix pdfTeX's dates, \pdftrailerid{} its ID.


def _optional(path):
    return [path] if Path(path).exists() else []


def _paper_report_inputs(wildcards):
    p = wildcards.paper
    return {
        "manifests": manifests(p),
        "paper_files": _optional(f"paper/claims/{p}.yaml") + _optional(f"paper/published/{p}.csv")
        + _optional(f"paper/ambiguity/{p}.yaml"),
        "extra": PAPER_REPORT_INPUTS.get(p, []),
    }


rule paper_report:
    localrule: True
    input:
        unpack(_paper_report_inputs),
    output:
        directory(f"paper/generated/{SCALE}/{{paper}}"),
    params:
        scale=SCALE,
        title=lambda wc: paper_title(Path("config"), wc.paper),
        plan=lambda wc: PLAN.digest(wc.paper),
        requests=lambda wc: f"{PLAN_CURRENT}/papers/{wc.paper}.json",
    wildcard_constraints:
        paper="|".join(REPORTED_PAPERS) or "no-paper",
    log:
        f"paper/build/{SCALE}/logs/{{paper}}_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{paper}}/report.tsv"
    script:
        "../notebooks/{wildcards.paper}.py"


rule report_pdf:
    localrule: True
    output:
        REPORT_PDF,
    input:
        generated=[generated(p) for p in REPORTED_PAPERS],
        registers=sorted(str(p) for p in Path("paper/ambiguity").glob("*.yaml")),
        tex=["paper/main.tex", "paper/refs.bib"] + [f"paper/sections/{p}.tex" for p in REPORTED_PAPERS],
    params:
        papers=",".join(PAPERS),
    log:
        f"paper/build/{SCALE}/latexmk.log",
    shell:
        "optrepro pdf --scale {SCALE} --papers '{params.papers}' --output {output} > {log} 2>&1"
