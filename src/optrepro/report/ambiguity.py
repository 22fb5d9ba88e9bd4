"""The ambiguity register (paper/ambiguity/<paper>.yaml): each point where a paper or its code is unclear.

A file is a YAML list of {id, point, reading, alternative, source, ablation} (paper/ambiguity/schema.json):
`reading` is what the project implements by default, `alternative` the other reading (an option), `ablation`
the experiment that runs the alternative, or null when none is run. Render it with `tables.ambiguity_table`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optrepro.report.validation import PAPER_DIR, InputError, load_schema, load_yaml, validate

AMBIGUITY_DIR = PAPER_DIR / "ambiguity"
AMBIGUITY_SCHEMA = AMBIGUITY_DIR / "schema.json"


def parse_ambiguity(data: Any, source: str, schema_path: Path = AMBIGUITY_SCHEMA) -> list[dict[str, Any]]:
    if data is None:
        data = []  # an empty file is an empty register
    validate(data, load_schema(schema_path), source)
    seen: dict[str, int] = {}
    for i, entry in enumerate(data):
        if entry["id"] in seen:
            raise InputError(f"{source}: [{i}]: duplicate id {entry['id']!r} (first at [{seen[entry['id']]}])")
        seen[entry["id"]] = i
    return [dict(entry) for entry in data]


def load_ambiguity(path: Path | str, schema_path: Path = AMBIGUITY_SCHEMA) -> list[dict[str, Any]]:
    """A validated register; `path` may also be a paper name (paper/ambiguity/<paper>.yaml)."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        path = AMBIGUITY_DIR / f"{path}.yaml"
    return parse_ambiguity(load_yaml(path), str(path), schema_path)
