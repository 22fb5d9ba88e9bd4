"""Workloads: data + model + loss + metrics, at full and smoke scale. Imports without torch."""
from optrepro.problems.registry import ProblemInfo, available, get, info, register

__all__ = ["ProblemInfo", "available", "get", "info", "register"]
