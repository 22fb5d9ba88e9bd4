"""The README's own commands under faults and for reviewers: Snakemake SIGKILLed during `make smoke` (a rerun of
the same command finishes with no manual step, no orphan, no finished run recomputed, the same PDF); the
stale-lock rule; a results bundle rebuilding the same PDF without training; `snakemake --report`.

Each test works in a copy of the repository whose config enables the core paper only (its smoke DAG is a few
jobs), with this interpreter's environment standing in for .venv, and runs `make smoke` there unchanged.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from optrepro.stopping import _is_snakemake, clear_stale_lock

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED_FILES = ("Makefile", "Snakefile", "pyproject.toml", "requirements.lock", "requirements-bootstrap.lock")
COPIED_DIRS = ("workflow", "config", "paper", "profiles")
PDF = Path("paper/build/smoke/main.pdf")


def repo_copy(dest: Path, papers=("core",), **config) -> Path:
    """The repository's workflow files in `dest`, a core-only config, and this interpreter's environment as
    .venv (made newer than the lock files, so make installs nothing)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED_FILES:
        shutil.copy2(ROOT / name, dest / name)
        os.utime(dest / name, (0, 0))
    for sub in COPIED_DIRS:
        shutil.copytree(ROOT / sub, dest / sub, ignore=shutil.ignore_patterns("build", "generated", "__pycache__"))
    (dest / ".venv").mkdir()
    (dest / ".venv" / "bin").symlink_to(BIN)
    (dest / ".venv" / ".installed").touch()
    path = dest / "config" / "config.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "papers": list(papers), **config}))
    return dest


def make_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return dict(env, PATH=f"{BIN}:{env['PATH']}")


