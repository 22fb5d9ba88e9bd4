"""The CaAdam planner: cells x arms x two initialization protocols x seeds, the learning-rate sweep, and the
sweep winners' re-runs as deferred specs (optrepro.caadam.design says what each stage is and why).

config/papers/caadam.yaml (schema workflow/schemas/papers/caadam.schema.yaml) names the cells, arms, callbacks,
protocols and the sweep. Nothing here imports torch.
"""
from __future__ import annotations

from typing import Any, Mapping

from optrepro.caadam import design
from optrepro.planners import register_planner


@register_planner("caadam")
def caadam_planner(pconfig: Mapping[str, Any], scale: str, global_config: Mapping[str, Any]) -> list:
    return design.entries(design.design(pconfig, scale, global_config))
