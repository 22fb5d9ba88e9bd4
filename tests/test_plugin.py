"""A newcomer's paper plugs in: adding its own files (and the `papers:` list) is all it takes.

The test copies the repository (tracked and untracked-but-not-ignored files) into a fresh git repository,
adds a minimal paper `toy` (two arms, one claim, one figure, one published row, one ambiguity entry) exactly as
the README's "Where things go" table says, runs the smoke DAG there with that copy's own code (PYTHONPATH), and
reads the PDF's text. It also proves no existing file was edited except `papers:` in config/config.yaml.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TOY_FILES = {
    "config/papers/toy.yaml": """\
title: "Toy paper: Adam vs Adagrad on digits"
planner: grid
experiments:
  - name: toy
    problem: digits_mlp
    seeds: 3
    epochs: 2
    optimizers:
      - {name: adam, hparams: {lr: 1.0e-3}}
      - {name: adagrad, hparams: {lr: 1.0e-2}}
""",
    "workflow/notebooks/toy.py": """\
# %%
from optrepro.report import figures, tables
from optrepro.report.section import Section

section = Section.from_snakemake(snakemake)  # noqa: F821
claim = section.claims.get("toy-adam-gt-adagrad")
section.write_table("arms.tex", tables.arm_table(claim, section.runs, section.published, section.scale,
                                                 caption="Toy arms beside the published value.", label="tab:toy-arms"))
figures.arm_comparison(section.runs, claim, section.scale, section.path("toy.pdf"), section.published,
                       title="Toy comparison")
section.finish()
""",
    "paper/sections/toy.tex": """\
A newcomer's paper, added as its own files.

\\gentable{arms.tex}

\\begin{figure}[H]
  \\centering
  \\includegraphics[width=0.5\\linewidth]{\\genfigure{toy.pdf}}
  \\caption{Toyfigurecaption: final test accuracy per seed [\\OptScale{} scale].}
\\end{figure}
""",
    "paper/claims/toy.yaml": """\
families:
  toy: {correction: holm, alpha: 0.05}
claims:
  - id: toy-adam-gt-adagrad
    paper: toy
    statement: Adam reaches higher test accuracy than Adagrad on digits
    source: "a fixture of tests/test_plugin.py"
    quantity: {metric: accuracy, split: test, value: final, aggregation: mean, points: true}
    arms: {method: adam, baseline: adagrad}
    direction: greater
    delta_star: 0.01
    cells: [digits_mlp]
    family: toy
    every_cell: false
    min_seeds: 3
    published: {method: Adam}
""",
    "paper/published/toy.csv": """\
paper,claim_id,cell,arm,metric,split,statistic,aggregation,value,sd,n,source,tier,note
toy,toy-adam-gt-adagrad,digits_mlp,Adam,accuracy,test,final,mean,0.4321,0.01,5,fixture of tests/test_plugin.py,paper,
""",
    "paper/ambiguity/toy.yaml": """\
- id: toy-lr
  point: "Toyambiguitypoint: which learning rate"
  reading: "1e-3"
  alternative: "1e-2"
  source: "a fixture of tests/test_plugin.py"
  ablation: null
""",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def copy_repository(dest: Path) -> Path:
    """The working tree as a user's clone would have it (tracked + untracked files git does not ignore)."""
    files = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "copy")
    return dest


def readme_paper_files() -> set[str]:
    """The files the README's "Where things go" row for a paper lists, with <paper> = toy."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| a paper |")]
    assert len(rows) == 1, "README.md's 'Where things go' table needs exactly one '| a paper |' row"
    return {path.replace("<paper>", "toy") for path in re.findall(r"`([^`]+<paper>[^`]*)`", rows[0])}


@pytest.mark.timeout(900)
def test_a_newcomers_paper_plugs_in_with_its_own_files_only(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    for name, text in TOY_FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    config = repo / "config" / "config.yaml"
    config.write_text(re.sub(r"^papers:.*$", "papers: [core, toy]", config.read_text(), count=1, flags=re.M))

    # Nothing existing was edited but the papers list; what was added is what the README says to add.
    status = git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(line[3:] for line in status if line.startswith(" M")) == ["config/config.yaml"]
    added = {line[3:] for line in status if line.startswith("??")}
    assert added == set(TOY_FILES) == readme_paper_files()

    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(repo / "src"))
    proc = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--config", "scale=smoke"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert yaml.safe_load((repo / "paper/generated/smoke/toy/verdicts.json").read_text())["claims"][0]["label"] \
        == "not assessed (smoke)"

    text = subprocess.run(["pdftotext", "-layout", str(repo / "paper/build/smoke/main.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())  # floats may sit a page before their section: search the whole text
    assert re.search(r"\d+ Toy paper: Adam vs Adagrad on digits", flat)  # its numbered section
    assert "Toyfigurecaption" in flat  # its figure
    assert re.search(r"toy-adam-gt-adagrad digits_mlp .*?not assessed", flat)  # its verdict
    assert "43.21 ± 1.00 (n=5)" in flat  # its published row (0.4321 in percentage points)
    assert "Ambiguity register: toy" in flat and "Toyambiguitypoint" in flat  # its register
    assert flat.index("Pipeline check") < flat.index("Toy paper")  # in the order of `papers:`
