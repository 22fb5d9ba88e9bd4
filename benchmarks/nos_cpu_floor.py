"""How fast could the NOS genomes that miss the 1.5x target run on this CPU? A lower bound, by hand.

    python benchmarks/nos_cpu_floor.py            # 10 M parameters in 100 tensors, one thread

For the genomes whose compiled step costs more than 1.5 fused-Adam steps on one CPU thread (benchmarks/RESULTS.md),
this writes each genome's whole step as one C loop (EMAs, expression, update: one pass over memory, as a perfect
fusing compiler would emit it), vectorised with glibc's AVX-512 math library (libmvec: asinhf, tanhf, atanf,
expf, logf), builds it with gcc, checks one step against the eager NOSExpression, and times it against torch's
fused Adam and the compiled NOSExpression in interleaved blocks (optim_step.time_interleaved), printing each
genome's ratio to fused Adam and the compiled step's ratio to the hand-fused floor. A genome whose hand-fused loop
misses 1.5x is out of reach of any fusing compiler that calls this machine's vector math.

Measurement only: the project's optimizers stay on torch's paths. Opt10 is left out: no vector i1e exists here
(ATen's scalar i1e alone costs about two fused-Adam steps per call; RESULTS.md). Needs gcc and glibc >= 2.35
on x86-64 with AVX-512; exits with a message otherwise.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from optim_step import make_model, time_interleaved  # noqa: E402

from optrepro import optim  # noqa: E402
from optrepro.registry import import_target  # noqa: E402

# Each genome's step, as in nos_expr.evaluate_genome with its decays off (the default): v, s the moment EMAs,
# sc the step's scalars. lerp(a, b, w) = a + w (b - a), as _foreach_lerp. Buffers in the order of `STATE`.
C_SOURCE = r"""
#include <stdint.h>
#include <math.h>
#define VECTOR_MATH _Pragma("omp declare simd simdlen(16) notinbranch")
VECTOR_MATH float asinhf(float);
VECTOR_MATH float tanhf(float);
VECTOR_MATH float atanf(float);
VECTOR_MATH float expf(float);
VECTOR_MATH float logf(float);
#define LERP(a, b, w) ((a) + (w) * ((b) - (a)))
#define CLIP(x, bound) ((x) < (bound) ? ((x) > -(bound) ? (x) : -(bound)) : (bound))

/* opt7: p -= lr tanh(asinh(qhm_g)); opt8: asinh outside. sc = (1 - 0.9^(t+1), lr) */
void opt7(int64_t n, float *restrict p, const float *restrict g, float *restrict v, const float *sc) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float vi = LERP(v[i], g[i], 0.1f);
        v[i] = vi;
        p[i] -= sc[1] * tanhf(asinhf(LERP(g[i], vi / sc[0], 0.7f)));
    }
}
void opt8(int64_t n, float *restrict p, const float *restrict g, float *restrict v, const float *sc) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float vi = LERP(v[i], g[i], 0.1f);
        v[i] = vi;
        p[i] -= sc[1] * asinhf(asinhf(LERP(g[i], vi / sc[0], 0.7f)));
    }
}
/* opt9: u = g exp(atan(qhm_g2)); nesterov ("final"): b <- mu b - lr u; p += mu b - lr u. sc = (1 - 0.99^(t+1), lr, mu) */
void opt9(int64_t n, float *restrict p, const float *restrict g, float *restrict s, float *restrict b,
          const float *sc) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float g2 = g[i] * g[i];
        float si = LERP(s[i], g2, 0.01f);
        s[i] = si;
        float u = g[i] * expf(atanf(LERP(g2, si / sc[0], 0.95f)));
        float bi = sc[2] * b[i] - sc[1] * u;
        b[i] = bi;
        p[i] += sc[2] * bi - sc[1] * u;
    }
}
/* a3: p -= lr clip(v_hat, sqrt|log(|s_hat| + 1e-7)|). sc = (1 - 0.9^(t+1), 1 - 0.99^(t+1), lr) */
void a3(int64_t n, float *restrict p, const float *restrict g, float *restrict v, float *restrict s,
        const float *sc) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float vi = LERP(v[i], g[i], 0.1f), si = LERP(s[i], g[i] * g[i], 0.01f);
        v[i] = vi;
        s[i] = si;
        float bound = sqrtf(fabsf(logf(fabsf(si / sc[1]) + 1e-7f)));
        float vh = vi / sc[0];
        p[i] -= sc[2] * CLIP(vh, bound);
    }
}
/* a5: c = clip(v_hat, sqrt|s_hat| + 1e-7); p -= lr c / max(||c||, 1): two passes, as any fused form needs.
   a5_norm advances the EMAs and returns ||c||^2; a5_update recomputes c and applies it. */
