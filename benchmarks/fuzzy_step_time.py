"""Step time of the fuzzy method and its prior art against AdamW on EfficientNet-B3 (the fuzzy section's device
check; `python benchmarks/gpu_check.py fuzzy` runs it on CUDA).

    python benchmarks/fuzzy_step_time.py                                   # CUDA, efficientnet_b3, batch 64, 64 px
    python benchmarks/fuzzy_step_time.py --image-size 300                  # B3's own input size
    python benchmarks/fuzzy_step_time.py --device cpu --model test_efficientnet --batch-size 16 --steps 10

One whole training step, as src/optrepro/train.py takes it, on one generated batch (random images, random labels
of 200 classes, the same batch every step): a StepClosure over the batch, `optimizer.step(closure)` for the
closure optimizers (the fuzzy method's probe is a second forward and backward in fp32; AdaHessian's closure keeps
the graph for its Hessian-vector product), the closure then `optimizer.step()` for AdamW. Each optimizer trains
its own copy of the model from the same initialisation. Steps are interleaved round-robin (one step of each
optimizer in turn, so drift hits all alike) and timed with a device synchronisation; the table gives the median
over `--steps` after `--warmup`, the ratio to AdamW, the mean passes per step from the closure's counters
(AdaHessian's Hessian-vector product, a double backward, is not a pass they count), and on CUDA
the peak memory of each optimizer's own steps.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from optrepro import optim
from optrepro.closure import NoiseRNG, StepClosure
from optrepro.problems.base import Output
from optrepro.problems.models.library import timm_model

# (label, registry name, hyperparameters): registry defaults, total_steps for the controller
ARMS = (("adamw", "adamw", {}),
        ("fuzzy_second_order", "fuzzy_second_order", {"total_steps": 1000}),
        ("fuzzy, hess_every 10", "fuzzy_second_order", {"total_steps": 1000, "hess_every": 10}),
        ("fd_second_order", "fd_second_order", {}),
        ("adahessian", "adahessian", {}))


def forward_for(precision: str, device: torch.device):
    def forward(model, batch, carry=None, full_precision=False):
        x, y = batch
        enabled = precision == "bf16" and not full_precision
        with torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext():
            logits = model(x)
        return Output(loss=F.cross_entropy(logits.float(), y), sums={}, count=len(y))
    return forward


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="efficientnet_b3")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = timm_model(args.model, 200).to(device).train()
    gen = torch.Generator(device="cpu").manual_seed(1)
    batch = (torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen).to(device),
             torch.randint(0, 200, (args.batch_size,), generator=gen).to(device))
    forward = forward_for(args.precision, device)
    noise = NoiseRNG(device)
    runs = []
    for label, name, hparams in ARMS:
        model = copy.deepcopy(base)
        info = optim.info(name)
        runs.append({"label": label, "name": name, "info": info, "model": model,
                     "opt": optim.build(name, model, **hparams), "times": [], "passes": (0, 0), "peak": 0})
    for i in range(args.warmup + args.steps):
        for run in runs:
            closure = StepClosure(run["model"], forward, [batch], trial_batchnorm=run["info"].trial_batchnorm_for({}),
                                  noise=noise if run["info"].requires_closure else None)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = time.perf_counter()
            if run["info"].requires_closure:
                run["opt"].step(closure)
            else:
                closure()
                run["opt"].step()
            sync(device)
            if i >= args.warmup:
                run["times"].append(time.perf_counter() - start)
                f, b = run["passes"]
                run["passes"] = (f + closure.forward_passes, b + closure.backward_passes)
                if device.type == "cuda":
                    run["peak"] = max(run["peak"], torch.cuda.max_memory_allocated(device))
    reference = statistics.median(runs[0]["times"])
    params = sum(p.numel() for p in base.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{args.model} ({params / 1e6:.1f} M parameters), batch {args.batch_size} x {args.image_size}px, "
          f"{args.precision}, {where}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"median of {args.steps} steps after {args.warmup}\n")
    print("| optimizer | ms/step | / AdamW | forward/step | backward/step | peak memory (GB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for run in runs:
        median = statistics.median(run["times"])
        peak = f"{run['peak'] / 1e9:.2f}" if device.type == "cuda" else "--"
        f, b = (n / args.steps for n in run["passes"])
        print(f"| {run['label']} | {1000 * median:.1f} | {median / reference:.2f} | {f:.2f} | {b:.2f} | {peak} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
