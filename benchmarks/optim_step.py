"""Optimizer step time on ~10 M parameters in ~100 tensors, as ratios to torch's Adam measured in the same process.

    python benchmarks/optim_step.py                       # every registered optimizer that needs no closure
    python benchmarks/optim_step.py adam adabelief        # a subset
    python benchmarks/optim_step.py --smoke               # 1 M parameters in 20 tensors, fewer steps
    python benchmarks/optim_step.py --compile adabelief   # also the compiled path (factories taking compile=)
    python benchmarks/optim_step.py --compile --cold-compile ...   # with an empty inductor cache

Only the step is timed: gradients are fixed random tensors set once (no forward/backward). Prints a markdown
table: ms per step, the ratio to torch's fastest Adam (for-loop, foreach and fused are measured), and, where
torch implements the same algorithm, the ratio to torch's fastest implementation of it. With --compile, rows whose
factory takes `compile` also time the compiled path in the same interleaved blocks, and report its compile time
(seconds spent compiling kernels first needed by that row, in this process; "cold" with an empty inductor cache).
"""
from __future__ import annotations

import argparse
import inspect
import os
import platform
import sys
import tempfile
import time

if "--cold-compile" in sys.argv:  # before torch is imported: inductor reads its cache location once
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="optrepro-inductor-")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from optrepro import optim  # noqa: E402
from optrepro.optim import _compiled  # noqa: E402
from optrepro.registry import import_target  # noqa: E402


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


WARMUP_STEPS = 5  # >= Lookahead's default k, so its synchronisation kernel is compiled before timing


def compiled_maker(name: str):
    """A factory for `name`'s compiled path, or None where its factory has no `compile` argument."""
    factory = import_target(optim.info(name).target)
    if "compile" not in inspect.signature(factory).parameters:
        return None
    hparams = optim.resolve_hparams(name, {})
    if hparams.get("total_steps", 0) is None:
        hparams["total_steps"] = 1000
    return lambda model: factory(model.parameters(), **hparams, compile=True)


def time_interleaved(model: nn.Module, makers: dict, steps: int, repeats: int, device: str) -> dict[str, float]:
    """Seconds per step for each optimizer: the minimum over `repeats` blocks of `steps` steps, the blocks of
    all optimizers interleaved so that load from other processes hits them alike (this CPU is shared).

    Every block starts from the model's parameters as they were on entry: the optimizers share the model, and
    the speed of exp, asinh and the like depends on the values they meet, so without the reset a row's time
    would depend on how far the rows and optimizers before it had moved the parameters."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    params = list(model.parameters())
    start_values = [p.detach().clone() for p in params]

    def reset() -> None:
        with torch.no_grad():
            torch._foreach_copy_(params, start_values)

    optimizers = {label: make(model) for label, make in makers.items()}
    for opt in optimizers.values():  # warm-up: state allocation, first-call dispatch, compilation
        reset()
        for _ in range(WARMUP_STEPS):
            opt.step()
    samples: dict[str, list[float]] = {label: [] for label in optimizers}
    for _ in range(repeats):
        for label, opt in optimizers.items():
            reset()
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
    parser.add_argument("--compile", action="store_true",
                        help="also time the compiled path (compile=True) of factories that take it")
    parser.add_argument("--cold-compile", action="store_true",
                        help="with --compile: an empty inductor cache, so compile times are cold")
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
        # optimizers whose internals are functions of t/T (NOS decays) need a run length: 1000 steps
        length = {"total_steps": 1000} if optim.info(name).defaults.get("total_steps", 0) is None else {}
        makers = {"ours": (lambda model, name=name, length=length: optim.build(name, model, **length)),
                  "adam": adam_make, **{f"ref {label}": make for label, make in reference.items()}}
        compiled = compiled_maker(name) if args.compile else None
        if compiled is not None:
            makers["compiled"] = compiled
        compile_before = _compiled.total_compile_seconds()
        timings = run(makers)
        compile_seconds = _compiled.total_compile_seconds() - compile_before
        ref = {label[4:]: t for label, t in timings.items() if label.startswith("ref ")}
        ref_label = min(ref, key=ref.get) if ref else ""
        rows.append((name, timings, compile_seconds, ref_label, ref.get(ref_label)))

    cache = "cold (empty inductor cache)" if args.cold_compile else "warm or cold (inductor cache as found)"
    print(f"device {args.device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"threads {args.threads}, {n_params / 1e6:.2f} M parameters in {args.tensors} tensors, "
          f"min of {args.repeats} interleaved blocks x {args.steps} steps; "
          f"compile: {'on, ' + cache if args.compile else 'off'}\n")
    print("torch Adam: " + ", ".join(f"{label} {s * 1e3:.2f} ms" for label, s in adam.items())
          + f"; each row's ratio uses torch Adam {adam_label} timed in the same interleaved blocks\n")
    compiled_columns = " compiled ms/step | / torch's fastest Adam | compile s |" if args.compile else ""
    print(f"| optimizer | ms/step | / torch's fastest Adam |{compiled_columns} torch's fastest same algorithm "
          f"| / that |")
    print("|---|---:|---:|" + ("---:|---:|---:|" if args.compile else "") + "---|---:|")
    for name, timings, compile_seconds, ref_label, ref_seconds in rows:
        seconds, adam_seconds = timings["ours"], timings["adam"]
        same = f"{ref_label} {ref_seconds * 1e3:.2f} ms" if ref_seconds else "none"
        ratio = f"{seconds / ref_seconds:.2f}" if ref_seconds else "-"
        compiled = ""
        if args.compile:
            if "compiled" in timings:
                compiled = (f" {timings['compiled'] * 1e3:.2f} | {timings['compiled'] / adam_seconds:.2f} "
                            f"| {compile_seconds:.1f} |")
            else:
                compiled = " - | - | - |"
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / adam_seconds:.2f} |{compiled} {same} | {ratio} |")


if __name__ == "__main__":
    main()
