"""Schema validation with messages that name the bad key or value and list the valid choices."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from optrepro.registry import unknown

# The schemas live beside the files they describe (paper/claims.schema.json, paper/ambiguity/schema.json);
# the report always runs from a checkout of the repository.
PAPER_DIR = Path(__file__).resolve().parents[3] / "paper"


class InputError(ValueError):
    """A report input (claims, published numbers, ambiguity register) that does not follow its format."""


def load_yaml(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None


def load_schema(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"schema {path} not found (the report runs from a checkout of the repository)")
    return json.loads(path.read_text())


def _where(error, instance) -> str:
    """claims[2] (id 'x').quantity.split: a readable JSON path, naming the item's id where it has one."""
    parts, node = [], instance
    for key in error.absolute_path:
        if isinstance(key, int):
            label = f"[{key}]"
            try:
                node = node[key]
                if isinstance(node, dict) and "id" in node:
                    label += f" (id {node['id']!r})"
            except (IndexError, KeyError, TypeError):
                pass
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(key))
            try:
                node = node[key]
            except (KeyError, TypeError):
                pass
    return "".join(parts) or "top level"


def _message(error) -> str:
    if error.validator == "additionalProperties":
        valid = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(valid))
        return f"unknown key {extra[0]!r}. Valid keys: {', '.join(valid)}"
    if error.validator == "enum":
        return str(unknown("value", error.instance, error.validator_value))
    return error.message


def validate(instance: Any, schema: dict[str, Any], source: str) -> None:
    """Raise InputError naming the first problem (by position in the file) and how many there are."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        # the deepest error at the first failing location is the most specific one
        first = max((e for e in errors if list(e.absolute_path)[:1] == list(errors[0].absolute_path)[:1]),
                    key=lambda e: len(e.absolute_path))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(f"{source}: {_where(first, instance)}: {_message(first)}{more}")
