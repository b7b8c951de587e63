"""Engine speed, side by side in one process: the measurements behind issue 8's targets.

Run ``python benchmarks/speed.py [--sections tiny batch single auto crossover] [--repeats 5]``.
Writes ``benchmarks/results/speed.md``.

Sections (float64 unless said; every time is the best of ``--repeats`` interleaved calls
after compilation, with the spread over the runs):

* ``tiny``: the paper's Table 1 "Tiny" QP (n 1500, 200 equalities, 500 inequalities, the
  paper generator): solve + the gradient of gᵀx* with respect to all six leaves, each
  altdiff_jax strategy that fits (the ``altdiff`` strategy carries 2200 columns: skipped),
  against qpax (``solve_qp_primal``, its default ``target_kappa``); cosine and relative
  error of each gradient against the exact KKT gradient.
* ``batch``: 512 QPs with n 50 (10 equalities, 25 inequalities), ``jax.vmap`` of solve +
  gradient, every leaf batched and P, A, G shared, float64 and float32, against qpax
  vmapped the same way: throughput ratio.
* ``single``: one forward solve, n 1000 (200 equalities, 500 inequalities), against OSQP
  (C, setup + solve, polish on) at the same tolerance.
* ``auto``: the default ``differentiation="auto"`` against each explicit strategy, for
  ``jax.grad`` through ``solve`` (n 500, all six leaves) and through a batch of 256
  sparsemax layers with n 1000.
* ``crossover``: ``altdiff`` against ``adjoint`` for ``jax.grad`` with respect to b only,
  as the number of carried columns (p) grows: why ``differentiation="auto"`` never picks
  Alt-Diff for ``jax.grad`` (``altdiff_jax._strategies.strategy_for``).

A section that runs longer than ``--section-timeout`` seconds (default 1800) stops the run
with every thread's traceback instead of waiting for ever: qpax's vmapped graph runs
batched LAPACK calls that do not depend on each other (24 such pairs in its compiled
gradient), and jaxlib 0.10 can deadlock on those on a 2-core machine
(``tests/lapack_order.py``; altdiff_jax's own graphs order theirs,
``tests/test_transforms.py::test_a_vmapped_solve_and_gradient_call_lapack_one_at_a_time``).
A script timing these batches hung that way (gdb: both pool threads waiting inside
jaxlib's batched triangular solve); rerun the section.

OPENBLAS_NUM_THREADS defaults to 1 (see ``benchmarks/experiments/factorization.py``): jaxlib's CPU
Cholesky and triangular solves call OpenBLAS, whose spinning threads slow them 10–100× on
shared cores; XLA's own products stay multithreaded. It applies to qpax as well.
"""

from __future__ import annotations

import argparse
import faulthandler
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before jaxlib loads OpenBLAS

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__:
    from . import harness
else:
    import harness

import altdiff_jax as ad  # noqa: E402

KEYS = harness.QP_KEYS
SHARED = ad.QP(P=None, q=0, A=None, b=0, G=None, h=0)
BATCHED = ad.QP(P=0, q=0, A=0, b=0, G=0, h=0)


def _qp(problem, dtype=jnp.float64) -> ad.QP:
    return ad.QP(**{k: jnp.asarray(problem[k], dtype) for k in KEYS})


def _altdiff_loss(problem: ad.QP, g, options):
    return ad.solve(problem, options).x @ g


def _qpax():
    try:
        import qpax
    except ImportError:
        print("qpax is not installed: its rows are skipped (pip install -e '.[bench]')")
        return None
    return qpax


def _qpax_loss(problem: ad.QP, g):
    qpax = _qpax()
    return qpax.solve_qp_primal(*problem[:6], solver_tol=1e-6) @ g


def _row(name, timing, *extra):
    return [name, f"{timing.best:.4g}", f"{100 * timing.spread:.0f}%", *extra]


