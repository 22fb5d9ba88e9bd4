"""Stopping cleanly, and leaving nothing behind when Snakemake is killed. Torch-free.

- `StopSignals`: SIGTERM/SIGUSR1 become a flag that a batch of runs checks after every step and every evaluation
  batch (optrepro.train, optrepro.runner); `Interrupted` is what a stopped batch raises.
- `optrepro supervise SNAKEMAKE ARGS...` (what `make smoke` and `make full` run): Snakemake in a process group of
  its own. When Snakemake ends for any reason, SIGKILL included, every process left in that group (batch jobs,
  report notebooks, latexmk and pdflatex) gets SIGTERM, then SIGKILL after a grace period, and is reaped before
  the command returns: a killed Snakemake leaves no orphan that goes on training or writes an output later.
  Before it starts Snakemake it clears a stale lock (`.snakemake/locks`), but only when no Snakemake process is
  alive in the working directory: Snakemake itself cannot tell a stale lock from a live one.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

LOCKS = Path(".snakemake") / "locks"
GRACE_S = 60.0  # time the group gets between SIGTERM (checkpoints are written) and SIGKILL
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36  # linux/prctl.h


class Interrupted(Exception):
    """SIGTERM/SIGUSR1 arrived: a checkpoint was written and the run stops; a later job resumes it."""


class StopSignals:
    """Turns SIGTERM/SIGUSR1 into a flag (SLURM sends them before a kill; `optrepro supervise` when Snakemake
    dies). The training loop checks it after every step and every evaluation batch.

    The first one entered in a process owns the flag; one entered inside it shares that flag. So a batch
    (optrepro.runner) that enters it around all its runs keeps a signal that arrives between two runs, or after
    a run's last check, and stops before its next run instead of training it to the end."""

    active: "StopSignals | None" = None

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if StopSignals.active is not None:
            return StopSignals.active
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        StopSignals.active = self
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        if StopSignals.active is not self:
            return
        StopSignals.active = None
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --- Snakemake's processes and its lock -----------------------------------------------------------------

def _is_snakemake(argv: Sequence[str]) -> bool:
    """Whether a command line runs Snakemake: `snakemake ...`, `python .../snakemake ...`, `python -m snakemake`."""
    if not argv:
        return False
    if Path(argv[0]).name == "snakemake":
        return True
    if Path(argv[0]).name.startswith("python"):
        rest = [a for a in argv[1:] if not a.startswith("-") or a == "-m"]
        return bool(rest) and (Path(rest[0]).name == "snakemake" or rest[:2] == ["-m", "snakemake"])
    return False


def snakemake_processes(workdir: Path) -> list[int]:
    """Live Snakemake processes whose working directory is `workdir` (those of other users are invisible)."""
    workdir = Path(workdir).resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if _is_snakemake([a for a in argv if a]) and Path(os.readlink(entry / "cwd")) == workdir:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":  # a zombie has exited: it holds nothing
                    found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def clear_stale_lock(workdir: Path = Path(".")) -> str:
    """Remove Snakemake's lock in `workdir` when no Snakemake process is alive there; say what was done."""
    locks = Path(workdir) / LOCKS
    if not locks.is_dir() or not any(locks.iterdir()):
        return "no lock"
    alive = snakemake_processes(Path(workdir))
    if alive:
        return f"locked by a live Snakemake (pid {', '.join(map(str, alive))}): left alone"
    shutil.rmtree(locks)
    return f"removed a stale lock ({locks}): no Snakemake process is alive in {Path(workdir).resolve()}"


# --- the supervisor ---------------------------------------------------------------------------------------

def _prctl(option: int, arg: int) -> bool:
    """Linux's prctl(option, arg); False where it is missing or refuses."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _become_subreaper() -> bool:
    """Orphans of the group are re-parented to this process (not PID 1), so it can reap them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _group_alive(pgid: int) -> bool:
    _reap()
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def end_group(pgid: int, grace_s: float = GRACE_S) -> bool:
    """SIGTERM every process left in group `pgid`, SIGKILL what is left after `grace_s`; wait until it is
    empty. True when something had been left."""
    if not _group_alive(pgid):
        return False
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return True
            time.sleep(0.1)
    return True


def _term_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the supervisor dies (a SIGKILL of the supervisor, e.g. by
    a `timeout -k` shorter than GRACE_S, would otherwise leave Snakemake and its jobs running). Linux only."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(command: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run `command` (a Snakemake command line) in a new process group; return its exit status (128 + signal
    when a signal ended it) once no process of the group is left."""
    print(f"optrepro supervise: {clear_stale_lock()}", file=sys.stderr, flush=True)
    _become_subreaper()
    proc = subprocess.Popen(list(command), process_group=0, preexec_fn=_term_with_parent)
    forwarded: list[int] = []

    def forward(signum, frame):  # Ctrl-C, a terminal hang-up, a kill of make: to the whole group
        forwarded.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                status = proc.wait()
                break
            except InterruptedError:  # pragma: no cover (PEP 475 retries; kept for old kernels)
                continue
        if end_group(proc.pid, grace_s):
            print("optrepro supervise: Snakemake ended with jobs still running: they were stopped "
                  "(runs in progress wrote a checkpoint)", file=sys.stderr, flush=True)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if status < 0:
        print(f"optrepro supervise: Snakemake was killed by signal {-status}", file=sys.stderr, flush=True)
        return 128 - status
    return status


def add_commands(sub) -> None:
    import argparse

    p = sub.add_parser("supervise", help="run Snakemake in a process group it stops and reaps when Snakemake "
                                         "ends (no orphans); clear a stale lock first")
    p.add_argument("command", help="the Snakemake executable")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    p.add_argument("--grace", type=float, default=GRACE_S, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda a: supervise([a.command, *a.args], a.grace))