double a5_norm(int64_t n, const float *restrict g, float *restrict v, float *restrict s, const float *sc) {
    float total = 0.0f;
    #pragma omp simd reduction(+:total)
    for (int64_t i = 0; i < n; i++) {
        float vi = LERP(v[i], g[i], 0.1f), si = LERP(s[i], g[i] * g[i], 0.01f);
        v[i] = vi;
        s[i] = si;
        float bound = sqrtf(fabsf(si / sc[1])) + 1e-7f, vh = vi / sc[0];
        float c = CLIP(vh, bound);
        total += c * c;
    }
    return total;
}
void a5_update(int64_t n, float *restrict p, const float *restrict v, const float *restrict s, const float *sc,
               float inv_norm) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float bound = sqrtf(fabsf(s[i] / sc[1])) + 1e-7f, vh = v[i] / sc[0];
        p[i] -= sc[2] * CLIP(vh, bound) * inv_norm;
    }
}
"""

STATE = {"opt7": ("v",), "opt8": ("v",), "opt9": ("s", "momentum_buffer"), "a3": ("v", "s"), "a5": ("v", "s")}


def build(workdir: str) -> ctypes.CDLL:
    source, library = os.path.join(workdir, "floor.c"), os.path.join(workdir, "floor.so")
    with open(source, "w") as f:
        f.write(C_SOURCE)
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC",
                    source, "-o", library, "-lmvec", "-lm"], check=True)
    lib = ctypes.CDLL(library)
    pointer, length = ctypes.c_void_p, ctypes.c_int64
    for name, buffers in STATE.items():
        if name == "a5":
            continue
        getattr(lib, name).argtypes = [length, pointer, pointer] + [pointer] * len(buffers) + [pointer]
    lib.a5_norm.argtypes = [length, pointer, pointer, pointer, pointer]
    lib.a5_norm.restype = ctypes.c_double
    lib.a5_update.argtypes = [length, pointer, pointer, pointer, pointer, ctypes.c_float]
    return lib


class HandFused:
    """The genome's step through the C loop: the same state, scalars and update as NOSExpression's."""

    def __init__(self, lib: ctypes.CDLL, genome: str, params, reference):
        self.lib, self.genome, self.params, self.t = lib, genome, list(params), 0
        self.group, self.reference = reference.param_groups[0], reference  # only for its scalars
        self.state = [{key: torch.zeros_like(p) for key in STATE[genome]} for p in self.params]

    def step(self) -> None:
        scalars = self.reference._scalars(self.group, self.t)
        lr = scalars["step_scale"]
        row = {"opt7": [scalars.get("correction_v"), lr], "opt8": [scalars.get("correction_v"), lr],
               "opt9": [scalars.get("correction_s"), lr, scalars.get("mu")],
               "a3": [scalars.get("correction_v"), scalars.get("correction_s"), lr],
               "a5": [scalars.get("correction_v"), scalars.get("correction_s"), lr]}[self.genome]
        sc = torch.tensor(row, dtype=torch.float32)
        for p, state in zip(self.params, self.state):
            buffers = [state[key].data_ptr() for key in STATE[self.genome]]
            if self.genome == "a5":
                squares = self.lib.a5_norm(p.numel(), p.grad.data_ptr(), *buffers, sc.data_ptr())
                self.lib.a5_update(p.numel(), p.data_ptr(), *buffers, sc.data_ptr(), 1.0 / max(squares ** 0.5, 1.0))
            else:
                getattr(self.lib, self.genome)(p.numel(), p.data_ptr(), p.grad.data_ptr(), *buffers, sc.data_ptr())
        self.t += 1


def nos_optimizer(genome: str, params, compile: bool):
    name = f"nos_{genome}"
    cls, hparams = import_target(optim.info(name).target), optim.resolve_hparams(name, {"total_steps": 10_000})
    return cls(params, **hparams, compile=compile)


def check_one_step(lib: ctypes.CDLL, genome: str) -> float:
    """Largest difference between the parameters after two steps of the C loop and of the eager optimizer, in
    units in the last place of the tensor's largest entry (the loop's fused multiply-adds round differently)."""
    model = make_model(200_000, 4, "cpu", seed=1)
    start = [p.detach().clone() for p in model.parameters()]
    eager = nos_optimizer(genome, model.parameters(), compile=False)
    for _ in range(2):
        eager.step()
    expected = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        torch._foreach_copy_(list(model.parameters()), start)
    fused = HandFused(lib, genome, model.parameters(), nos_optimizer(genome, [torch.zeros(1)], compile=False))
    for _ in range(2):
        fused.step()
    worst = 0.0
    for p, e in zip(model.parameters(), expected):
        worst = max(worst, ((p - e).abs().max() / (e.abs().max() * torch.finfo(e.dtype).eps)).item())
    return worst


def main() -> None:
    if shutil.which("gcc") is None or not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        sys.exit("needs gcc and an AVX-512 CPU (glibc's libmvec has AVX-512 asinhf/atanf/tanhf from 2.35)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="optrepro-floor-") as workdir:
        lib = build(workdir)
        model = make_model(10_000_000, 100, "cpu")
        print("| genome | fused Adam ms | compiled ms | compiled / Adam | hand-fused ms | hand-fused / Adam |"
              " compiled / hand-fused | hand-fused vs eager (ulp) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for genome in STATE:
            error = check_one_step(lib, genome)
            makers = {"adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, fused=True),
                      "compiled": lambda m, g=genome: nos_optimizer(g, m.parameters(), compile=True),
                      "hand": lambda m, g=genome: HandFused(lib, g, m.parameters(),
                                                             nos_optimizer(g, [torch.zeros(1)], compile=False))}
            t = time_interleaved(model, makers, 5, 5, "cpu")
            print(f"| {genome} | {t['adam'] * 1e3:.1f} | {t['compiled'] * 1e3:.1f} | {t['compiled'] / t['adam']:.2f}"
                  f" | {t['hand'] * 1e3:.1f} | {t['hand'] / t['adam']:.2f} | {t['compiled'] / t['hand']:.2f}"
                  f" | {error:.1f} |", flush=True)


if __name__ == "__main__":
    main()