def tiny(repeats: int, lines: list) -> None:
    problem = harness.paper_qp(1500, 500, 200, seed=0)
    g = harness.loss_vector(1500)
    reference = harness.reference(problem, g)
    qp, gj = _qp(problem), jnp.asarray(g)
    calls, grads = {}, {}
    for strategy in ("auto", "adjoint", "kkt"):
        options = ad.Options(tol=1e-6, differentiation=strategy)
        fn = jax.jit(jax.grad(_altdiff_loss))
        grads[strategy] = harness.block(fn(qp, gj, options))
        calls[f"altdiff_jax {strategy}"] = lambda fn=fn, options=options: fn(qp, gj, options)
    if _qpax():
        fn = jax.jit(jax.grad(_qpax_loss))
        grads["qpax"] = harness.block(fn(qp, gj))
        calls["qpax"] = lambda fn=fn: fn(qp, gj)
    timings = harness.interleaved(calls, repeats=repeats)
    lines += ["## Tiny (n 1500, 200 eq, 500 ineq): solve + gradient of all six leaves, tol 1e-6", "",
              reference.note, ""]
    rows = []
    qpax_best = timings["qpax"].best if "qpax" in timings else float("nan")
    for (name, timing), grad in zip(timings.items(), grads.values()):
        flat = {k: np.asarray(getattr(grad, k)) for k in KEYS}
        cosine = harness.cosine(flat, reference.grads)
        error = harness.relative_error(flat, reference.grads)
        rows.append(_row(name, timing, f"{qpax_best / timing.best:.1f}×", f"{cosine:.8f}", f"{error:.1e}"))
    lines.append(harness.markdown_table(["method", "best (s)", "spread", "qpax / this", "cosine", "rel. error"], rows))
    lines.append("")


def batch(repeats: int, lines: list) -> None:
    size, n, p, m = 512, 50, 10, 25
    problems = [harness.paper_qp(n, m, p, seed=seed) for seed in range(size)]
    g = jnp.asarray(harness.loss_vector(n))
    lines += [f"## Batch: {size} QPs, n {n}, {p} eq, {m} ineq, jax.vmap(solve + gradient), tol 1e-6 (f64) / 1e-4 (f32)", ""]
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        for label, in_axes in (("every leaf batched", BATCHED), ("P, A, G shared", SHARED)):
            data, gd = harness.stacked_qp(problems, in_axes, dtype), g.astype(dtype)
            calls = {}
            ours = jax.jit(jax.vmap(jax.grad(_altdiff_loss), in_axes=(in_axes, None, None)))
            calls["altdiff_jax"] = lambda f=ours, d=data, gd=gd: f(d, gd, ad.Options())
            statuses = harness.block(jax.jit(jax.vmap(ad.solve, in_axes=(in_axes, None)))(data, ad.Options()))
            solved = int(np.sum(np.asarray(statuses.info.status) == ad.Status.SOLVED))
            if _qpax():
                theirs = jax.jit(jax.vmap(jax.grad(_qpax_loss), in_axes=(in_axes, None)))
                calls["qpax"] = lambda f=theirs, d=data, gd=gd: f(d, gd)
            for call in calls.values():
                harness.block(call())
            timings = harness.interleaved(calls, repeats=repeats)
            ratio = timings["qpax"].best / timings["altdiff_jax"].best if "qpax" in timings else float("nan")
            for name, timing in timings.items():
                note = f"{ratio:.1f}× qpax, {solved}/{size} SOLVED" if name == "altdiff_jax" else ""
                rows.append([jnp.dtype(dtype).name, label, *_row(name, timing, note)])
    lines.append(harness.markdown_table(["dtype", "batch", "method", "best (s)", "spread", "note"], rows))
    lines.append("")


def single(repeats: int, lines: list) -> None:
    problem = harness.paper_qp(1000, 500, 200, seed=1)
    qp = _qp(problem)
    solve = jax.jit(ad.solve)
    options = ad.Options(tol=1e-6)
    solution = harness.block(solve(qp, options))
    calls = {"altdiff_jax forward": lambda: solve(qp, options)}
    try:
        osqp = harness.osqp_qp(problem, harness.loss_vector(1000), 1e-6)
        calls["OSQP (C) forward"] = osqp.forward
    except harness.MissingPeer as error:
        print(error)
    timings = harness.interleaved(calls, repeats=repeats)
    lines += ["## One forward solve, n 1000 (200 eq, 500 ineq), tol 1e-6", "",
              f"altdiff_jax: {int(solution.info.iterations)} iterations, status "
              f"{ad.Status(int(solution.info.status)).name}, polished {bool(solution.info.polished)}", ""]
    lines.append(harness.markdown_table(["method", "best (s)", "spread"], [_row(k, v) for k, v in timings.items()]))
    lines.append("")


