"""The report core: docs/replication.md implemented once for every paper section.

- aggregate: batch manifests -> one tidy row per run (`collect_runs`)
- claims / published / ambiguity: the registered claims, published numbers and ambiguity registers, validated
- stats / verdicts: the statistics and the six verdicts (`judge`, `judge_all`)
- tables / figures: booktabs LaTeX and reproducible PDF figures, stamped with their scale

Import the submodules directly (figures pulls in matplotlib and seaborn; nothing here imports torch).
"""
