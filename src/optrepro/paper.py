"""Build the LaTeX report of one scale: paper/main.tex -> paper/build/<scale>/main.pdf, byte-reproducibly.

main.tex reads \\OptScale (set here with latexmk's -usepretex) to pick paper/{tables,figures}/<scale>/, and
\\input's build/<scale>/provenance.tex, written here: the commit of the code and of paper/claims.yaml.
SOURCE_DATE_EPOCH (default 0) and FORCE_SOURCE_DATE=1 fix pdfTeX's dates; main.tex sets \\pdftrailerid{}.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from optrepro.io import atomic_write_text
from optrepro.problems.registry import SCALES

TEX_PACKAGES = ("texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures "
                "texlive-science lmodern latexmk")


def _git(*args: str, cwd: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def provenance_tex(paper_dir: Path, scale: str) -> str:
    root = paper_dir.parent
    commit = _git("rev-parse", "--short=12", "HEAD", cwd=root) or "unknown"
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=root))
    claims = _git("log", "-1", "--format=%h", "--", "paper/claims.yaml", cwd=root) or "uncommitted"
    code = commit + (" (with uncommitted changes)" if dirty else "")
    return (f"\\newcommand{{\\OptCodeCommit}}{{\\texttt{{{code}}}}}\n"
            f"\\newcommand{{\\OptClaimsCommit}}{{\\texttt{{{claims}}}}}\n")


def build_pdf(scale: str, output: Path, paper_dir: Path = Path("paper")) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}. Valid choices: {', '.join(SCALES)}")
    if shutil.which("latexmk") is None or shutil.which("pdflatex") is None:
        raise FileNotFoundError(f"latexmk/pdflatex not found: install the Debian packages {TEX_PACKAGES} "
                                "(`make tex-deps` does it as root)")
    build = Path("build") / scale
    (paper_dir / build).mkdir(parents=True, exist_ok=True)
    atomic_write_text(paper_dir / build / "provenance.tex", provenance_tex(paper_dir.resolve(), scale))
    env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "0"), FORCE_SOURCE_DATE="1",
               TEXINPUTS=f"{build}/:")
    cmd = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
           f"-output-directory={build}", f"-usepretex=\\def\\OptScale{{{scale}}}", "main.tex"]
    subprocess.run(cmd, cwd=paper_dir, env=env, check=True)
    built = paper_dir / build / "main.pdf"
    if built.resolve() != Path(output).resolve():
        shutil.copyfile(built, output)


def _cmd_pdf(args) -> int:
    try:
        build_pdf(args.scale, Path(args.output or f"paper/build/{args.scale}/main.pdf"), Path(args.paper_dir))
    except subprocess.CalledProcessError as exc:
        print(f"optrepro pdf: latexmk failed ({exc.returncode}); see paper/build/{args.scale}/main.log",
              file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("pdf", help="build paper/build/<scale>/main.pdf from the generated tables and figures")
    p.add_argument("--scale", required=True, choices=SCALES)
    p.add_argument("--output")
    p.add_argument("--paper-dir", default="paper")
    p.set_defaults(func=_cmd_pdf)
