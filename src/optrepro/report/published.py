"""Published numbers (paper/published/<paper>.csv): the columns, their validation, and row look-up.

One row per published value, with the exact statistic, its source and its tier (docs/replication.md). The columns are
documented in paper/published/README.md; the loader refuses a missing or unknown column, a bad type, a value
outside its vocabulary and a duplicate key, naming the file, the line and the column.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from optrepro.report.validation import PAPER_DIR, InputError

PUBLISHED_DIR = PAPER_DIR / "published"

COLUMNS = ("paper", "claim_id", "cell", "arm", "metric", "split", "statistic", "aggregation", "value", "sd", "n",
           "source", "tier", "note")
SPLITS = ("train", "valid", "test")
STATISTICS = ("final", "best", "max", "min", "smoothed", "at_best_valid")
AGGREGATIONS = ("mean", "median", "single")
TIERS = ("paper", "authors-output", "follow-up", "summary")
# A verdict may rest on these tiers; `summary` rows are printed but never judged.
VERIFIED_TIERS = ("paper", "authors-output", "follow-up")
KEY = ("paper", "cell", "arm", "metric", "split", "statistic")
REQUIRED_TEXT = ("paper", "cell", "arm", "metric", "source")


def _number(text: str, where: str, column: str, *, integer: bool = False, required: bool = False) -> float | None:
    text = text.strip()
    if text == "":
        if required:
            raise InputError(f"{where}: column {column!r} is empty; it needs a number")
        return None
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise InputError(f"{where}: column {column!r}: {text!r} is not {kind}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: column {column!r}: {text!r} is not finite")
    return value


def _choice(text: str, where: str, column: str, choices: Iterable[str]) -> str:
    if text not in choices:
        raise InputError(f"{where}: column {column!r}: {text!r} is not a valid choice. "
                         f"Valid choices: {', '.join(choices)}")
    return text


def load_published_file(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            raise InputError(f"{path}: unknown column {unknown[0]!r}. Valid columns: {', '.join(COLUMNS)}")
        if missing:
            raise InputError(f"{path}: missing column {missing[0]!r}. Required columns: {', '.join(COLUMNS)}")
        rows, keys = [], {}
        for line, raw in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if None in raw or any(v is None for v in raw.values()):
                raise InputError(f"{where}: expected {len(COLUMNS)} fields")
            row = {c: raw[c].strip() for c in COLUMNS}
            for column in REQUIRED_TEXT:
                if not row[column]:
                    raise InputError(f"{where}: column {column!r} is empty")
            if row["paper"] != path.stem:
                raise InputError(f"{where}: column 'paper': {row['paper']!r} differs from the file name "
                                 f"{path.stem!r}")
            _choice(row["split"], where, "split", SPLITS)
            _choice(row["statistic"], where, "statistic", STATISTICS)
            _choice(row["aggregation"], where, "aggregation", AGGREGATIONS)
            _choice(row["tier"], where, "tier", TIERS)
            row["value"] = _number(row["value"], where, "value", required=True)
            row["sd"] = _number(row["sd"], where, "sd")
            row["n"] = _number(row["n"], where, "n", integer=True)
            if row["sd"] is not None and row["sd"] < 0:
                raise InputError(f"{where}: column 'sd': {row['sd']} is negative")
            if row["n"] is not None and row["n"] < 1:
                raise InputError(f"{where}: column 'n': {row['n']} must be >= 1")
            if row["aggregation"] == "single" and row["n"] not in (None, 1):
                raise InputError(f"{where}: aggregation 'single' with n = {row['n']}; a single value has n = 1")
            key = tuple(row[c] for c in KEY)
            if key in keys:
                raise InputError(f"{where}: duplicate of line {keys[key]} (same {', '.join(KEY)})")
            keys[key] = line
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["n"] = frame["n"].astype("Int64")
    frame["sd"] = frame["sd"].astype(float)
    frame["value"] = frame["value"].astype(float)
    return frame


def load_published(paths: Iterable[Path] | None = None) -> pd.DataFrame:
    """All published rows of the given files (default: every paper/published/*.csv), validated."""
    paths = sorted(PUBLISHED_DIR.glob("*.csv")) if paths is None else [Path(p) for p in paths]
    frames = [load_published_file(p) for p in paths]
    if not frames:
        return empty_published()
    return pd.concat(frames, ignore_index=True)


def empty_published() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    frame["value"] = frame["value"].astype(float)
    frame["sd"] = frame["sd"].astype(float)
    frame["n"] = frame["n"].astype("Int64")
    return frame


def find_published(published: pd.DataFrame, claim, cell: str, arm: str) -> pd.Series | None:
    """The one row for (claim's paper, cell, arm, claim's metric/split/statistic), or None."""
    q = claim.quantity
    hits = published[(published["paper"] == claim.paper) & (published["cell"] == cell)
                     & (published["arm"] == arm) & (published["metric"] == q.metric)
                     & (published["split"] == q.split) & (published["statistic"] == q.value)]
    return None if hits.empty else hits.iloc[0]


def source_keys(published: pd.DataFrame) -> dict[tuple[str, str], str]:
    """A short key per distinct source of each paper, in file order ("caadam-1", "caadam-2", ...). Tables print
    the key beside a published number; the report's appendix lists each key with its full source."""
    keys: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    for paper, source in zip(published["paper"], published["source"]):
        if (paper, source) not in keys:
            counts[paper] = counts.get(paper, 0) + 1
            keys[(paper, source)] = f"{paper}-{counts[paper]}"
    return keys
