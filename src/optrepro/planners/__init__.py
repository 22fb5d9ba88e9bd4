"""Planners: a paper configuration -> run specs (and deferred specs). One module per planner.

A paper config names its planner (`planner: grid`, the default). The planner called `<name>` is the function that
the module `optrepro.planners.<name>` registers with `@register_planner("<name>")`; `get_planner` imports that
module on first use, so adding a planner is adding one file here (plus its config schema,
`workflow/schemas/papers/<name>.schema.yaml`) and editing nothing shared. The contract is in docs/design.md
("Planners"):

    planner(pconfig, scale, global_config) -> list[spec dict | optrepro.plan.DeferredSpec]

`pconfig` is the paper's config at `scale` (its `smoke:` block merged in), with `pconfig["paper"]` set; specs come
from `optrepro.plan.make_spec`. Nothing here imports torch: every Snakemake job re-parses the plan.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any, Callable, Mapping

from optrepro.registry import Registry, unknown

Planner = Callable[[Mapping[str, Any], str, Mapping[str, Any]], list]
PLANNERS: Registry[Planner] = Registry("planner")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_planner(name: str):
    """Decorator: register `fn` as the planner `name` (the module must be `optrepro.planners.<name>`)."""
    def wrap(fn: Planner) -> Planner:
        PLANNERS.add(name, fn)
        return fn

    return wrap


def available() -> list[str]:
    """Every planner module in this package (registered or not yet imported)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_planner(name: str) -> Planner:
    if name not in PLANNERS:
        if not isinstance(name, str) or not _NAME.match(name) or name not in available():
            raise unknown("planner", name, available())
        importlib.import_module(f"{__name__}.{name}")
    return PLANNERS.get(name)
