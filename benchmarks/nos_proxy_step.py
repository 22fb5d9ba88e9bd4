"""Does the NOS search gain from the compiled genome step? The proxy's whole training step, eager vs compiled.

    python benchmarks/nos_proxy_step.py                    # CPU, one thread
    python benchmarks/nos_proxy_step.py --device cuda      # (benchmarks/gpu_check.py section "nosproxy")

The search trains every genome on the evolution proxy (ConvNet base 48, batch 128, 32x32 images): up to 7 sweep
runs of 800 steps and a final run of 16,000, all in one run job, so a compiled step pays its compile time once per
genome. For Adam's genome, Opt1, Opt10 and the first searched genomes of the pool draw (search seed 0), this times
in interleaved blocks (optim_step.time_interleaved) torch's fused Adam, the genome's eager step (the device's
default path) and its compiled step, and one forward + backward of the proxy. It prints per genome: ms per step,
the ratio to fused Adam, the optimizer's share of a whole training step, the compile time, and the break-even:
the steps after which the compiled step has paid for its compilation (inf when it is not faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from optim_step import time_interleaved  # noqa: E402

from optrepro.nos import integrity, search  # noqa: E402
from optrepro.nos.space import final_genome, genome_to_json  # noqa: E402
from optrepro.optim.nos_expr import NOSGenome  # noqa: E402
from optrepro.problems.models.keras_nets import NOSConvNet  # noqa: E402

STEPS_PER_EVALUATION = 7 * 800 + 16_000  # the evolution proxy's protocol at most


def genomes(searched: int) -> dict[str, dict]:
    out = {name: genome_to_json(final_genome(name)) for name in ("adam", "opt1", "opt10")}
    rng = search.rng_for(0, "genomes", "pool")  # the pool's draw stream of the main search (seed 0)
    check = integrity.checker()
    for k in range(searched):
        out[f"pool-{k}"] = genome_to_json(search.random_genome(rng, check).to_genome())
    return out


def forward_backward_seconds(model: nn.Module, device: str, batch: int, repeats: int = 20) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for _ in range(repeats + 3):
        sync()
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        sync()
        times.append(time.perf_counter() - start)
    return min(times[3:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--searched", type=int, default=4, help="searched genomes from the pool draw")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = NOSConvNet(48, 10).to(args.device)
    fwd_bwd = forward_backward_seconds(model, args.device, args.batch)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"proxy ConvNet base 48: {n_params} parameters in {len(list(model.parameters()))} tensors; "
          f"forward + backward of batch {args.batch}: {fwd_bwd * 1e3:.2f} ms ({args.device}, {args.threads} thread(s))")
    print("| genome | fused Adam ms | eager ms | eager / Adam | compiled ms | compiled / Adam | optimizer share "
          "eager, compiled | compile s | break-even steps | expression |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, genome in genomes(args.searched).items():
        made = {}

        def make(compile):
            return lambda m: made.setdefault(compile, NOSGenome(m.parameters(), genome=genome, lr=1e-3,
                                                                total_steps=16_000, warmup_steps=800,
                                                                compile=compile))

        t = time_interleaved(model, {"adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, fused=True),
                                     "eager": make(False), "compiled": make(True)}, 10, 5, args.device)
        gain = t["eager"] - t["compiled"]
        compile_s = made[True].compile_seconds
        even = compile_s / gain if gain > 0 else float("inf")
        share = lambda s: s / (fwd_bwd + s)  # noqa: E731
        print(f"| {label} | {t['adam'] * 1e3:.3f} | {t['eager'] * 1e3:.3f} | {t['eager'] / t['adam']:.2f} | "
              f"{t['compiled'] * 1e3:.3f} | {t['compiled'] / t['adam']:.2f} | {share(t['eager']):.1%}, "
              f"{share(t['compiled']):.1%} | {compile_s:.1f} | {even:,.0f} | `{made[False].genome.text()}` |",
              flush=True)
    print(f"\nsteps per evolution-proxy evaluation, at most: {STEPS_PER_EVALUATION}")


if __name__ == "__main__":
    main()
