"""Figures: Agg backend, PDF, byte-reproducible, stamped with their scale.

A PDF from matplotlib carries its creation date unless SOURCE_DATE_EPOCH is set, and the producer's version;
`save_figure` drops the date and version metadata and writes atomically, so the same data give the same bytes
(the report's builds are byte-reproducible). Every figure gets a small "<scale> scale" mark in its corner.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from optrepro.report.tables import scale_stamp

# Fixed style (set globally by pyplot()): no dependence on the user's matplotlibrc, fonts embedded as Type 42 (pdflatex-friendly).
RC = {"pdf.fonttype": 42, "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8,
      "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
      "figure.dpi": 100, "savefig.dpi": 300, "path.simplify": False, "svg.hashsalt": "optrepro"}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}


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


def stamp(fig, scale: str) -> None:
    """The scale mark in the lower right corner (the caption carries it too)."""
    fig.text(0.995, 0.005, scale_stamp(scale).strip("[]"), ha="right", va="bottom", fontsize=6,
             color="0.45", family="DejaVu Sans")


def save_figure(fig, path: Path | str, scale: str) -> Path:
    """Stamp, save as PDF without dates or version strings, atomically; close the figure."""
    plt = pyplot()
    path = Path(path)
    if path.suffix != ".pdf":
        raise ValueError(f"figures are PDF files; got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp(fig, scale)
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
    fig, ax = new_figure(width=max(2.4, 1.1 * len(cells) + 1.0))
    order, hue_order = cells, [claim.baseline, claim.method]
    palette = {claim.baseline: "0.35", claim.method: "#1f77b4"}
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
                    ax.plot([i + offset], [row["value"] * factor], marker="D", color="#d62728", markersize=4,
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
