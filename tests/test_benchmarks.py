"""The device checks' scripts run, on a CPU at toy sizes: a GPU lease is short, and a script that breaks there
costs the lease (benchmarks/gpu_check.py runs them on CUDA at full size)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def table_rows(out: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith(f"| {first_cell}")]


def test_alsals_gpt2_counts_passes_and_traces_the_step_size():
    out = run_script("alsals_gpt2.py", "--device", "cpu", "--batch-size", "1", "--block-size", "16",
                     "--steps", "2", "--warmup", "1")
    (adam,), (alsals,) = table_rows(out, "adam"), table_rows(out, "alsals")
    assert float(adam[3]) == 1.0  # one forward+backward per Adam step
    assert float(alsals[3]) > 1.0  # plus the search's forward-only passes
    trace = [row for row in table_rows(out, "") if row[0].isdigit()]
    assert [int(row[0]) for row in trace] == [1, 2, 3] and all(float(row[1]) > 0 for row in trace)


@pytest.mark.parametrize("script, args, first_cell", [
    ("epoch_time.py", ["--problems", "fmnist_2c2d", "--examples", "10256", "--repeats", "1"], "fmnist_2c2d"),
    ("concurrent_runs.py", ["--concurrent", "1", "--epochs", "1", "--examples", "10256"], "1"),
])
def test_device_check_scripts_run_on_generated_data(script, args, first_cell):
    (row,) = table_rows(run_script(script, "--device", "cpu", *args), first_cell)
    assert all(cell for cell in row)
    if script == "epoch_time.py":  # 256 training images after the 10,000 of validation: 2 steps of 128
        assert row[1] == "2" and float(row[2]) > 0
    else:
        assert row[-1] == "ok" and float(row[2]) > 0
