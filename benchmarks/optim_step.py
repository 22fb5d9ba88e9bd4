"""Optimizer step time on ~10 M parameters in ~100 tensors, as ratios to torch's Adam measured in the same process.

    python benchmarks/optim_step.py                       # every registered optimizer that needs no closure
    python benchmarks/optim_step.py adam adabelief        # a subset
    python benchmarks/optim_step.py --smoke               # 1 M parameters in 20 tensors, fewer steps

Only the step is timed: gradients are fixed random tensors set once (no forward/backward). Prints a markdown
table: ms per step, the ratio to torch's fastest Adam (for-loop, foreach and fused are measured), and, where
torch implements the same algorithm, the ratio to torch's fastest implementation of it.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from optrepro import optim


def make_model(total: int, tensors: int, device: str, seed: int = 0) -> nn.Module:
    """tensors/2 Linear layers (weight + bias) of equal width, about `total` parameters, with fixed gradients."""
    layers = tensors // 2
    width = int((total / layers) ** 0.5)
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return model


def torch_fastest(name: str):
    """Factories for torch's implementations of the same algorithm as `name` (None: torch has none)."""
    adam = lambda **kw: (lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, **kw))  # noqa: E731
    table = {
        "sgd": lambda **kw: (lambda m: torch.optim.SGD(m.parameters(), lr=1e-2, **kw)),
        "momentum": lambda **kw: (lambda m: torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.99, **kw)),
        "nag": lambda **kw: (lambda m: torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.99, nesterov=True, **kw)),
        "adam": adam,
        "amsgrad": lambda **kw: (lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, amsgrad=True, **kw)),
        "nadam": lambda **kw: (lambda m: torch.optim.NAdam(m.parameters(), lr=1e-3, **kw)),
        "radam": lambda **kw: (lambda m: torch.optim.RAdam(m.parameters(), lr=1e-3, **kw)),
        "adadelta": lambda **kw: (lambda m: torch.optim.Adadelta(m.parameters(), lr=1e-3, **kw)),
        "adagrad": lambda **kw: (lambda m: torch.optim.Adagrad(m.parameters(), lr=1e-2, **kw)),
        "rmsprop": lambda **kw: (lambda m: torch.optim.RMSprop(m.parameters(), lr=1e-3, **kw)),
    }
    fused = {"sgd", "momentum", "nag", "adam", "amsgrad", "adagrad"}
    if name not in table:
        return None
    variants = {"for-loop": table[name](foreach=False), "foreach": table[name](foreach=True)}
    if name in fused:
        variants["fused"] = table[name](fused=True)
    return variants


def time_interleaved(model: nn.Module, makers: dict, steps: int, repeats: int, device: str) -> dict[str, float]:
    """Seconds per step for each optimizer: the minimum over `repeats` blocks of `steps` steps, the blocks of
    all optimizers interleaved so that load from other processes hits them alike (this CPU is shared)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    optimizers = {label: make(model) for label, make in makers.items()}
    for opt in optimizers.values():  # warm-up: state allocation, first-call dispatch
        for _ in range(2):
            opt.step()
    samples: dict[str, list[float]] = {label: [] for label in optimizers}
    for _ in range(repeats):
        for label, opt in optimizers.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                opt.step()
            sync()
            samples[label].append((time.perf_counter() - start) / steps)
    return {label: min(values) for label, values in samples.items()}


def main(argv=None) -> None:
    names_default = [n for n in optim.available() if not optim.info(n).requires_closure]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=names_default,
                        help="registered optimizer names (default: all that need no closure)")
    parser.add_argument("--params", type=float, default=10e6, help="total parameters (default 1e7)")
    parser.add_argument("--tensors", type=int, default=100, help="number of tensors (default 100)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per optimizer; the minimum is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="1e6 parameters in 20 tensors, 2 blocks x 3 steps")
    args = parser.parse_args(argv)
    for name in args.names:
        info = optim.info(name)  # unknown names fail here, with the valid choices
        if info.requires_closure:
            parser.error(f"{name} requires a closure (it evaluates the loss); this benchmark times bare steps")
    if args.smoke:
        args.params, args.tensors, args.steps, args.repeats = 1e6, 20, 3, 2
    torch.set_num_threads(args.threads)
    model = make_model(int(args.params), args.tensors, args.device)
    n_params = sum(p.numel() for p in model.parameters())

    def run(makers: dict) -> dict[str, float]:
        return time_interleaved(model, makers, args.steps, args.repeats, args.device)

    adam = run(torch_fastest("adam"))
    adam_label = min(adam, key=adam.get)
    adam_make = torch_fastest("adam")[adam_label]
    rows = []
    for name in args.names:
        reference = torch_fastest(name) or {}
        makers = {"ours": (lambda model, name=name: optim.build(name, model)),
                  "adam": adam_make, **{f"ref {label}": make for label, make in reference.items()}}
        timings = run(makers)
        ref = {label[4:]: t for label, t in timings.items() if label.startswith("ref ")}
        ref_label = min(ref, key=ref.get) if ref else ""
        rows.append((name, timings["ours"], timings["adam"], ref_label, ref.get(ref_label)))

    print(f"device {args.device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"threads {args.threads}, {n_params / 1e6:.2f} M parameters in {args.tensors} tensors, "
          f"min of {args.repeats} interleaved blocks x {args.steps} steps; compile: off\n")
    print("torch Adam: " + ", ".join(f"{label} {s * 1e3:.2f} ms" for label, s in adam.items())
          + f"; each row's ratio uses torch Adam {adam_label} timed in the same interleaved blocks\n")
    print("| optimizer | ms/step | / torch's fastest Adam | torch's fastest same algorithm | / that |")
    print("|---|---:|---:|---|---:|")
    for name, seconds, adam_seconds, ref_label, ref_seconds in rows:
        same = f"{ref_label} {ref_seconds * 1e3:.2f} ms" if ref_seconds else "none"
        ratio = f"{seconds / ref_seconds:.2f}" if ref_seconds else "-"
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / adam_seconds:.2f} | {same} | {ratio} |")


if __name__ == "__main__":
    main()
