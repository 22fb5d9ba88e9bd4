"""The NOS paper's planner: the particle search (and its controls) as deferred evaluations, one chain per particle,
then the evaluation of the released optimizers and our search's best genomes on EfficientNetV2-S.

config/papers/nos.yaml (schema workflow/schemas/papers/nos.schema.yaml) names the search, its proxies, the
learning-rate protocol, the controls and the evaluation; optrepro.nos.stages turns each search into its
evaluations, optrepro.nos.evaluation the evaluation into tuning runs and re-runs. Nothing here imports torch.
"""
from __future__ import annotations

from typing import Any, Mapping

from optrepro.nos import evaluation, stages
from optrepro.planners import register_planner


@register_planner("nos")
def nos_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    searches = stages.searches(pconfig, scale, global_config)
    entries = [entry for s in searches for entry in stages.evaluations(s)]
    return entries + evaluation.plan(pconfig, scale, global_config, {s.name: s for s in searches})
