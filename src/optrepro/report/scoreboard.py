"""The report's first page and appendices that span every paper, built by `optrepro pdf` from the sections'
outputs (never from results directly):

- the scoreboard: every registered claim of every enabled paper, with the published side (value, tier, source
  key), ours, the effect with its interval and the verdict, marked and in words; totals per verdict under it.
  It reads each paper's verdicts.json; a paper that has claims but no section output at this scale shows them
  as not run;
- the sources of published numbers: every source key with its full source (paper/published/<paper>.csv);
- the runs behind each table: per table, its run count and the plan digest; the run ids themselves go to a CSV
  next to the PDF (build/<scale>/runs.csv).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from optrepro.report.claims import load_claims
from optrepro.report.published import load_published_file, source_keys
from optrepro.report.section import PROVENANCE_JSON, VERDICTS_JSON, generated_dir
from optrepro.report.tables import DASH, breakable, latex_escape, latex_table, verdict_cell
from optrepro.report.verdicts import NOT_RUN, VERDICTS


def _number(x: float | None, points: bool, signed: bool = False) -> str:
    if x is None:
        return DASH
    value, digits = (100 * x, 2) if points else (x, 4)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _published_text(entry: dict[str, Any], keys: dict, paper: str) -> str:
    rows = {p["role"]: p for p in entry["published"] if p["cell"] == entry["cells"][0]}
    if not rows:
        return DASH
    points = entry["points"]
    parts = [f"{_number(rows[r]['value'], points)}" for r in ("method", "baseline") if r in rows]
    any_row = rows.get("method") or rows.get("baseline")
    vs = " vs ".join(parts)
    return f"{vs} ({any_row['tier']}, {keys.get((paper, any_row['source']), '?')})"


def _ours_text(entry: dict[str, Any], scale: str) -> tuple[str, str]:
    if scale == "smoke" or entry.get("estimate") is None:
        return DASH, DASH
    points = entry["points"]
    ours = (f"{_number(entry.get('mean_method'), points)} vs {_number(entry.get('mean_baseline'), points)} "
            f"(n={entry['n']})")
    unit = " pp" if points else ""
    effect = f"{_number(entry['estimate'], points, True)}{unit}"
    if entry.get("interval"):
        low, high = entry["interval"]
        effect += f" [{_number(low, points, True)}, {_number(high, points, True)}]"
    return ours, effect


def scoreboard_rows(papers: list[str], scale: str, paper_dir: Path) -> list[dict[str, Any]]:
    """One row per registered claim of the enabled papers, in paper order."""
    rows = []
    for paper in papers:
        published_path = paper_dir / "published" / f"{paper}.csv"
        keys = source_keys(load_published_file(published_path)) if published_path.exists() else {}
        verdicts_path = generated_dir(paper, scale, paper_dir) / VERDICTS_JSON
        if verdicts_path.exists():
            entries = json.loads(verdicts_path.read_text())["claims"]
        else:
            claims_path = paper_dir / "claims" / f"{paper}.yaml"
            claims = load_claims(claims_path) if claims_path.exists() else []
            entries = [{"claim_id": c.id, "short": c.summary, "cell": c.up_to_cell or ", ".join(c.cells),
                        "cells": list(c.tested_cells), "points": c.quantity.points, "published": [],
                        "estimate": None, "verdict": NOT_RUN, "label": NOT_RUN} for c in claims]
        for e in entries:
            ours, effect = _ours_text(e, scale)
            rows.append({"paper": paper, "claim": e["short"], "cell": e["cell"],
                         "published (tier, source)": _published_text(e, keys, paper), "ours": ours,
                         "effect [interval]": effect, "verdict": e["label"], "state": e["verdict"]})
    return rows


def scoreboard_tex(papers: list[str], scale: str, paper_dir: Path = Path("paper")) -> str:
    rows = scoreboard_rows(papers, scale, Path(paper_dir))
    if not rows:
        return "\\section*{Scoreboard}\n\\emph{No registered claim in the enabled papers.}\n"
    frame = pd.DataFrame(rows)
    states = frame.pop("state")
    papers_of_rows = list(frame["paper"])
    frame["paper"] = [f"\\hyperref[sec:{p}]{{{breakable(p)}}}" for p in papers_of_rows]  # a long name breaks after its _
    frame["claim"] = [f"\\hyperref[sec:{p}]{{{latex_escape(c)}}}" for p, c in zip(papers_of_rows, frame["claim"])]
    frame["verdict"] = [verdict_cell(v) for v in frame["verdict"]]
    caption = ("Scoreboard: every registered claim of the enabled papers and its verdict. Published: the "
               "method's value vs the baseline's, with its tier and source key (Appendix \"Sources of published "
               "numbers\"); ours: our means with the number of seeds (n); effect: method minus baseline with its "
               "interval, adjusted for multiplicity (pp: percentage points). Each claim links to its section.")
    table = latex_table(frame, caption=caption, label="tab:scoreboard", scale=scale, font_size="footnotesize",
                        raw=["paper", "claim", "verdict"], wrap=["claim", "published (tier, source)", "verdict"])
    counts = states.value_counts().to_dict()
    totals = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    note = (" At smoke scale every verdict is \\emph{not assessed (smoke)} by rule, save claims that are not "
            "testable by design." if scale == "smoke" else "")
    return (f"\\section*{{Scoreboard}}\n{table}\\noindent\\textbf{{Totals:}} {latex_escape(totals)}.{note}\n"
            "\\clearpage\n")


def sources_tex(papers: list[str], scale: str, paper_dir: Path = Path("paper")) -> str:
    """Every source key of the enabled papers' published numbers, with the full source and tier."""
    rows = []
    for paper in papers:
        path = Path(paper_dir) / "published" / f"{paper}.csv"
        if not path.exists():
            continue
        published = load_published_file(path)
        for (p, source), key in source_keys(published).items():
            tiers = sorted(set(published.loc[published["source"] == source, "tier"]))
            rows.append({"key": key, "source": source, "tier": ", ".join(tiers),
                         "rows": int((published["source"] == source).sum())})
    if not rows:
        return "\\emph{No published number in the enabled papers.}\n"
    return latex_table(pd.DataFrame(rows), caption="Sources of published numbers: the key printed beside each "
                       "published number, where exactly it was read, its tier and how many values it gives.",
                       label="tab:sources", scale=scale, font_size="footnotesize", wrap=["source"])


