"""SLURM: the cluster profile config/profiles/slurm against the workflow's rules, and (opt-in, `pytest -m slurm`) a
smoke slice of the DAG through a real SLURM cluster, equal run by run to the same slice run locally.

The opt-in tests need a cluster whose default partition takes 1-CPU jobs: `.ci/slurm.sh start` sets up a one-node
SLURM on a Debian machine (as root), `.ci/slurm.sh stop` takes it down; `.ci/run` does both around `pytest -m slurm`.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from test_workflow import BIN, ROOT, make_workdir

PROFILE = ROOT / "config" / "profiles" / "slurm" / "profile.yaml"
RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)


def workflow_rule_names() -> set[str]:
    """The rules the workflow defines, read from the Snakefile and workflow/rules/*.smk."""
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    return {name for path in files for name in RULE.findall(path.read_text())}


def run_snakemake(workdir: Path, *args: str, limit_s: int = 300) -> subprocess.CompletedProcess:
    # timeout -k, not subprocess's timeout: Snakemake cancels its SLURM jobs on SIGTERM, and SIGTERM alone may
    # leave it waiting for them.
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    command = ["timeout", "-k", "20", str(limit_s), str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)


def job_resources(output: str) -> dict[str, dict[str, str]]:
    """rule -> its resources, from the job listing of a dry run (one entry per rule; the last job of it wins)."""
    resources, rule = {}, None
    for line in output.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s+resources: (.*)", line)) and rule:
            resources[rule] = dict(item.split("=", 1) for item in m.group(1).split(", "))
    return resources


# --- the cluster profile, without a cluster -----------------------------------------------------------

def test_the_slurm_profile_names_only_rules_of_the_workflow():
    rules = workflow_rule_names()
    assert {"run_batch", "data_fetch", "report_pdf"} <= rules  # the rule files are read
    profile = yaml.safe_load(PROFILE.read_text())
    named = set(profile.get("set-resources", {})) | set(profile.get("set-threads", {}))
    assert "run_batch" in named
    assert named <= rules, f"the SLURM profile names rules the workflow lacks: {sorted(named - rules)}; " \
                           f"the rules: {sorted(rules)}"


def test_slurm_jobs_ask_for_more_memory_on_each_attempt(tmp_path):
    wd = make_workdir(tmp_path)
    by_attempt = {}
    for attempt in (1, 2):
        proc = run_snakemake(wd, "-n", "--workflow-profile", str(PROFILE.parent), "--attempt", str(attempt),
                             "--config", "scale=smoke", limit_s=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"workflow specific profile {PROFILE.parent}" in proc.stderr
        by_attempt[attempt] = job_resources(proc.stdout + proc.stderr)
    assert "run_batch" in by_attempt[1] and by_attempt[1].keys() == by_attempt[2].keys()
    for rule, first in by_attempt[1].items():
        assert first["slurm_partition"], rule
        assert int(by_attempt[2][rule]["mem_mb"]) > int(first["mem_mb"]), rule


# --- a real cluster (opt-in: pytest -m slurm) ---------------------------------------------------------

# The section's report job (local) and the batch jobs it needs. Naming run_batch in --until as well makes
# Snakemake 9 stop with "Out of jobs ready to be started" (paper_report is downstream of it).
SLICE = ["--until", "paper_report"]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: ([^)]*)\)")


def default_partition() -> str:
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        proc = None
    if proc is None or proc.returncode != 0:
        pytest.fail("no SLURM cluster answers sinfo: start one with `.ci/slurm.sh start` (root, Debian)")
    marked = [p.rstrip("*") for p in proc.stdout.split() if p.endswith("*")]
    assert marked, f"the cluster has no default partition: {proc.stdout!r}"
    return marked[0]


def ci_profile(partition: str) -> dict:
    """The cluster profile shrunk to a 2-CPU node without GPUs: its rules, keys and resource names stay."""
    profile = yaml.safe_load(PROFILE.read_text())
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_partition" in resources:
            resources["slurm_partition"] = partition
        if "mem_mb" in resources:
            resources["mem_mb"] = "1000 * attempt"
        resources.pop("gpu", None)
        resources.pop("slurm_account", None)
    profile.update({
        "jobs": 2,
        "retries": 0,  # a failure shows at once
        "latency-wait": 5,
        # No accounting database on the CI cluster: squeue answers (the default, sacct, would wait forever).
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 2,  # the plugin's defaults add 40 s before the first check
        "seconds-between-status-checks": 2,
    })
    return profile


def slice_workdir(path: Path) -> Path:
    """The core paper (digits) at smoke scale, its 6 runs in 2 batch jobs that SLURM runs side by side."""
    wd = make_workdir(path)
    config = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    config.update(papers=["core"], scale="smoke", batch_max_runs=3)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return wd


def results_by_run_id(workdir: Path) -> dict[str, dict]:
    runs = sorted((workdir / "results" / "smoke" / "runs").glob("*/result.json"))
    return {path.parent.name: json.loads(path.read_text()) for path in runs}


@pytest.fixture(scope="module")
def slurm_slice(tmp_path_factory):
    partition = default_partition()
    local = slice_workdir(tmp_path_factory.mktemp("local"))
    proc = run_snakemake(local, "--cores", "2", *SLICE)
    assert proc.returncode == 0, proc.stderr[-5000:]

    cluster = slice_workdir(tmp_path_factory.mktemp("slurm"))
    profile_dir = cluster / "ci_profile"
    profile_dir.mkdir()
    (profile_dir / "profile.yaml").write_text(yaml.safe_dump(ci_profile(partition)))
    proc = run_snakemake(cluster, "--workflow-profile", str(profile_dir), *SLICE)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    submitted = [(job, Path(log)) for job, log in SUBMITTED.findall(output)]
    return local, cluster, submitted


@pytest.mark.slurm
def test_slurm_runs_equal_local_runs_by_run_id(slurm_slice):
    local, cluster, submitted = slurm_slice
    expected, got = results_by_run_id(local), results_by_run_id(cluster)
    assert len(expected) == 6
    assert got.keys() == expected.keys()
    for run_id, result in got.items():
        assert result["deterministic"] == expected[run_id]["deterministic"], run_id


@pytest.mark.slurm
def test_the_batch_jobs_ran_as_slurm_jobs(slurm_slice):
    local, cluster, submitted = slurm_slice
    batch_jobs = {job for job, log in submitted if "rule_run_batch" in log.parts}
    assert len(batch_jobs) == 2, submitted
    # Each run records the SLURM job it ran in: the 2 submitted batch jobs, and none in the local slice.
    assert {r["volatile"]["provenance"]["slurm_job_id"] for r in results_by_run_id(cluster).values()} == batch_jobs
    assert {r["volatile"]["provenance"]["slurm_job_id"] for r in results_by_run_id(local).values()} == {None}


@pytest.mark.slurm
def test_report_rules_run_on_the_submitting_host(slurm_slice):
    local, cluster, submitted = slurm_slice
    assert (cluster / "paper" / "generated" / "smoke" / "core" / "verdicts.json").is_file()
    assert [log for job, log in submitted if "rule_paper_report" in log.parts] == []
