"""The CaAdam study (Genet & Inzirillo 2024, arXiv 2410.24216): what config/papers/caadam.yaml plans, how the
tuning winners are chosen, and what the section computes from the runs. Nothing here imports torch except
`analysis.multiplier_table`, which builds the models.

- design.py: the cells, arms, protocols, seeds and the learning-rate sweep -> run specs (the `caadam` planner);
  the kernel counts of each cell's model, for the Adam controls at the learning rate reference mode applies.
- tuning.py: the sweep's winner per cell and arm (`python -m optrepro.caadam.tuning`, run by
  workflow/rules/caadam.smk), the file the winner's re-runs are resolved from.
- analysis.py: the runs tagged by the plan (a run two arms share appears in both), the notebooks' statistics,
  convergence three ways, the controls and the sweep, the multiplier table.
"""
