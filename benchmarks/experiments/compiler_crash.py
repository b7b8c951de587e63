"""Stress reproduction of the XLA CPU compiler crash that now and then kills a test worker.

The crash (a segmentation fault or an abort inside ``backend_compile_and_load``, about one
worker per full run of the suite, in a different test each time) has only been seen in
long-lived processes that compile hundreds of programs. This script reproduces that
workload: each round is a fresh process that runs a set of test files in one process
(``pytest -n 0``), as one xdist worker does, with one variant of the package's less common
constructs switched off:

* ``shipped``: the package as it is;
* ``no-layout``: no experimental layout pin on the CPU factors (``_linalg.LAYOUT_CONSTRAINTS
  = False``, the plain path of ``tests/test_linalg_fallback.py``);
* ``no-barrier``: ``lax.optimization_barrier`` replaced by the identity in the package (the
  constant-folding guard at the solver's entry and ``computed_where``'s loop guard);
* ``plain-jax``: no altdiff_jax at all: programs of the same kinds (while loops around
  Cholesky factorisations, triangular solves, custom_vjp, vmap) compiled for many shapes.

A round that ends by a signal is a crash. With core dumps enabled (``ulimit -c unlimited``
and a ``core`` file pattern) the script prints the native stack of each crash with gdb.

    python benchmarks/experiments/compiler_crash.py --rounds 3 --variants shipped no-layout
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Compile-heavy test files: many distinct programs (shapes, options, transformations).
DEFAULT_FILES = ["tests/test_transforms.py", "tests/test_solve.py", "tests/test_gradients.py", "tests/test_kkt.py",
                 "altdiff_jax"]

PLUGIN = '''
import os
def pytest_configure(config):
    variant = os.environ["CRASH_VARIANT"]
    if variant == "no-layout":
        import altdiff_jax._linalg as linalg
        linalg.LAYOUT_CONSTRAINTS = False
    elif variant == "no-barrier":
        import jax  # the package calls it as jax.lax.optimization_barrier / lax.optimization_barrier
        jax.lax.optimization_barrier = lambda operand: operand
'''

PLAIN_JAX = '''
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from jax import lax

@jax.custom_vjp
def solve(M, b):
    L = jnp.linalg.cholesky(M)
    return jax.scipy.linalg.cho_solve((L, True), b)

def solve_fwd(M, b):
    x = solve(M, b)
    return x, (M, x)

def solve_bwd(res, g):
    M, x = res
    y = solve(M, g)
    return -jnp.outer(y, x), y

solve.defvjp(solve_fwd, solve_bwd)

def program(M, b, rho):
    def body(carry):
        x, k = carry
        H = M + rho * (k + 1.0) * jnp.eye(M.shape[0])
        return solve(H, b - 0.1 * x), k + 1
    # 20 steps, static: a loop reverse-mode differentiates (a while_loop of traced length does not)
    x, _ = lax.fori_loop(0, 20, lambda _, carry: body(carry), (jnp.zeros_like(b), 0.0))
    return jnp.sum(x ** 2)

for round_ in range(int(__import__("sys").argv[1])):
    for n in range(8, 120, 3):
        M = jnp.eye(n) * 2.0 + 0.01 * jnp.ones((n, n))
        b = jnp.arange(n, dtype=jnp.float64)
        jax.jit(jax.value_and_grad(program))(M, b, 1.0 + round_)
        jax.jit(jax.vmap(jax.grad(program), in_axes=(None, 0, None)))(M, jnp.stack([b, -b]), 1.0)
        jax.clear_caches()
'''


def native_stack(core: str) -> str:
    """The first frames of the crashed thread's native stack (gdb), or why there is none."""
    try:
        out = subprocess.run(["gdb", "-batch", "-ex", "bt 25", sys.executable, core],
                             capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"(no stack: {error})"
    return "\n".join(line for line in out.splitlines() if line.startswith("#"))


def one_round(variant: str, files: list[str], workdir: Path) -> tuple[str, float]:
    env = dict(os.environ, CRASH_VARIANT=variant, PYTHONPATH=str(workdir))
    (workdir / "crash_variant.py").write_text(PLUGIN)
    if variant == "plain-jax":
        (workdir / "plain.py").write_text(PLAIN_JAX)
        command = [sys.executable, str(workdir / "plain.py"), "3"]
    else:
        # Not -x: a variant fails the tests of the construct it removes (the barrier's, the
        # layout's) and must go on compiling the rest, as many programs as the shipped run.
        command = [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "crash_variant",
                   "-o", "addopts=--doctest-modules", *files]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        cores = sorted(glob.glob(str(workdir / "core*")))
        stack = native_stack(cores[-1]) if cores else "(no core file)"
        for core in cores:
            os.remove(core)
        return f"CRASH {name}\n{stack}", seconds
    tail = result.stdout.strip().splitlines()[-1:] or [""]
    return f"exit {result.returncode}: {tail[0]}", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["shipped", "no-layout", "no-barrier", "plain-jax"])
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    files = [str(ROOT / f) for f in args.files]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            for variant in args.variants:  # interleaved, so a slow phase of the machine hits all
                outcome, seconds = one_round(variant, files, workdir)
                print(f"round {round_} {variant:11s} {seconds:7.1f} s  {outcome}", flush=True)


if __name__ == "__main__":
    main()
