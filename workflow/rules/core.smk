# The core section (pipeline check on digits): its runs come from config/papers/core.yaml via the plan;
# this file only names the section's report inputs and the notebook that makes them.


rule core_report:
    input:
        manifests=manifests("core"),
        claims="paper/claims.yaml",
    output:
        table=f"paper/tables/{SCALE}/core/digits.tex",
        verdicts=f"paper/tables/{SCALE}/core/verdicts.tex",
        figure=f"paper/figures/{SCALE}/core/digits_curves.pdf",
        done=f"paper/tables/{SCALE}/core/done.tex",
    params:
        scale=SCALE,
    log:
        f"paper/build/{SCALE}/logs/core_report.log",
    script:
        "../notebooks/core.py"


REPORT_INPUTS.extend(rules.core_report.output)
