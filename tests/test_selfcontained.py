"""A clone of the repository is self-contained: nothing tracked points at notes outside it."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Assembled here so that this file does not match its own pattern.
OUTSIDE_NOTES = "|".join([r"\.\./" + "shared", "DESIGN" + r"\.md", "REPLICATION" + r"\.md", "dos" + "sier"])


def test_no_tracked_file_outside_ci_cites_the_briefing_notes():
    proc = subprocess.run(["git", "grep", "-nIE", OUTSIDE_NOTES, "--", ":!.ci"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode in (0, 1), proc.stderr  # 1: no match
    assert proc.stdout == "", "these lines cite notes a user's clone does not have:\n" + proc.stdout


def test_no_tracked_file_holds_merge_conflict_markers():
    # A merge committed with its markers once broke .ci/run's syntax; catch it before CI does.
    markers = "^(" + "<" * 7 + " |" + ">" * 7 + " )"
    proc = subprocess.run(["git", "grep", "-nIE", markers], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout == "", "unresolved merge conflicts:\n" + proc.stdout


def test_ci_scripts_parse():
    for script in [ROOT / ".ci" / "run", ROOT / ".ci" / "slurm.sh"]:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
