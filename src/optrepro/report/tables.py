"""Booktabs LaTeX tables, every one stamped with the scale that produced its numbers.

pandas' Styler does not escape headers or the index by default (a header like `params_M` breaks pdflatex with
"Missing $ inserted"), so every table goes through `latex_table`, which escapes cells, headers and caption.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from optrepro.io import atomic_write_text
from optrepro.problems.registry import check_scale
from optrepro.report.verdicts import (CONTRADICTED, INCONCLUSIVE, NOT_ASSESSED, NOT_RUN, NOT_TESTABLE, REPLICATED,
                                      Verdict)

DASH = "--"
# the only verdicts a smoke-scale table may show
SMOKE_VERDICTS = (NOT_ASSESSED, NOT_RUN, NOT_TESTABLE)

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  # symbols the registers and published sources use, which pdflatex with T1 fonts cannot typeset as is
                  "±": r"$\pm$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$", "≈": r"$\approx$",
                  "→": r"$\rightarrow$", "−": "-", "–": "--", "—": "---", "…": r"\ldots{}", "√": r"$\surd$",
                  "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "δ": r"$\delta$", "Δ": r"$\Delta$",
                  "ε": r"$\epsilon$", "η": r"$\eta$", "λ": r"$\lambda$", "μ": r"$\mu$", "σ": r"$\sigma$",
                  "θ": r"$\theta$", "²": r"$^2$"}


def latex_escape(text: str) -> str:
    """LaTeX-safe text: the ten special characters and the common math symbols of the registers."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def scale_stamp(scale: str) -> str:
    """The mark every table caption and figure carries: "[smoke scale]" or "[full scale]"."""
    check_scale(scale)
    return f"[{scale} scale]"


# A text column whose longest cell is longer than this wraps (an X column of tabularx); shorter ones stay `l`.
WRAP_CHARS = 18
_BREAK = "\x00"  # marks a place where a long token (a path, an id) may break; becomes \allowbreak{}
_BREAK_AFTER = "/_.@:=,"
_BREAK_BEFORE = "(["


def breakable(text: str) -> str:
    """Escaped text in which long tokens may break after / _ . @ : = , and before ( [ (paths, run ids,
    hyperparameters, calls such as RandomResizedCrop(300))."""
    text = str(text)
    # no break inside a number ("0.001") or a count ("n=10")
    marked = "".join(ch + _BREAK if ch in _BREAK_AFTER and not (ch in ".=" and text[i + 1:i + 2].isdigit())
                     else _BREAK + ch if ch in _BREAK_BEFORE else ch
                     for i, ch in enumerate(text))
    return latex_escape(marked).replace(_BREAK, "\\allowbreak{}")


def int_ranges(values: Iterable[int]) -> str:
    """Integers as sorted runs of consecutive values: [42, 43, 44, 47] -> "42--44, 47" (LaTeX en dash)."""
    out, run = [], []
    for v in sorted(set(int(x) for x in values)):
        if run and v != run[-1] + 1:
            out.append(run)
            run = []
        run.append(v)
    if run:
        out.append(run)
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}--{r[-1]}" for r in out)