def auto(repeats: int, lines: list) -> None:
    lines += ["## Default strategy (auto) against each explicit one", ""]
    rows = []
    problem = harness.paper_qp(500, 250, 100, seed=2)
    qp, g = _qp(problem), jnp.asarray(harness.loss_vector(500))
    fn = jax.jit(jax.grad(_altdiff_loss))
    calls = {}
    for strategy in ("auto", "altdiff", "adjoint", "kkt"):
        options = ad.Options(differentiation=strategy)
        harness.block(fn(qp, g, options))
        calls[strategy] = lambda options=options: fn(qp, g, options)
    for name, timing in harness.interleaved(calls, repeats=repeats, once_s=60).items():
        rows.append(["solve, n 500, all six leaves", *_row(name, timing)])
    ys = jnp.asarray(np.random.default_rng(3).standard_normal((256, 1000)))
    weights = jnp.asarray(np.random.default_rng(4).standard_normal(1000))

    def layer_loss(ys, options):
        return jnp.sum(jax.vmap(lambda y: ad.sparsemax(y, options).x)(ys) @ weights)

    layer = jax.jit(jax.grad(layer_loss))
    calls = {}
    for strategy in ("auto", "adjoint", "kkt"):  # altdiff carries 1000 columns per lane: minutes
        options = ad.Options(differentiation=strategy)
        harness.block(layer(ys, options))
        calls[strategy] = lambda options=options: layer(ys, options)

    def sort_based(ys):  # the closed form, for scale: the speed of light of this layer
        z = -jnp.sort(-ys, axis=1)
        k = jnp.arange(1, ys.shape[1] + 1)
        cumulative = jnp.cumsum(z, axis=1) - 1
        support = jnp.sum(z - cumulative / k > 0, axis=1, keepdims=True)
        tau = jnp.take_along_axis(cumulative, support - 1, axis=1) / support
        return jnp.maximum(ys - tau, 0.0)

    sort_grad = jax.jit(jax.grad(lambda ys: jnp.sum(sort_based(ys) @ weights)))
    harness.block(sort_grad(ys))
    calls["sort-based sparsemax (JAX)"] = lambda: sort_grad(ys)
    for name, timing in harness.interleaved(calls, repeats=repeats, once_s=60).items():
        rows.append(["256 × sparsemax, n 1000", *_row(name, timing)])
    lines.append(harness.markdown_table(["case", "strategy", "best (s)", "spread"], rows))
    lines.append("")


def crossover(repeats: int, lines: list) -> None:
    n = 200
    lines += [f"## altdiff vs adjoint: jax.grad with respect to b only (p columns carried), n {n}", ""]
    rows = []
    for p in (1, 2, 4, 8, 16, 32, 64):
        problem = harness.paper_qp(n, n // 2, p, seed=5)
        qp, g = _qp(problem), jnp.asarray(harness.loss_vector(n))

        def loss(b, options, qp=qp, g=g):
            return ad.solve(qp._replace(b=b), options).x @ g

        fn = jax.jit(jax.grad(loss))
        calls = {}
        for strategy in ("altdiff", "adjoint"):
            options = ad.Options(differentiation=strategy)
            harness.block(fn(qp.b, options))
            calls[strategy] = lambda options=options, fn=fn, b=qp.b: fn(b, options)
        timings = harness.interleaved(calls, repeats=repeats)
        ratio = timings["altdiff"].best / timings["adjoint"].best
        rows.append([p, f"{timings['altdiff'].best:.4g}", f"{timings['adjoint'].best:.4g}", f"{ratio:.2f}"])
    lines.append(harness.markdown_table(["columns (p)", "altdiff (s)", "adjoint (s)", "altdiff / adjoint"], rows))
    lines.append("")


SECTIONS = dict(tiny=tiny, batch=batch, single=single, auto=auto, crossover=crossover)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(harness.RESULTS / "speed.md"))
    parser.add_argument("--section-timeout", type=float, default=1800.0)
    args = parser.parse_args()
    lines: list = []
    for name in args.sections:
        print(f"-- {name}", flush=True)
        faulthandler.dump_traceback_later(args.section_timeout, exit=True)
        SECTIONS[name](args.repeats, lines)
        faulthandler.cancel_dump_traceback_later()
        print("\n".join(lines[-4:]), flush=True)
    harness.write_markdown(args.out, "Engine speed, side by side", harness.hardware_line(("qpax", "osqp")), lines)


if __name__ == "__main__":
    main()
