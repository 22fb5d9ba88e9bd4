"""A small torch-free registry: one name -> one entry whose heavy target is imported lazily.

Planning (which runs every SLURM job re-does) must not import torch, transformers or timm, so
entries carry their metadata as plain data and name their implementation as "module:attr".
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


_CATALOGS_IMPORTED: set[str] = set()


def import_catalogs(package: str) -> None:
    """Import every `catalog_*` module of `package` (each only calls its registry's `register`): a new family
    module registers by existing, and none can be left out of a list by mistake. Once per process: every
    registry lookup calls this, and listing the package's files each time cost 0.1 ms per lookup."""
    if package in _CATALOGS_IMPORTED:
        return
    root = importlib.import_module(package)
    for module in sorted(m.name for m in pkgutil.iter_modules(root.__path__) if m.name.startswith("catalog_")):
        importlib.import_module(f"{package}.{module}")
    _CATALOGS_IMPORTED.add(package)


def unknown(kind: str, name: object, choices) -> UnknownNameError:
    """The one error for a name or value outside its choices: names it, suggests the closest, lists them all
    (sorted; choices may be strings or numbers)."""
    try:
        choices = sorted(choices)
    except TypeError:  # mixed types
        choices = sorted(choices, key=str)
    texts = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), texts, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    sep = ": " if kind.endswith("'") else " "  # "... for optimizer 'adam': 'lrr'", not "'adam' 'lrr'"
    return UnknownNameError(f"unknown {kind}{sep}{name!r}.{hint} Valid choices: {', '.join(texts)}")


def check_keys(kind: str, given, valid) -> None:
    """Refuse keys outside `valid`, naming the bad key and listing the valid ones."""
    bad = sorted(set(given) - set(valid))
    if bad:
        raise unknown(kind, bad[0], valid)


def import_target(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