def _cell(value, precision: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def latex_table(frame: pd.DataFrame, *, caption: str, label: str, scale: str, column_format: str | None = None,
                precision: int = 3, index: bool = False, font_size: str | None = "small",
                escape: bool = True, wrap: Iterable[str] | None = None, raw: Iterable[str] = (),
                landscape: bool = False) -> str:
    """A booktabs table that fits the text width, every text escaped, its caption ending with the scale stamp.

    Numbers are right-aligned; a text column whose longest cell exceeds WRAP_CHARS (or that `wrap` names) is a
    wrapped, ragged-right X column, and long tokens in it may break after / _ . @ : = ,. The table is an
    xltabular (a longtable with X columns): it breaks across pages and repeats its head there. `landscape=True`
    sets it on landscape pages, for the rare table that cannot fit otherwise. The report's build fails on any
    overfull box (optrepro.paper), so a table that still does not fit is named there.

    At smoke scale a column named "verdict" may only hold the verdicts that say nothing (not assessed (smoke),
    not run, not testable): smoke runs never put a conclusion in print. Cells of the columns in `raw` (all cells
    with escape=False) are LaTeX the caller wrote itself; headers and caption are always escaped."""
    stamp = scale_stamp(scale)
    if scale == "smoke" and "verdict" in frame.columns:
        bad = [v for v in frame["verdict"] if not any(s in str(v) for s in SMOKE_VERDICTS)]
        if bad:
            raise ValueError(f"a smoke-scale table may not print the verdict {bad[0]!r}; valid at smoke scale: "
                             f"{', '.join(SMOKE_VERDICTS)}")
    if index:
        frame = frame.reset_index()
    wrap = set(wrap or ())
    unknown_cols = sorted(wrap - set(frame.columns))
    if unknown_cols:
        from optrepro.registry import unknown

        raise unknown("column to wrap", unknown_cols[0], frame.columns)
    columns = list(frame.columns)
    text = {c: [_cell(v, precision) for v in frame[c]] for c in columns}
    wrapped = [c for c in columns if c in wrap or (not _is_numeric(frame[c])
                                                    and max((len(v) for v in text[c]), default=0) > WRAP_CHARS)]
    if column_format is None:
        column_format = "".join(">{\\raggedright\\arraybackslash}X" if c in wrapped
                                else ("r" if _is_numeric(frame[c]) else "l") for c in columns)

    raw = set(raw)

    def fmt(c: str, v: str) -> str:
        if not escape or c in raw:
            return v
        return breakable(v) if c in wrapped else latex_escape(v)

    header = " & ".join(breakable(c) if c in wrapped else latex_escape(c) for c in columns) + " \\\\"
    # rows of wrapped text get a little air between them, so a reader sees where one row ends
    row_end = " \\\\ \\addlinespace" if wrapped else " \\\\"
    body = "\n".join(" & ".join(fmt(c, text[c][i]) for c in columns) + row_end for i in range(len(frame)))
    n = len(columns)
    # X columns need xltabular (tabularx's widths in a longtable); without them a plain longtable, centred
    if "X" in column_format:
        begin, end = f"\\begin{{xltabular}}{{\\linewidth}}{{{column_format}}}", "\\end{xltabular}"
    else:
        begin, end = f"\\begin{{longtable}}{{{column_format}}}", "\\end{longtable}"
    caption = f"{latex_escape(caption)} {latex_escape(stamp)}"
    lines = [f"% generated by optrepro.report; scale: {scale}",
             "\\begingroup" + (f"\\{font_size}" if font_size else ""),
             begin,
             f"\\caption{{{caption}}}\\label{{{label}}} \\\\",
             "\\toprule", header, "\\midrule", "\\endfirsthead",
             f"\\multicolumn{{{n}}}{{l}}{{\\emph{{(continued)}}}} \\\\", "\\toprule", header, "\\midrule",
             "\\endhead", "\\bottomrule", "\\endlastfoot", body, end, "\\endgroup"]
    out = "\n".join(lines) + "\n"
    if landscape:
        out = f"\\begin{{landscape}}\n{out}\\end{{landscape}}\n"
    return out


def write_table(text: str, path: Path | str) -> Path:
    path = Path(path)
    atomic_write_text(path, text)
    return path


# --- verdict table -------------------------------------------------------------------------------------

def _num(x: float | None, factor: float, signed: bool = False, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{x * factor:+.{digits}f}" if signed else f"{x * factor:.{digits}f}"


def _unit(points: bool) -> str:
    return " pp" if points else ""


def verdict_rows(verdicts: Iterable[Verdict], claims, scale: str) -> pd.DataFrame:
    """Claim, cell, published effect, our effect, standardized/relative effect, interval, verdict.

    Effects are method - baseline (percentage points when the claim's quantity has points: true). At smoke
    scale "ours", "effect" and "interval" stay empty: the published number never gets a smoke neighbour."""
    by_id = {c.id: c for c in claims}
    rows = []
    for v in verdicts:
        for cell_verdict in (v.cells if len(v.cells) > 1 else [v]):
            claim = by_id[v.claim_id]
            factor = 100.0 if claim.quantity.points else 1.0
            digits = 2 if claim.quantity.points else 4
            cv = cell_verdict
            cell = cv.cell or (v.cells[0].cell if v.cells else DASH)
            published = (f"{_num(cv.published_effect, factor, True, digits)}{_unit(claim.quantity.points)}"
                         if cv.published_effect is not None else DASH)
            if scale == "smoke" or cv.estimate is None:
                ours = effect = interval = DASH
            else:
                design = "paired" if cv.paired else "Welch"
                ours = f"{_num(cv.estimate, factor, True, digits)}{_unit(claim.quantity.points)} (n={cv.n}, {design})"
                rel = f", {cv.relative_pct:+.1f}%" if cv.relative_pct is not None else ""
                effect = f"g={_num(cv.g, 1.0, True, 2)}{rel}"
                interval = (f"[{_num(cv.interval[0], factor, True, digits)}, {_num(cv.interval[1], factor, True, digits)}]"
                            if cv.interval is not None else DASH)
                if cv.sde is not None:
                    interval += f"; SDE {_num(cv.sde, factor, False, digits)}"
            label = cv.label if len(v.cells) > 1 else v.label
            rows.append({"claim": v.claim_id, "cell": cell, "published": published, "ours": ours, "effect": effect,
                         "interval": interval, "verdict": label})
        if len(v.cells) > 1:
            rows.append({"claim": v.claim_id, "cell": "all cells", "published": DASH, "ours": DASH,
                         "effect": DASH, "interval": DASH, "verdict": v.label})
    return pd.DataFrame(rows, columns=["claim", "cell", "published", "ours", "effect", "interval", "verdict"])


# The mark of each verdict state, a macro of paper/main.tex (a coloured symbol), printed before the words.
VERDICT_MARKS = {REPLICATED: "\\VReplicated", CONTRADICTED: "\\VContradicted", INCONCLUSIVE: "\\VInconclusive",
                 NOT_TESTABLE: "\\VNotTestable", NOT_RUN: "\\VNotRun", "not assessed": "\\VNotAssessed"}


def verdict_cell(label: str) -> str:
    """LaTeX for a verdict: its coloured mark, then the verdict in words (a label such as
    "not assessed (n = 3 < 5 seeds)" takes the mark of its state)."""
    for state, mark in VERDICT_MARKS.items():
        if label.startswith(state):
            return f"{mark}{{}} {latex_escape(label)}"
    from optrepro.registry import unknown

    raise unknown("verdict", label, VERDICT_MARKS)


def verdict_table(verdicts: Iterable[Verdict], claims, scale: str, *, caption: str, label: str) -> str:
    """Claim, cell, published effect, our effect (n, design), Hedges' g and relative change, the interval
    (adjusted; the smallest detectable effect when inconclusive), the verdict marked and in words."""
    frame = verdict_rows(list(verdicts), claims, scale)
    for v in frame["verdict"]:
        if scale == "smoke" and not any(v.startswith(s) for s in SMOKE_VERDICTS):
            raise ValueError(f"verdict {v!r} at smoke scale: the verdict engine must say not assessed")
    frame["verdict"] = [verdict_cell(v) for v in frame["verdict"]]
    caption += (" Effects are method minus baseline (pp: percentage points); n: seeds; paired or Welch: the test's "
                "design; g: Hedges' g; SDE: smallest detectable effect.")
    return latex_table(frame, caption=caption, label=label, scale=scale, raw=["verdict"],
                       wrap=["claim", "verdict"])


# --- published beside ours, per arm ----------------------------------------------------------------------

def _mean_sd(mean: float, sd: float | None, n: int | None, factor: float, digits: int) -> str:
    text = f"{mean * factor:.{digits}f}"
    if sd is not None and not pd.isna(sd):
        text += f" ± {sd * factor:.{digits}f}"
    return text + (f" (n={int(n)})" if n is not None and not pd.isna(n) else "")


def arm_rows(claim, runs: pd.DataFrame, published: pd.DataFrame | None, scale: str) -> pd.DataFrame:
    """Per cell and arm: the published value (mean +- sd, n, tier) beside ours (mean +- sd over usable seeds,
    diverged and failed counts). At smoke scale "ours" stays empty; the counts still show the code ran."""
    from optrepro.report.published import find_published, source_keys

    factor = 100.0 if claim.quantity.points else 1.0
    digits = 2 if claim.quantity.points else 4
    column = claim.quantity.column
    rows = []
    for cell in claim.cells:
        for arm, pub_arm in ((claim.method, claim.published_method), (claim.baseline, claim.published_baseline)):
            pub = find_published(published, claim, cell, pub_arm) if published is not None and pub_arm else None
            mine = runs
            if not mine.empty and {"tags.arm", claim.cell_key} <= set(mine.columns):
                mine = mine[(mine["tags.arm"] == arm) & (mine[claim.cell_key] == cell)]
                if "scale" in mine.columns:
                    mine = mine[mine["scale"] == scale]
                for key, value in claim.select.items():
                    mine = mine[mine[key] == value] if key in mine.columns else mine.iloc[0:0]
            else:
                mine = mine.iloc[0:0]
            values = (pd.to_numeric(mine[column], errors="coerce") if column in mine.columns
                      else pd.Series(dtype=float))
            usable = values[mine["status"].isin(["ok", "diverged"]) & values.notna()] if len(mine) else values
            ours = DASH
            if scale != "smoke" and len(usable):
                ours = _mean_sd(float(usable.mean()), float(usable.std(ddof=1)) if len(usable) > 1 else None,
                                len(usable), factor, digits)
            counts = mine["status"].value_counts().to_dict() if len(mine) else {}
            rows.append({"cell": cell, "arm": arm,
                         "published": (_mean_sd(pub["value"], pub["sd"], pub["n"], factor, digits)
                                       if pub is not None else DASH),
                         "tier": (f"{pub['tier']}, {source_keys(published)[(pub['paper'], pub['source'])]}"
                                  if pub is not None else DASH), "ours": ours,
                         "runs": ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"})
    return pd.DataFrame(rows, columns=["cell", "arm", "published", "tier", "ours", "runs"])


def arm_table(claim, runs: pd.DataFrame, published: pd.DataFrame | None, scale: str, *, caption: str,
              label: str) -> str:
    frame = arm_rows(claim, runs, published, scale)
    caption += (" Mean ± sd over runs (n); tier and source key of each published number (Appendix "
                "\"Sources of published numbers\"); runs: our runs by status.")
    return latex_table(frame, caption=caption, label=label, scale=scale)


# --- ambiguity register ---------------------------------------------------------------------------------

def ambiguity_table(entries: Iterable[Mapping[str, object]], scale: str, *, caption: str, label: str,
                    effects: Mapping[str, str] | None = None) -> str:
    """The register as a table: point, reading chosen, alternative, ablation and (from the section's
    results, by entry id) the ablation's effect."""
    effects = dict(effects or {})
    unknown = sorted(set(effects) - {e["id"] for e in entries})
    if unknown:
        from optrepro.registry import unknown as unknown_name

        raise unknown_name("ambiguity id", unknown[0], [e["id"] for e in entries])
    rows = [{"point": e["point"], "reading": e["reading"], "alternative": e["alternative"],
             "ablation": e["ablation"] if e["ablation"] else "none", "effect": effects.get(e["id"], DASH)}
            for e in entries]
    frame = pd.DataFrame(rows, columns=["point", "reading", "alternative", "ablation", "effect"])
    return latex_table(frame, caption=caption, label=label, scale=scale, font_size="footnotesize",
                       wrap=["point", "reading", "alternative", "ablation"])
