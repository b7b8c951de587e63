"""The dense kernels an ADMM solve at the paper's Tiny size rests on, in XLA (JAX on CPU),
PyTorch and NumPy: how fast each library's linear algebra is on this machine.

Run ``python benchmarks/experiments/kernels.py`` in an environment with torch (the ``bench``
extra); writes ``benchmarks/results/kernels.md``. Each library runs in its own process with
its default threading; best of 7 calls after a warm-up, float64, n 1500, 700 constraint rows:
the Gram matrix CᵀC, the Cholesky factor of an order-n matrix, the two triangular solves
with that factor for one vector, and one matrix-vector product; for XLA both the plain
``jax.numpy``/``jax.scipy`` calls and the ``altdiff_jax._linalg`` kernels the solver runs.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import numpy as np

N, ROWS = 1500, 700


def _best(f, repeats: int = 7) -> float:
    f()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        f()
        times.append(time.perf_counter() - started)
    return min(times)


def _data():
    rng = np.random.default_rng(0)
    C = rng.standard_normal((ROWS, N))
    H = C.T @ C + N * np.eye(N)
    return C, H, rng.standard_normal(N)


def child(library: str) -> dict:
    C, H, v = _data()
    if library == "jax":
        import jax
        import jax.numpy as jnp
        from jax.scipy.linalg import cho_solve

        jax.config.update("jax_enable_x64", True)
        Cj, Hj, vj = jnp.asarray(C), jnp.asarray(H), jnp.asarray(v)
        gram = jax.jit(lambda C: C.T @ C)
        gram_transposed = jax.jit(lambda CT: CT @ CT.T)
        cholesky = jax.jit(jnp.linalg.cholesky)
        L = cholesky(Hj)
        solves = jax.jit(lambda L, v: cho_solve((L, True), v))
        product = jax.jit(lambda H, v: H @ v)
        from altdiff_jax import _linalg

        CT = jnp.asarray(C.T.copy())
        gram_engine = jax.jit(lambda C: _linalg.symmetric_transpose_times(C, C))
        factor = jax.jit(_linalg.Cholesky.factor)
        kept = factor(Hj)
        engine_solves = jax.jit(lambda factor, v: factor.solve(v))
        run = {"Gram CᵀC": lambda: gram(Cj).block_until_ready(),
               "Gram, C stored transposed": lambda: gram_transposed(CT).block_until_ready(),
               "Gram, altdiff_jax's (`_linalg.symmetric_transpose_times`)": lambda: gram_engine(Cj).block_until_ready(),
               "Cholesky": lambda: cholesky(Hj).block_until_ready(),
               "Cholesky, altdiff_jax's (`_linalg.Cholesky.factor`)": lambda: jax.block_until_ready(factor(Hj)),
               "two triangular solves": lambda: solves(L, vj).block_until_ready(),
               "two triangular solves, altdiff_jax's (by blocks)": lambda: engine_solves(kept, vj).block_until_ready(),
               "matrix-vector product": lambda: product(Hj, vj).block_until_ready()}
    elif library == "torch":
        import torch

        Ct, Ht, vt = torch.from_numpy(C), torch.from_numpy(H), torch.from_numpy(v)[:, None]
        L = torch.linalg.cholesky(Ht)
        run = {"Gram CᵀC": lambda: Ct.T @ Ct, "Cholesky": lambda: torch.linalg.cholesky(Ht),
               "two triangular solves": lambda: torch.cholesky_solve(vt, L),
               "matrix-vector product": lambda: Ht @ vt}
    else:
        import scipy.linalg

        L = np.linalg.cholesky(H)
        run = {"Gram CᵀC": lambda: C.T @ C, "Cholesky": lambda: np.linalg.cholesky(H),
               "two triangular solves": lambda: scipy.linalg.cho_solve((L, True), v),
               "matrix-vector product": lambda: H @ v}
    return {name: _best(f) for name, f in run.items()}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        return
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

    results = {}
    for library in ("jax", "torch", "numpy"):
        out = subprocess.run([sys.executable, __file__, "--child", library], capture_output=True, text=True,
                             check=True).stdout
        results[library] = json.loads(out.strip().splitlines()[-1])
    kernels = list(results["jax"])
    rows = [[k, *[f"{1e3 * results[lib][k]:.2f}" if k in results[lib] else "–" for lib in results]] for k in kernels]
    engine = {"Gram CᵀC": "Gram, altdiff_jax's (`_linalg.symmetric_transpose_times`)",
              "Cholesky": "Cholesky, altdiff_jax's (`_linalg.Cholesky.factor`)",
              "two triangular solves": "two triangular solves, altdiff_jax's (by blocks)"}
    ratios = [[k, f"{results['jax'][v] / results['torch'][k]:.1f}"] for k, v in engine.items()]
    body = [harness.markdown_table(["kernel (n 1500, 700 rows)", "XLA (ms)", "PyTorch (ms)", "NumPy (ms)"], rows), "",
            "Each library in its own process, default threading, best of 7 after a warm-up, float64.", "",
            "altdiff_jax's kernels against PyTorch's (time ratio):", "",
            harness.markdown_table(["kernel", "altdiff_jax / PyTorch"], ratios)]
    harness.write_markdown(harness.RESULTS / "kernels.md", "Dense kernels: XLA, PyTorch, NumPy", harness.hardware_line(),
                           body)
    print("\n".join(body))


if __name__ == "__main__":
    main()
