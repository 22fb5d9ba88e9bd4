"""The DAG: config validation before any job, full-scale planning, and the smoke DAG end to end to the PDF.

The smoke DAG runs once per test session in a temporary copy of config/ and paper/ (fixture `smoke_dag`);
the tests that need its outputs reuse them.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from optrepro.workflow import enabled_papers, load_plan, validate_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCHEMAS = ROOT / "workflow" / "schemas"


def make_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for sub in ("config", "paper"):
        shutil.copytree(ROOT / sub, path / sub, ignore=shutil.ignore_patterns("build", "generated"))
    return path


def snakemake(workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "--cores", "2", *args],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def config_of(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config" / "config.yaml").read_text())


# --- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"scale": "huge"}, "scale"),
    ({"papers": ["core", "bogus"]}, "bogus"),
    ({"batch_target_s": {"full": "fast", "smoke": 60}}, "batch_target_s/full"),
    ({"unknown_key": 1}, "unknown_key"),
])
def test_bad_config_is_refused_naming_the_bad_value(tmp_path, change, message):
    wd = make_workdir(tmp_path)
    config = {**config_of(wd), **change}
    with pytest.raises(ValueError, match=message):
        validate_config(config, wd / "config", SCHEMAS)


def test_bad_paper_config_is_refused_naming_the_key(tmp_path):
    wd = make_workdir(tmp_path)
    paper = yaml.safe_load((wd / "config/papers/core.yaml").read_text())
    paper["experiments"][0]["optimizer"] = paper["experiments"][0].pop("optimizers")
    (wd / "config/papers/core.yaml").write_text(yaml.safe_dump(paper))
    with pytest.raises(ValueError, match="optimizer"):
        validate_config(config_of(wd), wd / "config", SCHEMAS)


def test_unknown_optimizer_in_a_paper_config_fails_at_planning_with_the_choices(tmp_path):
    wd = make_workdir(tmp_path)
    paper = yaml.safe_load((wd / "config/papers/core.yaml").read_text())
    paper["experiments"][0]["optimizers"][0]["name"] = "adamx"
    (wd / "config/papers/core.yaml").write_text(yaml.safe_dump(paper))
    config = {**config_of(wd), "results_dir": str(wd / "results")}
    with pytest.raises(ValueError, match="adamx.*Valid choices"):
        load_plan(config, wd / "config")


def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    wd = make_workdir(tmp_path)
    proc = snakemake(wd, "--config", "scale=huge")
    assert proc.returncode != 0
    assert "scale" in proc.stdout + proc.stderr and "huge" in proc.stdout + proc.stderr
    assert not (wd / "results").exists()


def test_full_scale_dry_run_plans(tmp_path):
    wd = make_workdir(tmp_path)
    proc = snakemake(wd, "-n")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "run_batch" in out and "report_pdf" in out


def test_plan_is_cached_and_batches_are_stable(tmp_path):
    wd = make_workdir(tmp_path)
    config = {**config_of(wd), "scale": "smoke", "results_dir": str(wd / "results"), "papers": ["core"]}
    first = load_plan(config, wd / "config")
    again = load_plan(config, wd / "config")
    assert first.root == again.root and first.index == again.index
    assert sum(b["runs"] for b in first.index.values()) == 6  # core: 2 arms x 3 seeds at smoke scale


# --- the smoke DAG, once per session ----------------------------------------------------------------

@pytest.fixture(scope="session")
def smoke_dag(tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("smoke"))
    start = time.perf_counter()
    proc = snakemake(wd, "--config", "scale=smoke")
    (wd / "dag_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return wd


# The smoke scale's budgets on this 2-core machine: the whole DAG plus the PDF, and each paper's slice (the
# wall time of its batch jobs plus its report job, from Snakemake's benchmark files).
SMOKE_DAG_BUDGET_S = 600
PAPER_SLICE_BUDGET_S = 120


def paper_slices(workdir: Path) -> dict[str, float]:
    import csv

    seconds: dict[str, float] = {}
    for tsv in sorted((workdir / "results/smoke/benchmarks").rglob("*.tsv")):
        paper = tsv.relative_to(workdir / "results/smoke/benchmarks").parts[0]
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        seconds[paper] = seconds.get(paper, 0.0) + float(row["s"])
    return seconds


@pytest.mark.timing
def test_smoke_dag_and_each_papers_slice_fit_their_time_budgets(smoke_dag):
    total = float((smoke_dag / "dag_seconds.txt").read_text())
    slices = paper_slices(smoke_dag)
    print(f"smoke DAG {total:.1f} s; per paper: " + ", ".join(f"{p} {s:.1f} s" for p, s in slices.items()))
    assert "core" in slices and set(slices) <= set(enabled_papers(config_of(smoke_dag), smoke_dag / "config"))
    assert total <= SMOKE_DAG_BUDGET_S, f"the smoke DAG took {total:.0f} s > {SMOKE_DAG_BUDGET_S} s"
    over = {p: s for p, s in slices.items() if s > PAPER_SLICE_BUDGET_S}
    assert not over, f"papers over their {PAPER_SLICE_BUDGET_S} s smoke slice: {over}"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_smoke_dag_builds_the_pdf_and_a_second_run_reruns_nothing(smoke_dag):
    pdf = smoke_dag / "paper/build/smoke/main.pdf"
    assert pdf.stat().st_size > 10_000
    proc = snakemake(smoke_dag, "-n", "--config", "scale=smoke")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]


def test_smoke_pdf_is_byte_reproducible(smoke_dag):
    pdf = smoke_dag / "paper/build/smoke/main.pdf"
    before = md5(pdf)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    shutil.rmtree(smoke_dag / "paper/build/smoke")
    subprocess.run([str(BIN / "optrepro"), "pdf", "--scale", "smoke"], cwd=smoke_dag, check=True, env=env,
                   capture_output=True)
    assert md5(pdf) == before


def test_smoke_tables_are_stamped_and_say_not_assessed(smoke_dag):
    verdicts = (smoke_dag / "paper/generated/smoke/core/verdicts.tex").read_text()
    assert "[smoke scale]" in verdicts and "not assessed (smoke)" in verdicts
    assert "replicated" not in verdicts and "contradicted" not in verdicts


def pdf_text(pdf: Path, *options: str) -> str:
    """The PDF's text in reading order (a wrapped table cell stays together), words joined by single spaces;
    `options` for pdftotext, e.g. "-l", "1" for the first page."""
    out = subprocess.run(["pdftotext", "-raw", *options, str(pdf), "-"], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())


def adam_sentence(pdf: Path) -> str:
    return re.search(r"Adam.s mean final test accuracy is [\d.]+%", pdf_text(pdf)).group(0)


def test_editing_a_result_file_changes_the_table_and_the_prose(smoke_dag, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(smoke_dag, wd, symlinks=True)
    table = wd / "paper/generated/smoke/core/digits.tex"
    before, sentence = table.read_text(), adam_sentence(wd / "paper/build/smoke/main.pdf")
    runs = [r for m in (wd / "results/smoke/batches/core").rglob("*.json") for r in json.loads(m.read_text())["runs"]]
    adam = next(r for r in runs if json.loads((wd / r["dir"] / "spec.json").read_text())["tags"]["arm"] == "adam")
    result_path = wd / adam["dir"] / "result.json"
    result = json.loads(result_path.read_text())
    result["deterministic"]["final"]["test"]["accuracy"] = 0.123456
    result_path.write_text(json.dumps(result))
    proc = snakemake(wd, "--config", "scale=smoke", "--forcerun", "paper_report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert table.read_text() != before
    # the number in the section's prose is the notebook's, not typed: it follows the result file
    assert adam_sentence(wd / "paper/build/smoke/main.pdf") != sentence


# --- the report as a reader sees it --------------------------------------------------------------------

def test_first_page_shows_the_scoreboard_with_verdicts_in_words_and_totals(smoke_dag):
    page1 = pdf_text(smoke_dag / "paper/build/smoke/main.pdf", "-l", "1")
    assert re.search(r"Scoreboard .* core Adam > SGD, test accuracy digits_mlp – – – ● not assessed \(smoke\)",
                     page1), page1
    # the scoreboard may run over the next pages when other papers register many claims; at smoke scale every
    # verdict says nothing: not assessed, or not testable for a claim our runs cannot test
    text = pdf_text(smoke_dag / "paper/build/smoke/main.pdf")
    assert re.search(r"Totals: 0 replicated, 0 contradicted, 0 inconclusive, \d+ not testable, 0 not run, "
                     r"[1-9]\d* not assessed", text), text[:3000]


def test_pdf_metadata_names_title_scale_and_commit(smoke_dag):
    info = subprocess.run(["pdfinfo", str(smoke_dag / "paper/build/smoke/main.pdf")], capture_output=True,
                          text=True, check=True).stdout
    title = re.search(r"^Title:\s+(.*)$", info, re.M).group(1)
    assert title.startswith("optrepro: replicating five deep-learning optimizer papers") and "smoke" in title
    assert re.search(r"^Subject:\s+Report at smoke scale, code \S+", info, re.M)  # "unknown" outside git


def test_tables_carry_run_counts_and_the_appendix_lists_the_runs_behind_them(smoke_dag):
    text = pdf_text(smoke_dag / "paper/build/smoke/main.pdf")
    assert "Runs behind each table" in text and re.search(r"core digits\.tex 6 [0-9a-f]{12}", text)
    rows = (smoke_dag / "paper/build/smoke/runs.csv").read_text().splitlines()
    core = [r for r in rows[1:] if r.startswith("core,")]  # other papers list their own tables' runs
    assert rows[0] == "paper,table,run_id" and len(core) == 6
    assert all(re.fullmatch(r"core,digits\.tex,[0-9a-f]{20}", r) for r in core)
    assert all(re.fullmatch(r"[a-z0-9_]+,[a-z0-9_]+\.tex,[0-9a-f]{20}", r) for r in rows[1:])


def test_a_table_wider_than_the_page_fails_the_build_naming_it(smoke_dag, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(smoke_dag, wd, symlinks=True)
    import pandas as pd

    from optrepro.report.tables import latex_table

    wide = pd.DataFrame({f"column {i}": [123456.789] for i in range(30)})  # 30 numbers do not fit a row
    (wd / "paper/generated/smoke/core/digits.tex").write_text(
        latex_table(wide, caption="Too wide.", label="tab:core-digits", scale="smoke"))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run([str(BIN / "optrepro"), "pdf", "--scale", "smoke"], cwd=wd, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert re.search(r"overfull box [\d.]+ pt too wide in \./generated/smoke/core/digits\.tex", proc.stderr), \
        proc.stderr


def test_smoke_dag_runs_the_nos_search_and_evaluates_and_typesets_its_best_genome(smoke_dag):
    summary = json.loads((smoke_dag / "results/smoke/nos/main/summary.json").read_text())
    assert summary["random_search"]["evaluations"] and summary["integrity_check"]["sample"]  # the controls ran
    assert summary["winners_curse"]["pairs_by_step"] is not None
    best = summary["best"][0]
    runs = [json.loads((smoke_dag / r["dir"] / "spec.json").read_text())
            for m in (smoke_dag / "results/smoke/batches/nos").rglob("rerun-*.json")
            for r in json.loads(m.read_text())["runs"]]
    searched = [s for s in runs if s["tags"]["arm"] == "searched1"]
    assert {s["problem"] for s in searched} == {"nos_cifar100_effv2s", "nos_tinyimagenet_effv2s",
                                                "nos_flowers102_effv2s", "nos_cars_effv2s", "nos_caltech101_effv2s"}
    assert all(s["optimizer"]["hparams"]["genome"] == best["genome"] for s in searched)
    genomes = (smoke_dag / "paper/generated/smoke/nos/genomes.tex").read_text()
    assert "searched1" in genomes and "\\displaystyle u =" in genomes
    text = pdf_text(smoke_dag / "paper/build/smoke/main.pdf")
    assert "searched1 particle" in text and "nos_caltech101_effv2s: each arm" in text


def test_smoke_build_logs_no_overfull_box(smoke_dag):
    from optrepro.paper import overfull_boxes

    log = (smoke_dag / "paper/build/smoke/main.log").read_text(errors="replace")
    assert "Overfull" not in log or overfull_boxes(log) == []  # at most boxes within the 1 pt tolerance


def test_overfull_boxes_are_attributed_to_the_file_being_read():
    from optrepro.paper import overfull_boxes

    log = ("(./main.tex (./build/smoke/scoreboard.tex)\n"
           "(./generated/smoke/core/digits.tex\n"
           "Overfull \\hbox (26.5pt too wide) in alignment at lines 3--9\n"
           "[]\n) (./generated/smoke/core/verdicts.tex\n"
           "Overfull \\hbox (0.5pt too wide) in paragraph at lines 1--1\n)\n"
           "Overfull \\hbox (3pt too wide) in paragraph at lines 40--41\n)")
    assert overfull_boxes(log) == [(26.5, "./generated/smoke/core/digits.tex: in alignment at lines 3--9"),
                                   (3.0, "./main.tex: in paragraph at lines 40--41")]


def test_data_target_plans_one_job_per_source_even_without_imagenet(tmp_path):
    from optrepro.data import sources

    wd = make_workdir(tmp_path)
    assert config_of(wd)["imagenet_dir"] is None
    proc = snakemake(wd, "-n", "data")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    counts = dict(re.findall(r"^(data_fetch|imagenet_verify)\s+(\d+)$", out, re.M))
    assert int(counts["data_fetch"]) == len(sources.downloadable())
    assert int(counts["imagenet_verify"]) == 1


def test_old_plans_are_pruned_and_current_points_at_the_new_one(tmp_path):
    wd = make_workdir(tmp_path)
    config = {**config_of(wd), "scale": "smoke", "results_dir": str(wd / "results")}
    plans = wd / "results" / "smoke" / "plans"
    for i in range(5):
        (plans / f"old{i}").mkdir(parents=True)
        os.utime(plans / f"old{i}", (1000 + i, 1000 + i))
    plan = load_plan(config, wd / "config")
    dirs = sorted(p.name for p in plans.iterdir() if p.is_dir() and not p.is_symlink())
    assert dirs == sorted([plan.root.name, "old4", "old3"])
    assert (plans / "current").resolve() == plan.root.resolve()


# --- papers: every config/papers/*.yaml by default, in their order; a paper without a section is "not run" ---

def test_papers_all_is_every_paper_config_in_its_order_and_a_list_keeps_its_own(tmp_path):
    wd = make_workdir(tmp_path)
    (wd / "config/papers/zeta.yaml").write_text("title: Zeta\norder: 5\nplanner: grid\nexperiments: []\n")
    (wd / "config/papers/alpha.yaml").write_text("title: Alpha\nplanner: grid\nexperiments: []\n")  # order 50
    assert config_of(wd)["papers"] == "all"
    assert enabled_papers({"papers": "all"}, wd / "config") == sorted(
        (p.stem for p in (wd / "config/papers").glob("*.yaml")),
        key=lambda p: (yaml.safe_load((wd / f"config/papers/{p}.yaml").read_text()).get("order", 50), p))
    for other in set((wd / "config/papers").glob("*.yaml")) - {wd / f"config/papers/{p}.yaml" for p in
                                                              ("core", "zeta", "alpha")}:
        other.unlink()
    assert enabled_papers({"papers": "all"}, wd / "config") == ["core", "zeta", "alpha"]  # order 0, 5, 50
    assert enabled_papers({"papers": ["alpha", "core"]}, wd / "config") == ["alpha", "core"]
    with pytest.raises(ValueError, match=r"unknown paper in `papers`.*'omega'.*Valid choices: alpha, core"):
        enabled_papers({"papers": ["core", "omega"]}, wd / "config")


def test_a_paper_without_its_section_or_results_is_listed_as_not_run(tmp_path):
    from optrepro.paper import papers_tex

    wd = make_workdir(tmp_path)
    (wd / "config/papers/fresh.yaml").write_text("title: A fresh paper\nplanner: grid\nexperiments: []\n")
    tex = papers_tex(["core", "fresh"], "smoke", wd / "paper", wd / "config")
    assert "\\papernotrun{core}{Pipeline check: digits MLP, Adam vs SGD}{its notebook has not run at this scale.}" in tex
    assert "\\papernotrun{fresh}{A fresh paper}{its section is not written yet.}" in tex
    (wd / "paper/generated/smoke/core").mkdir(parents=True)
    (wd / "paper/generated/smoke/core/verdicts.json").write_text("{}")
    assert "\\papersection{core}{Pipeline check: digits MLP, Adam vs SGD}" in papers_tex(["core"], "smoke", wd / "paper",
                                                                                         wd / "config")


def test_an_unknown_planner_is_refused_with_the_valid_choices(tmp_path):
    wd = make_workdir(tmp_path)
    paper = yaml.safe_load((wd / "config/papers/core.yaml").read_text())
    paper["planner"] = "gird"
    (wd / "config/papers/core.yaml").write_text(yaml.safe_dump(paper))
    with pytest.raises(ValueError, match=r"unknown planner 'gird'. Did you mean 'grid'\? Valid choices: (\w+, )*grid"):
        validate_config(config_of(wd), wd / "config", SCHEMAS)


def test_a_yaml_error_names_the_file(tmp_path):
    wd = make_workdir(tmp_path)
    (wd / "config/papers/core.yaml").write_text("title: [unclosed\n")
    with pytest.raises(ValueError, match=r"config/papers/core.yaml: not valid YAML"):
        validate_config(config_of(wd), wd / "config", SCHEMAS)


def test_full_scale_digits_report_fits_the_page_and_prints_a_real_verdict(tmp_path):
    """`make full` with the core section only: real runs (digits at full size), a verdict in words on page 1,
    and no overfull box (optrepro pdf fails the build on one)."""
    wd = make_workdir(tmp_path)
    proc = snakemake(wd, "--config", "papers=[core]")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page1 = pdf_text(wd / "paper/build/full/main.pdf", "-l", "1")
    assert re.search(r"core Adam > SGD, test accuracy digits_mlp .*\(n=5\).* (replicated|contradicted|inconclusive)"
                     r" Totals:", page1), page1
    assert "[full scale]" in page1


# --- runs shared between papers ----------------------------------------------------------------------

def test_a_run_two_papers_ask_for_is_trained_once_and_each_paper_sees_it_with_its_own_labels(tmp_path):
    from optrepro.report.aggregate import own_runs
    from optrepro.report.section import Section

    wd = make_workdir(tmp_path)
    core = yaml.safe_load((wd / "config/papers/core.yaml").read_text())
    twin = {"title": "Twin", "planner": "grid", "experiments": [
        {"name": "twin", "problem": "digits_mlp", "seeds": 2, "epochs": 1,
         "optimizers": [{"name": "adam", "label": "the-adam", "hparams": {"lr": 1.0e-3}}]}]}
    core["smoke"]["experiments"][0].update(seeds=2, epochs=1)
    (wd / "config/papers/core.yaml").write_text(yaml.safe_dump(core))
    (wd / "config/papers/twin.yaml").write_text(yaml.safe_dump(twin))
    config = {**config_of(wd), "scale": "smoke", "results_dir": str(wd / "results"), "papers": ["core", "twin"]}
    plan = load_plan(config, wd / "config")
    assert sum(b["runs"] for b in plan.index.values()) == 4  # core's adam runs are twin's: trained once
    assert plan.manifests("twin") == plan.manifests("core") and plan.manifests("twin")
    assert set(plan.requests("twin")) < set(plan.requests("core"))
    for key in plan.index:
        from optrepro.runner import run_batch
        from optrepro.workflow import batch_entries

        assert run_batch(batch_entries(plan.root, key), wd / "results/smoke",
                         manifest=Path(plan.index[key]["manifest"]), batch_name=key, scale="smoke") == 0
    twin_section = Section.load("twin", "smoke", plan.manifests("twin"), tmp_path / "out",
                                requests=plan.root / "papers" / "twin.json")
    assert len(twin_section.runs) == 2 and set(twin_section.runs["tags.arm"]) == {"the-adam"}
    core_section = Section.load("core", "smoke", plan.manifests("core"), tmp_path / "out2",
                                requests=plan.root / "papers" / "core.json")
    assert len(core_section.runs) == 4 and set(core_section.runs["tags.arm"]) == {"adam", "sgd"}
    assert set(core_section.runs["tags.experiment"]) == {"digits"}  # core's labels, not twin's
    assert own_runs(core_section.runs, "twin", plan.requests("twin"))["tags.arm"].tolist() == ["the-adam"] * 2
