"""Every GPU check in one command (`make gpu-check`), no network needed; each section runs under its own time limit
(38 minutes in all at most; on an H200, tests + alsals + step took about a minute).

Sections (`python benchmarks/gpu_check.py tests step` runs a subset, for machines that limit a command's time):
  tests        the GPU-marked tests (tests/test_gpu.py: every optimizer on CUDA, determinism, bf16, the fuzzy
               probe in fp32, no host-device synchronisation between log points)
  step         the optimizer step benchmark on CUDA (benchmarks/optim_step.py)
  nos          the NOS genomes' compiled path on CUDA (the 1.5x target one CPU thread cannot show)
  nosproxy     the NOS search proxy's training step with the genome step eager and compiled
  data         the input pipeline against pre-staged tensors (benchmarks/data_pipeline.py)
  caadam       CaAdam's ResNet-20 seconds per epoch (benchmarks/caadam_epoch.py)
  fuzzy        the fuzzy method's whole training step against AdamW on EfficientNet-B3 (fuzzy_step_time.py)
  alsals       GPT-2 small on generated tokens, ALSALS against Adam (benchmarks/alsals_gpt2.py)
  epochs       seconds per epoch of fmnist_2c2d and cifar10_3c3d (benchmarks/epoch_time.py)
  concurrency  cifar10_3c3d runs per hour at 1, 2, 4 and 8 at once (benchmarks/concurrent_runs.py)
Writes benchmarks/gpu/<torch>-cuda<version>-<gpu>[-<sections>].md, labelled with the torch and CUDA versions
found, and prints it. Use it on a machine that has torch and a GPU: `make gpu-check` installs carried
pure-Python wheels from .whl/ with --no-deps first.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(title: str, cmd: list[str], timeout: int) -> str:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, status = proc.stdout + proc.stderr, f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as exc:
        out, status = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else str(exc.stdout or ""), "timed out"
    elapsed = time.perf_counter() - t0
    print(f"== {title}: {status} in {elapsed:.0f} s", flush=True)
    return f"## {title}\n\nCommand: `{' '.join(cmd)}` — {status} in {elapsed:.0f} s\n\n```\n{out[-6000:]}\n```\n"


SECTIONS = ("tests", "step", "nos", "nosproxy", "data", "caadam", "fuzzy", "alsals", "epochs", "concurrency")
NOS_NAMES = [f"nos_opt{i}" for i in range(1, 11)] + [f"nos_a{i}" for i in range(1, 6)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", choices=SECTIONS, default=list(SECTIONS),
                        help="which checks to run (default: all)")
    wanted = parser.parse_args(argv).sections
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device; nothing to check", file=sys.stderr)
        return 1
    gpu = torch.cuda.get_device_name(0)
    label = f"torch{torch.__version__}-cuda{torch.version.cuda}-{re.sub(r'[^A-Za-z0-9]+', '_', gpu)}"
    py = sys.executable
    sections = [f"# GPU check: {label}\n\ntorch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"cuDNN {torch.backends.cudnn.version()}, {gpu}\n"]
    if "tests" in wanted:
        sections.append(run("GPU tests", [py, "-m", "pytest", "-m", "gpu", "-q", "tests/test_gpu.py"], 240))
    if "step" in wanted:
        sections.append(run("Optimizer step time on CUDA", [py, "benchmarks/optim_step.py", "--device", "cuda"],
                            180))
    if "nos" in wanted:
        sections.append(run("NOS genomes compiled on CUDA", [py, "benchmarks/optim_step.py", "--device", "cuda",
                                                             "--compile", "--repeats", "3", *NOS_NAMES], 240))
    if "nosproxy" in wanted:  # whether the search's runs gain from the compiled step (RESULTS.md, NOS search)
        sections.append(run("NOS search proxy: whole training step, eager vs compiled genome step",
                            [py, "benchmarks/nos_proxy_step.py", "--device", "cuda"], 240))
    if "data" in wanted and (ROOT / "benchmarks" / "data_pipeline.py").exists():
        sections.append(run("Input pipeline throughput", [py, "benchmarks/data_pipeline.py", "--device", "cuda"], 90))
    if "caadam" in wanted:
        sections.append(run("CaAdam ResNet-20 seconds per epoch on CUDA", [py, "benchmarks/caadam_epoch.py",
                                                                        "--device", "cuda"], 300))
    if "fuzzy" in wanted:  # the fuzzy section's device check: a whole step vs AdamW on EfficientNet-B3, batch 64
        sections.append(run("Fuzzy method vs AdamW: whole training step, EfficientNet-B3 at batch 64",
                            [py, "benchmarks/fuzzy_step_time.py", "--device", "cuda"], 240))
    if "alsals" in wanted:
        sections.append(run("ALSALS vs Adam: GPT-2 small on generated tokens", [py, "benchmarks/alsals_gpt2.py"], 240))
    if "epochs" in wanted:
        sections.append(run("Crowded Valley image problems: seconds per epoch", [py, "benchmarks/epoch_time.py"], 180))
    if "concurrency" in wanted:
        sections.append(run("cifar10_3c3d runs per hour at 1, 2, 4 and 8 at once",
                            [py, "benchmarks/concurrent_runs.py"], 300))
    report = "\n".join(sections)
    suffix = "" if set(wanted) == set(SECTIONS) else "-" + "-".join(wanted)
    out = ROOT / "benchmarks" / "gpu" / f"{label}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
