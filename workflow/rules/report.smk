# The LaTeX report: every paper's generated tables and figures -> paper/build/<scale>/main.pdf.
# Byte-reproducible: SOURCE_DATE_EPOCH + FORCE_SOURCE_DATE fix pdfTeX's dates, \pdftrailerid{} its ID.


rule report_pdf:
    output:
        REPORT_PDF,
    input:
        generated=lambda wc: REPORT_INPUTS,
        tex=["paper/main.tex", "paper/refs.bib"] + [f"paper/sections/{p}.tex" for p in config["papers"]],
    log:
        f"paper/build/{SCALE}/latexmk.log",
    shell:
        "optrepro pdf --scale {SCALE} --output {output} > {log} 2>&1"


rule ambiguity_registers:
    # Every paper's ambiguity register, as the report's appendix.
    input:
        sorted(str(p) for p in Path("paper/ambiguity").glob("*.yaml")),
    output:
        f"paper/tables/{SCALE}/ambiguity.tex",
    shell:
        "optrepro registers --scale {SCALE} --output {output}"


REPORT_INPUTS.append(rules.ambiguity_registers.output[0])
