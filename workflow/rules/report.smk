# The LaTeX report: one generic job per typeset paper runs workflow/notebooks/<paper>.py into
# paper/generated/<scale>/<paper>/, then paper/main.tex -> paper/build/<scale>/main.pdf (`optrepro pdf` also
# writes the list of sections and the appendix of ambiguity registers not shown in a section).
# Byte-reproducible: SOURCE_DATE_EPOCH + FORCE_SOURCE_DATE fix pdfTeX's dates, \pdftrailerid{} its ID.


from optrepro.paper import figure_captions


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
        # `snakemake --report`: every figure of the section, with the caption the section gives it
        report(directory(f"paper/generated/{SCALE}/{{paper}}"), patterns=["{figure}.pdf"],
               caption="../report/figure.rst", category="{paper}"),
    params:
        scale=SCALE,
        figure_captions=lambda wc: figure_captions(Path("paper", "sections", f"{wc.paper}.tex")),
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
        report(REPORT_PDF, caption="../report/pdf.rst", category="Report"),
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
