"""What every paper's notebook starts from and ends with, so a notebook only says what to compute and plot.

    section = Section.from_snakemake(snakemake)       # in workflow/notebooks/<paper>.py
    runs = section.runs                               # one row per run of this paper in the current plan
    section.write_table("digits.tex", tables.latex_table(...), runs=runs)   # runs: the runs behind it
    figures.curves(runs, "test/accuracy", section.path("curves.pdf"), section.scale)
    section.number("adam-acc", 0.912, "{:.1%}")       # \\ournum{adam-acc} in the section's prose
    section.finish()                                  # verdicts + register + verdicts.json, written last

Everything a paper's section \\input's lives in one directory per paper and scale, `paper/generated/<scale>/<paper>/`
(the generic report rule's only output). `finish` writes the standard files every section shows:

    numbers.tex      the numbers the prose cites (\\ournum{key}): prose never types a result by hand
    compute.tex      what the section's runs cost: runs, CPU/GPU hours, pass units, tuning runs
    verdicts.tex     the paper's registered claims (paper/claims/<paper>.yaml) with their verdicts
    ambiguity.tex    the paper's ambiguity register (paper/ambiguity/<paper>.yaml)
    provenance.json  for each table, the run ids behind it, and the plan they came from
    verdicts.json    the verdicts, machine-readable: the report's scoreboard reads it

verdicts.json is written last, so its presence means the section's outputs are complete.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from optrepro.io import atomic_write_json, atomic_write_text
from optrepro.report import aggregate, tables
from optrepro.report.ambiguity import AMBIGUITY_DIR, load_ambiguity
from optrepro.report.claims import CLAIMS_DIR, ClaimSet, load_claims
from optrepro.report.published import PUBLISHED_DIR, empty_published, find_published, load_published_file
from optrepro.report.tables import DASH
from optrepro.report.verdicts import Verdict, judge_all

GENERATED = "generated"  # paper/generated/<scale>/<paper>/
VERDICTS_JSON = "verdicts.json"
PROVENANCE_JSON = "provenance.json"


def _requests(path: Path | str | None) -> dict[str, Any] | None:
    """The plan's {run key: tags} of a paper; a paper that asked for no run has no file: {}."""
    if path is None:
        return None
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def generated_dir(paper: str, scale: str, paper_dir: Path = Path("paper")) -> Path:
    return Path(paper_dir) / GENERATED / scale / paper


@dataclass
class Section:
    paper: str
    scale: str
    out_dir: Path
    runs: pd.DataFrame
    claims: ClaimSet
    published: pd.DataFrame
    ambiguity: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    plan: str = ""
    numbers: dict[str, str] = field(default_factory=dict)
    table_runs: dict[str, list[str]] = field(default_factory=dict)
    # register entry id -> the effect of its ablation, in words (filled by the notebook from its results)
    ambiguity_effects: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, paper: str, scale: str, manifests: Iterable[str | Path], out_dir: Path | str,
             paper_dir: Path | None = None, title: str = "", plan: str = "",
             requests: Path | str | None = None) -> "Section":
        """The paper's runs (from the plan's manifests; `requests`: the plan's papers/<paper>.json, which keeps
        only this paper's runs, with its own tags, when batches are shared), claims, published rows and register."""
        claims_dir = Path(paper_dir) / "claims" if paper_dir else CLAIMS_DIR
        published_dir = Path(paper_dir) / "published" if paper_dir else PUBLISHED_DIR
        ambiguity_dir = Path(paper_dir) / "ambiguity" if paper_dir else AMBIGUITY_DIR
        claims_path = claims_dir / f"{paper}.yaml"
        published_path = published_dir / f"{paper}.csv"
        ambiguity_path = ambiguity_dir / f"{paper}.yaml"
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            paper=paper, scale=scale, out_dir=out_dir, title=title, plan=plan,
            runs=aggregate.own_runs(aggregate.collect_runs(list(manifests)), paper, _requests(requests)),
            claims=load_claims(claims_path) if claims_path.exists() else ClaimSet(families={}, claims=()),
            published=load_published_file(published_path) if published_path.exists() else empty_published(),
            ambiguity=load_ambiguity(ambiguity_path) if ambiguity_path.exists() else [])

    @classmethod
    def from_snakemake(cls, smk) -> "Section":
        """Inside a notebook run by the generic `paper_report` rule (its `snakemake` object)."""
        return cls.load(smk.wildcards.paper, smk.params.scale, smk.input.manifests, smk.output[0],
                        title=smk.params.title, plan=smk.params.plan, requests=smk.params.requests)

    # --- files of the section ---------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A file of this section's generated directory (`\\gentable{name}` / `\\genfigure{name}` in the .tex)."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"{name!r}: a section's generated files sit directly in {self.out_dir}")
        return self.out_dir / name

    def write_table(self, name: str, text: str, runs: pd.DataFrame | None = None) -> Path:
        """Write a table; `runs` (the frame its numbers come from) goes into provenance.json."""
        path = self.path(name)
        atomic_write_text(path, text)
        if runs is not None:
            self.table_runs[name] = sorted(runs["run_id"]) if "run_id" in runs.columns else []
        return path

    def number(self, key: str, value: float, fmt: str = "{:.3g}") -> str:
        """A number the section's prose prints with \\ournum{key}; returns its text."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", key):
            raise ValueError(f"number key {key!r}: use lower-case letters, digits and '-'")
        text = DASH if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)
        self.numbers[key] = text
        return text

    # --- verdicts -----------------------------------------------------------------------------------------
    def judge(self) -> list[Verdict]:
        """Every registered claim of this paper, with its families' corrections (families are per paper)."""
        return judge_all(self.claims, self.runs, self.published, self.scale)

    def finish(self, verdicts: list[Verdict] | None = None) -> list[Verdict]:
        """Write the numbers, the compute, the verdict table, the ambiguity register, the provenance and, last,
        verdicts.json. Returns the verdicts."""
        verdicts = self.judge() if verdicts is None else verdicts
        self.write_table("numbers.tex", "".join(
            f"\\OptDefNum{{{self.paper}}}{{{key}}}{{{tables.latex_escape(text)}}}%\n"
            for key, text in sorted(self.numbers.items())) or "% no numbers\n")
        self.write_table("compute.tex", compute_sentence(self.runs, self.scale) + "\n")
        if verdicts:
            text = tables.verdict_table(verdicts, self.claims, self.scale,
                                        caption=f"{self.title or self.paper}: registered claims and verdicts.",
                                        label=f"tab:{self.paper}-verdicts")
        else:
            text = "\\emph{No registered claim: nothing is judged in this section.}\n"
        self.write_table("verdicts.tex", text)
        if self.ambiguity:
            register = tables.ambiguity_table(self.ambiguity, self.scale,
                                              caption=f"Ambiguity register: {self.paper}.",
                                              label=f"tab:{self.paper}-ambiguity", effects=self.ambiguity_effects)
        else:
            register = "\\emph{No ambiguity recorded for this paper.}\n"
        self.write_table("ambiguity.tex", register)
        atomic_write_json(self.path(PROVENANCE_JSON), {"paper": self.paper, "scale": self.scale, "plan": self.plan,
                                                       "tables": self.table_runs})
        atomic_write_json(self.path(VERDICTS_JSON), verdicts_document(self, verdicts))
        return verdicts


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.1f} s"


