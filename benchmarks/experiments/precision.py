"""Float32 against float64: how accurate solutions and gradients are, and what is reachable.

Run ``python benchmarks/experiments/precision.py``; writes ``benchmarks/results/precision.md``.

Problems (all solved in both dtypes from the same float64 data, rounded to float32 for
the float32 rows):

* the paper's generator (P = MᵀM, Gaussian data), n 100, 20 equalities, 50 inequalities;
* the scaling family of ``tests/test_engine.py``: the small test QP with P scaled by 10^k
  and A, b, G, h by 10^j, k, j ∈ {−3, 0, 3} (9 problems, reported as the worst case);
* the layers at n 100: ``constrained_sparsemax`` (u = 0.05) and ``constrained_softmax``
  (u = 0.05).

For each dtype and tolerance (``tol=None`` is the dtype's default: 1e-6 in float64,
1e-4 in float32), each row reports the statuses, the iterations (maximum over the
problems of a row), the objective's relative error, ‖x − x*‖∞ / ‖x*‖∞ and the cosine and
relative error of the gradient of gᵀx* (all six leaves for the QPs, y for the layers)
against the exact float64 reference: Clarabel + a dense KKT solve for the QPs
(``harness.reference``), the closed-form capped simplex projection for sparsemax, and the
float64 polished layer (exact to 1e-12, ``tests/test_layers_*``) for softmax.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from .. import harness
else:  # run as a script: the harness is in benchmarks/, one folder up
    sys.path.insert(1, str(pathlib.Path(__file__).resolve().parent.parent))
    import harness

import altdiff_jax as ad  # noqa: E402

TOLERANCES = {"float64": (None, 1e-8, 1e-10), "float32": (None, 1e-5, 1e-6, 1e-7)}
KEYS = harness.QP_KEYS


def _qp(problem, dtype) -> ad.QP:
    return ad.QP(**{k: jnp.asarray(problem[k], dtype) for k in KEYS})


def _qp_loss(problem, g, options):
    solution = ad.solve(problem, options)
    return solution.x @ g, solution


_qp_grad = jax.jit(jax.value_and_grad(_qp_loss, has_aux=True))


def _objective(problem, x):
    return 0.5 * x @ problem["P"] @ x + problem["q"] @ x


def qp_rows(name, problems, dtype, tol):
    """One row over a list of (problem, reference, g)."""
    statuses, iterations, objective_errors, x_errors, cosines, grad_errors = [], [], [], [], [], []
    for problem, reference, g in problems:
        options = ad.Options(tol=tol)
        (_, solution), grads = _qp_grad(_qp(problem, dtype), jnp.asarray(g, dtype), options)
        x = np.asarray(solution.x, float)
        statuses.append(ad.Status(int(solution.info.status)).name)
        iterations.append(int(solution.info.iterations))
        exact = _objective(problem, reference.x)
        objective_errors.append(abs(_objective(problem, x) - exact) / max(abs(exact), 1e-300))
        x_errors.append(np.abs(x - reference.x).max() / np.abs(reference.x).max())
        flat = {k: np.asarray(getattr(grads, k), float) for k in KEYS}
        cosines.append(harness.cosine(flat, reference.grads))
        grad_errors.append(harness.relative_error(flat, reference.grads))
    return _row(name, dtype, tol, statuses, iterations, objective_errors, x_errors, cosines, grad_errors)


def _row(name, dtype, tol, statuses, iterations, objective_errors, x_errors, cosines, grad_errors):
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    status = ", ".join(f"{c} {s}" for s, c in counts.items())
    tol_text = f"default ({float(ad.Options().numerics(dtype).tol):.0e})" if tol is None else f"{tol:.0e}"
    return [name, jnp.dtype(dtype).name, tol_text, status, max(iterations), f"{max(objective_errors):.1e}",
            f"{max(x_errors):.1e}", f"{min(cosines):.7f}", f"{max(grad_errors):.1e}"]


def family_detail(family):
    """Per member of the scaling family: gradient relative error of kkt and adjoint."""
    rows = []
    for index, (problem, reference, g) in enumerate(family):
        k, j = divmod(index, 3)
        row = [(-3, 0, 3)[k], (-3, 0, 3)[j]]
        for dtype, tol in ((jnp.float64, 1e-10), (jnp.float32, None)):
            for strategy in ("kkt", "adjoint"):
                options = ad.Options(tol=tol, differentiation=strategy)
                _, grads = _qp_grad(_qp(problem, dtype), jnp.asarray(g, dtype), options)
                flat = {key: np.asarray(getattr(grads, key), float) for key in KEYS}
                row.append(f"{harness.relative_error(flat, reference.grads):.1e}")
        rows.append(row)
    return rows


def capped_simplex(y, u):
    """The exact projection onto {x : 1ᵀx = 1, 0 <= x <= u} by bisection on τ (float64)."""
    lo, hi = np.min(y) - 1.0, np.max(y)
    for _ in range(200):
        tau = 0.5 * (lo + hi)
        if np.clip(y - tau, 0.0, u).sum() > 1.0:
            lo = tau
        else:
            hi = tau
    return np.clip(y - 0.5 * (lo + hi), 0.0, u)


def layer_rows(dtype, tol, y, u, g):
    rows = []
    options = ad.Options(tol=tol)
    for name, layer in (("constrained_sparsemax n 100", ad.constrained_sparsemax),
                        ("constrained_softmax n 100", ad.constrained_softmax)):
        def loss(y, options, layer=layer):
            solution = layer(y, jnp.asarray(u, y.dtype), options=options)
            return solution.x @ jnp.asarray(g, y.dtype), solution

        fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
        (_, solution), grad = fn(jnp.asarray(y, dtype), options)
        (_, exact_solution), exact_grad = fn(jnp.asarray(y), ad.Options(tol=1e-12))
        exact = capped_simplex(y, u) if "sparsemax" in name else np.asarray(exact_solution.x)
        x = np.asarray(solution.x, float)
        exact_grad = np.asarray(exact_grad)
        grad = np.asarray(grad, float)
        rows.append(_row(name, dtype, tol, [ad.Status(int(solution.info.status)).name],
                         [int(solution.info.iterations)], [np.nan], [np.abs(x - exact).max() / np.abs(exact).max()],
                         [harness.cosine(grad, exact_grad)], [harness.relative_error(grad, exact_grad)]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(harness.RESULTS / "precision.md"))
    args = parser.parse_args()
    paper = harness.paper_qp(100, 50, 20, seed=0)
    g = harness.loss_vector(100)
    paper_set = [(paper, harness.reference(paper, g), g)]
    ref = harness._tests_reference()
    small = ref.random_qp(1, 12, 3, 8)
    g_small = harness.loss_vector(12)
    family = []
    for k in (-3, 0, 3):
        for j in (-3, 0, 3):
            scaled = dict(P=10.0**k * small["P"], q=small["q"], **{key: 10.0**j * small[key] for key in "AbGh"})
            family.append((scaled, harness.reference(scaled, g_small), g_small))
    rng = np.random.default_rng(7)
    y, u, g_layer = rng.standard_normal(100), np.full(100, 0.05), rng.standard_normal(100)
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        for tol in TOLERANCES[jnp.dtype(dtype).name]:
            rows.append(qp_rows("paper QP n 100", paper_set, dtype, tol))
            rows.append(qp_rows("scaling family (9, worst)", family, dtype, tol))
            rows.extend(layer_rows(dtype, tol, y, u, g_layer))
            for row in rows[-4:]:
                print(row, flush=True)
    detail = family_detail(family)
    header = ["problem", "dtype", "tol", "statuses", "max iterations", "objective rel. error",
              "‖x − x*‖∞/‖x*‖∞", "min gradient cosine", "max gradient rel. error"]
    body = [harness.markdown_table(header, rows), "",
            "## Scaling family, member by member: gradient relative error by strategy", "",
            "P × 10^k, A, b, G, h × 10^j; float64 at tol 1e-10, float32 at its default tol.", "",
            harness.markdown_table(["k", "j", "f64 kkt", "f64 adjoint", "f32 kkt", "f32 adjoint"], detail)]
    harness.write_markdown(args.out, "Float32 vs float64: accuracy of solutions and gradients",
                           harness.hardware_line(), body)


if __name__ == "__main__":
    main()
