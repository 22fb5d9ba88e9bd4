"""Figures: one style for every paper, Agg backend, PDF, byte-reproducible, stamped with their scale.

- Printed size: figures are included at their natural size (`\\paperfigure` in paper/main.tex never scales them),
  so the fonts set here are the printed fonts. `save_figure` refuses a figure wider than the text or with text
  smaller than MIN_FONT_PT, naming the offending text.
- Colours: `colour(name)` gives the same colour to the same optimizer (or arm) in every figure of the report.
- Spread: `curves` draws the mean over seeds with the band between the lowest and highest seed.
- Bytes: a PDF from matplotlib carries its creation date unless SOURCE_DATE_EPOCH is set, and the producer's
  version; `save_figure` drops the date and version metadata and writes atomically, so the same data give the
  same bytes. Every figure gets a small "<scale> scale" mark in its corner.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from optrepro.report.tables import scale_stamp

# Fixed style (set globally by pyplot()): no dependence on the user's matplotlibrc, fonts embedded as Type 42 (pdflatex-friendly).
RC = {"pdf.fonttype": 42, "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8,
      "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
      "figure.dpi": 100, "savefig.dpi": 300, "path.simplify": False, "svg.hashsalt": "optrepro"}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}
MIN_FONT_PT = 7.0
TEXT_WIDTH_IN = 6.53  # paper/main.tex: A4 with 2.2 cm margins
STAMP_FONT_PT = 7.0

# The same optimizer has the same colour in every figure. The optimizers compared most often get the clearest
# colours; any other name (an arm label, a searched genome) gets one of PALETTE by a stable hash of its name.
COLOURS = {
    "adam": "#1f77b4", "sgd": "#7f7f7f", "momentum": "#8c564b", "nag": "#c49c94", "rmsprop": "#9467bd",
    "adagrad": "#bcbd22", "adadelta": "#dbdb8d", "amsgrad": "#aec7e8", "nadam": "#17becf", "radam": "#9edae5",
    "adabelief": "#ff9896", "adabound": "#c5b0d5", "amsbound": "#f7b6d2", "lookahead_momentum": "#e377c2",
    "lookahead_radam": "#393b79", "caadam_additive": "#2ca02c", "caadam_multiplicative": "#98df8a",
    "caadam_depth": "#637939", "alsals": "#d62728", "adamsls": "#ff7f0e", "adasls": "#ffbb78", "sls": "#843c39",
    "fuzzy_second_order": "#e7ba52", "published": "#d62728",
    # the fuzzy section's arm labels (config/papers/fuzzy.yaml): distinct where they share a figure
    "fuzzy": "#e7ba52", "sgd_momentum": "#8c564b", "adamw": "#e6550d", "fd_cosine": "#31a354", "adahessian": "#636363",
    "fuzzy_rademacher": "#756bb1", "fuzzy_hess10": "#3182bd", "fuzzy_rules_loss": "#8ca252",
    "fuzzy_rules_progress": "#ce6dbd",
}
PALETTE = ("#393b79", "#5254a3", "#6b6ecf", "#637939", "#8ca252", "#b5cf6b", "#8c6d31", "#bd9e39", "#e7ba52",
           "#843c39", "#ad494a", "#d6616b", "#7b4173", "#a55194", "#ce6dbd", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed; same bytes on every machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update(RC)
    return plt


def new_figure(width: float = 3.4, height: float = 2.4, **subplots: Any):
    """(figure, axes) with the report's fixed style; width and height in inches (3.4 in = one column)."""
    fig, ax = pyplot().subplots(figsize=(width, height), **subplots)
    return fig, ax


def colour(name: str) -> str:
    """The report-wide colour of an optimizer or arm name."""
    if name in COLOURS:
        return COLOURS[name]
    return PALETTE[int(hashlib.sha256(str(name).encode()).hexdigest()[:8], 16) % len(PALETTE)]


def stamp(fig, scale: str) -> None:
    """The scale mark in the lower right corner (the caption carries it too)."""
    fig.text(0.995, 0.005, scale_stamp(scale).strip("[]"), ha="right", va="bottom", fontsize=STAMP_FONT_PT,
             color="0.45", family="DejaVu Sans")


def check_printable(fig) -> None:
    """Refuse a figure that would print too wide or with text under MIN_FONT_PT (it is never scaled)."""
    fig.canvas.draw()  # the saved size is the tight bounding box (labels may reach past the figure's edges)
    width = max(fig.get_size_inches()[0], fig.get_tightbbox(fig.canvas.get_renderer()).width)
    if width > TEXT_WIDTH_IN:
        raise ValueError(f"figure is {width:.2f} in wide; the text is {TEXT_WIDTH_IN} in (figures print unscaled)")
    for text in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")):
        if text.get_text() and text.get_visible() and text.get_fontsize() < MIN_FONT_PT:
            raise ValueError(f"figure text {text.get_text()!r} is {text.get_fontsize():g} pt; at least "
                             f"{MIN_FONT_PT:g} pt is readable in print")


