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
