"""The NOS paper's planner: the particle search (and its controls) as deferred evaluations, one chain per particle.

config/papers/nos.yaml (schema workflow/schemas/papers/nos.schema.yaml) names the search, its proxies, the
learning-rate protocol and the controls; optrepro.nos.stages turns each search into its evaluations. Nothing
here imports torch.
"""
from __future__ import annotations

from typing import Any, Mapping

from optrepro.nos import stages
from optrepro.planners import register_planner


@register_planner("nos")
def nos_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    return [entry for s in stages.searches(pconfig, scale, global_config) for entry in stages.evaluations(s)]