def runs_tables(papers: list[str], scale: str, paper_dir: Path = Path("paper")) -> tuple[str, str]:
    """(LaTeX of the per-table run counts and plan digests, CSV of paper,table,run_id)."""
    rows, out = [], io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["paper", "table", "run_id"])
    for paper in papers:
        path = generated_dir(paper, scale, Path(paper_dir)) / PROVENANCE_JSON
        if not path.exists():
            continue
        provenance = json.loads(path.read_text())
        for table, run_ids in sorted(provenance["tables"].items()):
            rows.append({"paper": paper, "table": table, "runs": len(run_ids), "plan": provenance["plan"] or DASH,
                         "first run ids": ", ".join(r[:8] for r in run_ids[:3]) + (", ..." if len(run_ids) > 3 else "")})
            writer.writerows([paper, table, r] for r in run_ids)
    if not rows:
        return "\\emph{No table of ours at this scale.}\n", out.getvalue()
    tex = latex_table(pd.DataFrame(rows), caption="Runs behind each table: how many, the digest of the plan's "
                      "batches they came from, and the first run ids (8 hex digits). Every run id is in runs.csv "
                      "next to this PDF (paper/build/<scale>/runs.csv).", label="tab:runs", scale=scale,
                      font_size="footnotesize", wrap=["first run ids"])
    return tex, out.getvalue()
