"""The workflow profile profiles/default is in force: Snakemake finds it next to the Snakefile from any working
directory, and its gpu_slots cap keeps two GPU jobs from running at the same time."""
import re
import subprocess

from test_workflow import BIN, ROOT, make_workdir, snakemake

DEFAULT_PROFILE = ROOT / "profiles" / "default"
GPU_CAP = re.compile(r"Provided resources: .*gpu_slots\W+1\b")


def test_snakemake_loads_the_default_profile_next_to_the_snakefile(tmp_path):
    # The working directory is a copy without profiles/: only the Snakefile's location leads to the profile.
    wd = make_workdir(tmp_path)
    target = "paper/build/smoke/main.pdf"  # the core section's smoke DAG: a few jobs
    loaded = snakemake(wd, target, "--config", "scale=smoke", "papers=[core]")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert f"workflow specific profile {DEFAULT_PROFILE} " in loaded.stderr
    assert GPU_CAP.search(loaded.stdout + loaded.stderr), loaded.stderr[-3000:]

    (wd / target).unlink()
    without = snakemake(wd, target, "--config", "scale=smoke", "papers=[core]", "--workflow-profile", "none")
    assert without.returncode == 0, without.stderr[-3000:]
    assert "gpu_slots" not in without.stdout + without.stderr


GPU_JOBS = """
rule all:
    input: "a.times", "b.times"

rule gpu_job:
    output: "{name}.times"
    resources: gpu_slots=1
    shell: "date +%s.%N > {output}; sleep 2; date +%s.%N >> {output}"
"""


def gpu_job_intervals(tmp_path, *args: str) -> list[tuple[float, float]]:
    tmp_path.mkdir()
    (tmp_path / "Snakefile").write_text(GPU_JOBS)
    proc = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--workflow-profile", str(DEFAULT_PROFILE), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(map(float, (tmp_path / f"{name}.times").read_text().split())) for name in "ab"]


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_the_default_profile_runs_one_gpu_job_at_a_time(tmp_path):
    assert not overlap(*gpu_job_intervals(tmp_path / "capped"))
    # The same two jobs with two slots share the 2 cores: the cap, not the cores, kept them apart above.
    assert overlap(*gpu_job_intervals(tmp_path / "two_slots", "--resources", "gpu_slots=2"))
