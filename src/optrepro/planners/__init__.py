"""Planners of papers whose runs are not a plain grid: `optrepro.planners.<name>` registers planner <name>."""
from optrepro.workflow import register_planner

__all__ = ["register_planner"]
