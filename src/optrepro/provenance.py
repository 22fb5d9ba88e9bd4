"""Where a number came from: code commit, packages, torch/CUDA, hardware, threads (result.json's volatile block)."""
from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("optrepro", "torch", "torchvision", "numpy", "timm", "transformers", "snakemake")


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    root = Path(__file__).resolve().parents[2]
    git = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            git = {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"git": git, "packages": versions, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def provenance(device=None) -> dict:
    """The volatile facts of a run, asked for once at its end. `optimizer_step` says whether the run's optimizer
    steps ran compiled (optim/_compiled.py's count since the previous provenance record): a speed setting that
    changes no number beyond rounding, so it lives here and not in the run id."""
    import torch

    from optrepro.optim import _compiled

    info = dict(_static())
    compiled = _compiled.take_call_counts()
    info["optimizer_step"] = {"compiled": bool(compiled), "compiled_calls": compiled}
    info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
                     "deterministic": torch.are_deterministic_algorithms_enabled()}
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["torch"]["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info