def save_figure(fig, path: Path | str, scale: str) -> Path:
    """Stamp, save as PDF without dates or version strings, atomically; close the figure."""
    plt = pyplot()
    path = Path(path)
    if path.suffix != ".pdf":
        raise ValueError(f"figures are PDF files; got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp(fig, scale)
    check_printable(fig)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".pdf")
    os.close(fd)
    try:
        fig.savefig(tmp, format="pdf", metadata=PDF_METADATA, bbox_inches="tight", pad_inches=0.02)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def arm_comparison(runs: pd.DataFrame, claim, scale: str, path: Path | str,
                   published: pd.DataFrame | None = None, title: str | None = None) -> Path:
    """Per cell, every seed's value of the claim's quantity for the method and the baseline (diverged runs
    with a finite value drawn as crosses), the arm means, and the published values (diamonds) where a row
    exists. Points are drawn x100 when the claim's quantity has points: true."""
    import seaborn as sns

    from optrepro.report.published import find_published

    column = claim.quantity.column
    factor = 100.0 if claim.quantity.points else 1.0
    cells = list(claim.cells)
    frame = runs
    if not frame.empty and {"tags.arm", claim.cell_key, column} <= set(frame.columns):
        frame = frame[frame["tags.arm"].isin([claim.method, claim.baseline]) & frame[claim.cell_key].isin(cells)
                      & frame["status"].isin(["ok", "diverged"])]
        for key, value in claim.select.items():
            frame = frame[frame[key] == value]
        if "scale" in frame.columns:
            frame = frame[frame["scale"] == scale]
        frame = frame.assign(value=pd.to_numeric(frame[column], errors="coerce") * factor)
        frame = frame[frame["value"].notna()]
    else:
        frame = pd.DataFrame(columns=["tags.arm", claim.cell_key, "value", "status"])
    fig, ax = new_figure(width=min(max(2.4, 1.1 * len(cells) + 1.0), TEXT_WIDTH_IN))
    order, hue_order = cells, [claim.baseline, claim.method]
    palette = {arm: colour(arm) for arm in hue_order}
    if not frame.empty:
        ok = frame[frame["status"] == "ok"]
        sns.stripplot(data=ok, x=claim.cell_key, y="value", hue="tags.arm", order=order, hue_order=hue_order,
                      palette=palette, dodge=True, jitter=False, size=3, ax=ax)
        diverged = frame[frame["status"] == "diverged"]
        if not diverged.empty:
            sns.stripplot(data=diverged, x=claim.cell_key, y="value", hue="tags.arm", order=order,
                          hue_order=hue_order, palette=palette, dodge=True, jitter=False, marker="X", size=4,
                          ax=ax, legend=False)
        sns.pointplot(data=frame, x=claim.cell_key, y="value", hue="tags.arm", order=order, hue_order=hue_order,
                      palette=palette, dodge=0.4, linestyle="none", markers="_", markersize=12, errorbar=None,
                      ax=ax, legend=False)
    if published is not None:
        for i, cell in enumerate(cells):
            for offset, arm in ((-0.2, claim.published_baseline), (0.2, claim.published_method)):
                row = find_published(published, claim, cell, arm) if arm else None
                if row is not None:
                    ax.plot([i + offset], [row["value"] * factor], marker="D", color=colour("published"), markersize=4,
                            linestyle="none", label="published" if i == 0 else None)
    ax.set_xlim(-0.5, len(cells) - 0.5)
    ax.set_xticks(range(len(cells)), cells)
    ax.set_xlabel("")
    unit = " (%)" if claim.quantity.points else ""
    ax.set_ylabel(f"{claim.quantity.split} {claim.quantity.metric}{unit}, {claim.quantity.value}")
    ax.set_title(title or claim.id)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), frameon=False)
    return save_figure(fig, path, scale)


def curves(runs: pd.DataFrame, key: str, path: Path | str, scale: str, *, hue: str = "tags.arm",
           x: str = "epoch", xlabel: str = "epoch", ylabel: str | None = None, factor: float = 1.0,
           logy: bool = False, title: str | None = None, width: float = 4.5, height: float = 2.6,
           hue_order: Iterable[str] | None = None) -> Path:
    """One line per `hue` value: the mean over its runs of `key` (a metrics.jsonl field such as
    "test/accuracy", times `factor`) at each `x`, with the band from the lowest to the highest run. The runs'
    records are read from their run directories (`dir` column); only `kind: eval` records are used."""
    from optrepro.io import read_jsonl

    fig, ax = new_figure(width, height)
    groups = runs.groupby(hue) if not runs.empty else []
    order = list(hue_order) if hue_order is not None else sorted(k for k, _ in groups)
    by_name = dict(list(groups)) if not runs.empty else {}
    for name in order:
        if name not in by_name:
            continue
        series = []
        for run_dir in by_name[name]["dir"]:
            points = {r[x]: r[key] * factor for r in read_jsonl(Path(run_dir) / "metrics.jsonl")
                      if r.get("kind") == "eval" and key in r and r[key] is not None}
            series.append(points)
        xs = sorted(set().union(*series)) if series else []
        if not xs:
            continue
        columns = [[s[v] for s in series if v in s] for v in xs]
        mean = [sum(c) / len(c) for c in columns]
        ax.plot(xs, mean, color=colour(name), label=f"{name} (n={len(series)})", linewidth=1.2)
        ax.fill_between(xs, [min(c) for c in columns], [max(c) for c in columns], color=colour(name), alpha=0.2,
                        linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or key)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
    return save_figure(fig, path, scale)