def compute_sentence(runs: pd.DataFrame, scale: str) -> str:
    """The section's compute, from its runs: how many (by status), CPU- and GPU-hours, pass units, tuning runs.
    Time is left out at smoke scale: there it measures the machine's load, not the method, and would make two
    builds of the same code differ (the smoke PDF is rebuilt bit for bit after a killed run: tests/test_faults.py)."""
    if runs.empty:
        return f"No run at {scale} scale."
    runs = runs.drop_duplicates("run_id")  # a run the paper labels twice was trained once
    hours = {}
    for device, wall in zip(runs.get("device", pd.Series(["cpu"] * len(runs))), runs.get("wall_time_s", [])):
        kind = "GPU" if device == "cuda" else "CPU"
        hours[kind] = hours.get(kind, 0.0) + (float(wall) if pd.notna(wall) else 0.0) / 3600
    statuses = runs["status"].value_counts().to_dict()
    units = pd.to_numeric(runs.get("cost_units", pd.Series(dtype=float)), errors="coerce").sum()
    tuning = int((runs.get("tags.stage", pd.Series(dtype=object)) == "tune").sum())
    time = ("time not reported at smoke scale" if scale == "smoke"
            else ", ".join(f"{_duration(h)} of {kind} time" for kind, h in sorted(hours.items())))
    parts = [f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})", time,
             f"{units:,.0f} pass units (forward+backward = 1, forward only = 1/3)",
             f"{tuning} tuning runs"]
    return tables.latex_escape(f"Compute at {scale} scale: " + "; ".join(parts) + ".")


def verdicts_document(section: Section, verdicts: list[Verdict]) -> dict[str, Any]:
    """verdicts.json: one entry per claim, with what the scoreboard prints (published side with tier and
    source, our effect and interval, the verdict in words)."""
    by_id = {c.id: c for c in section.claims}
    entries = []
    for v in verdicts:
        claim = by_id[v.claim_id]
        cell = claim.up_to_cell or (claim.cells[0] if len(claim.cells) == 1 else f"{len(claim.cells)} cells")
        published = []
        for role, arm in (("method", claim.published_method), ("baseline", claim.published_baseline)):
            for c in claim.tested_cells:
                row = find_published(section.published, claim, c, arm) if arm else None
                if row is not None:
                    published.append({"role": role, "cell": c, "arm": arm, "value": float(row["value"]),
                                      "n": None if pd.isna(row["n"]) else int(row["n"]), "tier": row["tier"],
                                      "source": row["source"]})
        entries.append({
            "claim_id": v.claim_id, "statement": claim.statement, "short": claim.summary, "cell": cell, "cells": list(claim.tested_cells),
            "metric": claim.quantity.column, "points": claim.quantity.points, "direction": claim.direction,
            "published": published,
            "estimate": _finite(v.estimate), "interval": [_finite(x) for x in v.interval] if v.interval else None,
            "n": v.n, "relative_pct": _finite(v.relative_pct), "g": _finite(v.g),
            "mean_method": _finite(v.mean_method), "mean_baseline": _finite(v.mean_baseline),
            "verdict": v.verdict, "label": v.label, "reason": v.reason,
        })
    return {"paper": section.paper, "title": section.title, "scale": section.scale,
            "runs": int(len(section.runs)), "claims": entries}


def _finite(x: float | None) -> float | None:
    """JSON has no NaN or inf: a statistic that could not be computed is null."""
    return float(x) if x is not None and math.isfinite(x) else None


def load_verdicts(path: Path | str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