def make_smoke(workdir: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """The README's smoke command, unchanged."""
    return subprocess.run(["make", "smoke"], cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=make_env(), stdin=subprocess.DEVNULL)


def processes_in(workdir: Path) -> dict[int, list[str]]:
    """pid -> command line of every live process whose working directory is `workdir`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != workdir.resolve():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
        except OSError:
            continue
        if state != "Z" and argv:
            found[int(entry.name)] = argv
    return found


def kill_everything_in(workdir: Path) -> None:
    for pid in processes_in(workdir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def finished_runs(workdir: Path) -> dict[str, tuple[int, bytes]]:
    """run id -> (result.json's mtime, metrics.jsonl) of every finished run."""
    return {p.parent.name: (p.stat().st_mtime_ns, (p.parent / "metrics.jsonl").read_bytes())
            for p in (workdir / "results" / "smoke" / "runs").glob("*/result.json")}


@pytest.fixture(scope="session")
def core_smoke(tmp_path_factory):
    """`make smoke` once, uninterrupted, on a core-only config: the reference the fault tests compare with."""
    wd = repo_copy(tmp_path_factory.mktemp("core_smoke"))
    proc = make_smoke(wd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return wd


# --- SIGKILL of Snakemake ------------------------------------------------------------------------------

def test_make_smoke_after_snakemake_is_sigkilled_in_training_finishes_unchanged(core_smoke, tmp_path):
    wd = repo_copy(tmp_path / "wd")
    log = tmp_path / "make.log"  # a file, not a pipe: waiting for make must not wait for its orphans too
    make = subprocess.Popen(["make", "smoke"], cwd=wd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=make_env(), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and make.poll() is None:
            jobs = [argv for argv in processes_in(wd).values() if "--batch" in argv]
            if finished_runs(wd) and jobs:  # the batch job has finished a run and is training the next
                break
            time.sleep(0.05)
        assert make.poll() is None, "the DAG finished before the test could kill Snakemake:\n" + log.read_text()
        snakemakes = [pid for pid, argv in processes_in(wd).items() if _is_snakemake(argv)]
        assert snakemakes and jobs
        for pid in snakemakes:
            os.kill(pid, signal.SIGKILL)
        assert make.wait(timeout=300) != 0
        survivors = processes_in(wd)
        assert not survivors, f"processes outlived Snakemake: {survivors}"
        assert (wd / ".snakemake" / "locks").is_dir(), "the kill should leave Snakemake's lock behind"
        before = finished_runs(wd)
        assert before

        again = make_smoke(wd)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "removed a stale lock" in again.stderr
        after = finished_runs(wd)
        assert {k: after[k] for k in before} == before, "a run finished before the kill was trained again"
        assert len(after) > len(before)
        assert md5(wd / PDF) == md5(core_smoke / PDF)
        assert not processes_in(wd)
    finally:
        if make.poll() is None:
            make.kill()
        kill_everything_in(wd)


# --- results bundles ---------------------------------------------------------------------------------

def optrepro(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "optrepro"), *args], cwd=workdir, capture_output=True, text=True,
                          env=make_env(), timeout=300)


def test_a_bundle_of_the_smoke_results_rebuilds_the_same_pdf_without_training(core_smoke, tmp_path):
    bundle = tmp_path / "results-smoke.tar.gz"
    exported = optrepro(core_smoke, "bundle", "export", "--scale", "smoke", "--output", str(bundle))
    assert exported.returncode == 0, exported.stderr
    reference = finished_runs(core_smoke)

    wd = repo_copy(tmp_path / "reviewer")  # a fresh clone: no results, no data, no Snakemake metadata
    imported = optrepro(wd, "bundle", "import", str(bundle))
    assert imported.returncode == 0, imported.stderr
    rebuilt = make_smoke(wd)
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    jobs = rebuilt.stdout + rebuilt.stderr
    assert "rule run_batch" not in jobs and "rule data_fetch" not in jobs and "localrule paper_report" in jobs
    assert md5(wd / PDF) == md5(core_smoke / PDF)
    assert {k: v[1] for k, v in finished_runs(wd).items()} == {k: v[1] for k, v in reference.items()}

    # a spec that differs (one more seed per arm) is a new run: only those runs train
    imported_runs = finished_runs(wd)
    paper = wd / "config" / "papers" / "core.yaml"
    config = yaml.safe_load(paper.read_text())
    config["smoke"]["experiments"][0]["seeds"] = config["smoke"]["experiments"][0]["seeds"] + 1
    paper.write_text(yaml.safe_dump(config, sort_keys=False))
    extended = make_smoke(wd)
    assert extended.returncode == 0, extended.stdout[-3000:] + extended.stderr[-3000:]
    now = finished_runs(wd)
    assert {k: now[k] for k in imported_runs} == imported_runs  # not one imported run trained again
    assert len(now) == len(imported_runs) + 2  # the new seed of each of the two arms


def test_a_tampered_bundle_is_refused_by_the_command(core_smoke, tmp_path):
    import io
    import tarfile

    bundle = tmp_path / "b.tar.gz"
    assert optrepro(core_smoke, "bundle", "export", "--scale", "smoke", "--output", str(bundle)).returncode == 0
    tampered, edited = tmp_path / "tampered.tar.gz", None
    with tarfile.open(bundle) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            body = src.extractfile(member).read()
            if member.name.endswith("result.json") and edited is None:  # one byte of one run's result
                body = body.replace(b'"status": "ok"', b'"status": "ok" ')
                member.size, edited = len(body), member.name
            dst.addfile(member, io.BytesIO(body))
    wd = repo_copy(tmp_path / "reviewer")
    refused = optrepro(wd, "bundle", "import", str(tampered))
    assert refused.returncode == 2 and f"error: {edited}: its sha256 differs" in refused.stderr
    assert not (wd / "results" / "smoke" / "runs").exists()


# --- snakemake --report -------------------------------------------------------------------------------

def test_snakemake_report_shows_every_figure_with_its_caption(core_smoke, tmp_path):
    from optrepro.paper import figure_captions

    html = tmp_path / "report.html"
    proc = subprocess.run([str(BIN / "snakemake"), "--report", str(html), "--config", "scale=smoke"], cwd=core_smoke,
                          capture_output=True, text=True, env=make_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = html.read_text()
    figures = sorted(p.name for p in (core_smoke / "paper/generated/smoke/core").glob("*.pdf"))
    captions = figure_captions(core_smoke / "paper/sections/core.tex")
    assert figures and set(captions) <= set(figures)
    for figure in figures:
        assert figure in text, figure
    for caption in captions.values():  # the caption is rendered to HTML inside the report's data
        assert " ".join(caption.split()[:6]) in text, caption
    assert "main.pdf" in text


def test_figure_captions_are_read_from_the_section_as_plain_text(tmp_path):
    from optrepro.paper import figure_captions

    section = tmp_path / "p.tex"
    section.write_text("Text. \\paperfigure{a.pdf}{The ``up to 5.97\\,\\%'' claim: \\emph{test} accuracy\n"
                       "(mean, $n=5$) --- see {\\bf b}_x.} more \\paperfigure{b.pdf}{Second.}\n")
    assert figure_captions(section) == {"a.pdf": "The \u201cup to 5.97\u2009%\u201d claim: test accuracy (mean, "
                                                 "n=5) \u2014 see b\\_x.", "b.pdf": "Second."}


# --- the stale-lock rule -------------------------------------------------------------------------------

def test_a_lock_is_cleared_only_when_no_snakemake_is_alive_in_the_directory(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x\n")
    # a process that looks like Snakemake to /proc (argv[0] "snakemake"), working in tmp_path
    holder = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 60"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        # wait for the exec itself: before it, bash's own command line already holds the word "snakemake"
        while time.monotonic() < deadline and not any(
                argv[:1] == ["snakemake"] for argv in processes_in(tmp_path).values()):
            time.sleep(0.05)
        assert "left alone" in clear_stale_lock(tmp_path)
        assert (locks / "0.input.lock").exists()
    finally:
        holder.kill()
        holder.wait()
    assert "removed a stale lock" in clear_stale_lock(tmp_path)
    assert not locks.exists()
    assert clear_stale_lock(tmp_path) == "no lock"


@pytest.mark.parametrize("argv, expected", [
    (["/x/.venv/bin/snakemake", "--cores", "2"], True),
    (["/usr/bin/python3.11", "/x/.venv/bin/snakemake", "-s", "Snakefile"], True),
    (["python", "-m", "snakemake", "--cores", "1"], True),
    (["python", "/x/.snakemake/scripts/tmpab12.core.py"], False),
    (["/x/.venv/bin/optrepro", "supervise", "/x/.venv/bin/snakemake"], False),
    (["bash", "-c", "optrepro run --batch core/x"], False),
])
def test_what_counts_as_a_snakemake_process(argv, expected):
    assert _is_snakemake(argv) is expected


def test_a_sigkilled_supervisor_takes_snakemake_down_with_it(tmp_path):
    """A SIGKILL of the supervisor (a `timeout -k` shorter than its grace) cannot forward anything: the child
    gets SIGTERM from the kernel instead (parent-death signal) and does not run on as an orphan."""
    code = "import sys; from optrepro.stopping import supervise; sys.exit(supervise(['sleep', '60']))"
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stderr=subprocess.DEVNULL)
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not children.read_text().split():
        time.sleep(0.05)
    child = int(children.read_text().split()[0])
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists():
        state = (Path(f"/proc/{child}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.05)
    alive = Path(f"/proc/{child}").exists() and \
        (Path(f"/proc/{child}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    assert not alive, "the supervised command outlived its SIGKILLed supervisor"
