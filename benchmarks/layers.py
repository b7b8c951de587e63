"""The non-QP layers: time and gradient accuracy of altdiff_jax vs cvxpylayers.

Run ``python benchmarks/layers.py [--sizes 100 1000] [--tol 1e-6] [--budget-s 120]
[--layers ...] [--out FILE]``. Needs numpy; cvxpylayers (``pip install cvxpylayers``,
which brings cvxpy and diffcp; Clarabel is cvxpy's) is optional: without it only the
altdiff_jax rows are measured.

The layers of the paper's Tables 4 and 6 (the QP layer is benchmarked in
``benchmarks/engine.py``), at sizes scaled to a small CPU machine, measured side by side
in one run, float64 on CPU:

* ``constrained_sparsemax(y, u)``: argmin ‖x − y‖² s.t. 1ᵀx = 1, 0 <= x <= u, gradient
  with respect to y and u;
* ``constrained_softmax(y, u)``: argmin −yᵀx + Σ xᵢ log xᵢ s.t. 1ᵀx = 1, x <= u,
  gradient with respect to y and u;
* ``solve_convex`` with f(x; c) = log Σ exp(xᵢ) + ½‖x − c‖² s.t. 1ᵀx = 1, x >= 0
  (G = −I), θ = c: a smooth, non-quadratic objective with a dense Hessian.

Methods: altdiff_jax at ``Options(tol)`` with ``differentiation="adjoint"`` and
``"altdiff"`` (jitted, compile excluded, median of 3 calls; one call when a call takes
over 5 s), and, when installed, cvxpylayers' JAX interface (``cvxpylayers.jax.CvxpyLayer``,
the DIFFCP backend with Clarabel at its default tolerances and diffcp's default LSQR
derivative; not jittable, so timed eagerly after one warm-up call; canonicalization
excluded). The loss is gᵀx for a random g; "fwd+bwd" is ``jax.grad`` of it with respect to
every parameter. The forward is one computation for both strategies (no Jacobian is
carried without ``grad``), measured once.

Time cap (``--budget-s``, default 120 s): the altdiff_jax rows of each problem run in a
child process, in three stages (forward; "adjoint" fwd+bwd; "altdiff" fwd+bwd), and a
stage still running after the budget (its compile included) is stopped and reported as
"> budget". The "altdiff" gradient, whose carried Jacobians cost O(n·#parameters) or
more per iteration, is skipped up front when a 3-iteration probe's cost per iteration
times the forward's iterations (a lower bound) exceeds the budget.

Gradient references, independent of the code paths being timed:

* constrained sparsemax: x* by bisection on the threshold τ of x = clip(y − τ, 0, u), and
  the closed-form Jacobian of the capped-simplex projection on its free set;
* constrained softmax: x* by bisection on τ of x = min(u, exp(y − τ)), and its
  closed-form Jacobian (a softmax on the free set);
* log-sum-exp: an active-set method in NumPy started from the active set of the
  projection of c onto the simplex (exact Newton on the free set, sets updated until
  x_F > 0 and ν_A >= 0), and the gradient from the bordered free-set KKT system.

Each reference also prints its margin, the distance of x* from a change of active set:
the gradient jumps there, and a solve whose error exceeds the margin may differentiate
the other branch. Cosine and relative error compare the concatenated gradient (y and u,
or c).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import altdiff_jax as ad  # noqa: E402

ONCE_S = 5.0  # a call slower than this is measured once (bounds the time of a stage)
REPEATS = 3
PROBE_ITERATIONS = 3


# ----------------------------------------------------------------------------- problems


# Each problem is built from a planted solution x* whose active set has a margin: every
# entry is a fixed fraction of its own size away from changing branch (free, at 0, at its
# cap), so that the gradient, discontinuous where the active set changes, is well defined
# at the accuracy of a tol = 1e-6 solve. With data drawn at random instead, the entry
# nearest to a change is ~1/n² away at these sizes (x* ~ 1/n): about the solve's error at
# n = 1000, where a solver may then differentiate the other branch.


def _split(rng, n: int, fractions) -> np.ndarray:
    """A random label in {0, 1, ...} per entry, in the given proportions."""
    counts = [int(round(f * n)) for f in fractions[:-1]]
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)] + [np.full(n - sum(counts), len(counts))])
    return rng.permutation(labels)


def sparsemax_data(n: int, seed: int) -> dict:
    """20% free, 5% at the cap u, 75% at 0, each ≥ 30% of the scale s ~ 1/n from a change."""
    rng = np.random.default_rng(seed)
    label = _split(rng, n, (0.20, 0.05, 0.75))  # 0 free, 1 at cap, 2 at zero; τ = 0
    free, upper, zero = label == 0, label == 1, label == 2
    x = np.where(free, rng.uniform(0.5, 1.5, n), 0.0)
    u = np.where(free, x * rng.uniform(1.3, 2.5, n), rng.uniform(0.5, 1.5, n))
    x = np.where(upper, u, x)
    scale = 1.0 / x.sum()
    y = np.where(upper, u * rng.uniform(1.3, 2.5, n), np.where(zero, -rng.uniform(0.3, 3.0, n), x))
    return dict(params=(scale * y, scale * u), g=rng.standard_normal(n), x=scale * x)


def softmax_data(n: int, seed: int) -> dict:
    """y ~ N(0, 0.5²); 30% of the entries capped at 0.3–0.6 of their softmax value, the
    others with caps 1.5–3 times it."""
    rng = np.random.default_rng(seed)
    y = 0.5 * rng.standard_normal(n)
    upper = _split(rng, n, (0.3, 0.7)) == 0
    ratio = np.where(upper, rng.uniform(0.3, 0.6, n), rng.uniform(1.5, 3.0, n))
    e = np.exp(y - np.log(np.sum(np.where(upper, ratio, 1.0) * np.exp(y))))  # exp(y − τ), 1ᵀx* = 1
    u = ratio * e
    return dict(params=(y, u), g=rng.standard_normal(n), x=np.minimum(u, e))


def lse_data(n: int, seed: int) -> dict:
    """30% free: c = ∇lse(x*) + x* − ν with x*_F ~ U(0.5, 1.5)·s, ν_A ~ U(0.5, 1.5)·s (λ = 0)."""
    rng = np.random.default_rng(seed)
    free = _split(rng, n, (0.3, 0.7)) == 0
    x = np.where(free, rng.uniform(0.5, 1.5, n), 0.0)
    x /= x.sum()
    s = 1.0 / free.sum()
    nu = np.where(free, 0.0, s * rng.uniform(0.5, 1.5, n))
    p = np.exp(x - x.max())
    c = p / p.sum() + x - nu  # stationarity: softmax(x) + x − c + λ1 − ν = 0
    return dict(params=(c,), g=rng.standard_normal(n), x=x)


def lse_objective(x, c):
    return jax.nn.logsumexp(x) + 0.5 * jnp.sum((x - c) ** 2)


def _simplex_constraints(n: int, dtype):
    return (jnp.ones((1, n), dtype), jnp.ones((1,), dtype), -jnp.eye(n, dtype=dtype), jnp.zeros((n,), dtype))


def altdiff_layer(name: str):
    """x*(params; options) of each layer, as altdiff_jax computes it."""
    if name == "constrained_sparsemax":
        return lambda y, u, options: ad.constrained_sparsemax(y, u, options)
    if name == "constrained_softmax":
        return lambda y, u, options: ad.constrained_softmax(y, u, options)

    def convex(c, options):
        A, b, G, h = _simplex_constraints(c.shape[0], c.dtype)
        return ad.solve_convex(lse_objective, c, A, b, G, h, options)

    return convex


def cvxpy_layer(name: str, n: int):
    """The same problem as a cvxpylayers JAX layer (DPP), returning x*."""
    import cvxpy as cp
    from cvxpylayers.jax import CvxpyLayer

    x = cp.Variable(n)
    if name == "constrained_sparsemax":
        y, u = cp.Parameter(n), cp.Parameter(n)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0, x <= u])
        parameters = [y, u]
    elif name == "constrained_softmax":
        y, u = cp.Parameter(n), cp.Parameter(n)
        problem = cp.Problem(cp.Minimize(-y @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1, x <= u])
        parameters = [y, u]
    else:
        c = cp.Parameter(n)
        problem = cp.Problem(cp.Minimize(cp.log_sum_exp(x) + 0.5 * cp.sum_squares(x - c)),
                             [cp.sum(x) == 1, x >= 0])
        parameters = [c]
    assert problem.is_dpp()
    return CvxpyLayer(problem, parameters=parameters, variables=[x])


# --------------------------------------------------------------------------- references


def _bisect(total, lo: float, hi: float) -> float:
    """τ with total(τ) = 1 for a non-increasing total, to round-off."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if total(mid) > 1.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4 * np.finfo(float).eps * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def sparsemax_reference(params, g):
    """Closed-form gradient of gᵀx*(y, u) for x* = clip(y − τ, 0, u), 1ᵀx* = 1."""
    y, u = params
    tau = _bisect(lambda t: np.clip(y - t, 0.0, u).sum(), y.min() - 1.0, y.max())
    x = np.clip(y - tau, 0.0, u)
    free = (y - tau > 0) & (y - tau < u)
    upper = y - tau >= u
    # dx_F = (I − 11ᵀ/|F|) dy_F − 1 Σ_U du/|F|,  dx_U = du_U,  dx_A = 0
    mean = g[free].mean()
    grad_y = np.where(free, g - mean, 0.0)
    grad_u = np.where(upper, g - mean, 0.0)
    margin = float(np.min(np.minimum(np.abs(y - tau), np.abs(y - tau - u))))
    return x, np.concatenate([grad_y, grad_u]), dict(free=int(free.sum()), upper=int(upper.sum()), margin=margin)


def softmax_reference(params, g):
    """Closed-form gradient of gᵀx*(y, u) for x* = min(u, exp(y − τ)), 1ᵀx* = 1."""
    y, u = params
    z = y - y.max()
    tau = _bisect(lambda t: np.minimum(u, np.exp(z - t)).sum(), -50.0, 50.0)
    e = np.exp(z - tau)
    upper = e >= u
    free = ~upper
    x = np.where(upper, u, e)
    # x_F = exp(y_F − τ), dτ = (x_Fᵀ dy_F + Σ_U du) / Σ x_F
    s = x[free].sum()
    gx = (g * x)[free].sum()
    grad_y = np.where(free, x * g - x * gx / s, 0.0)
    grad_u = np.where(upper, g - gx / s, 0.0)
    margin = float(np.min(np.abs(e - u)))
    return x, np.concatenate([grad_y, grad_u]), dict(free=int(free.sum()), upper=int(upper.sum()), margin=margin)


def lse_reference(params, g):
    """Exact x* and gradient of gᵀx*(c) by an active-set method in NumPy.

    Starting from the active set of the Euclidean projection of c onto the simplex, each
    round minimises f on {x_A = 0, 1ᵀx_F = 1} by Newton (quadratic convergence), then
    moves entries with x_F < 0 to A and entries with ν_A < 0 to F, until the KKT
    conditions hold (x_F > 0, ν_A >= 0). The gradient follows from the bordered free-set system [[H_FF, 1], [1ᵀ, 0]].
    """
    (c,) = params
    n = c.size
    free = c - _bisect(lambda t: np.clip(c - t, 0.0, None).sum(), c.min() - 1.0, c.max()) > 0

    def kkt_matrix(x, free):
        p = np.exp(x - x.max())
        p /= p.sum()
        hessian = (np.diag(p) - np.outer(p, p) + np.eye(n))[np.ix_(free, free)]
        k = int(free.sum())
        K = np.zeros((k + 1, k + 1))
        K[:k, :k], K[:k, k], K[k, :k] = hessian, 1.0, 1.0
        return p, K

    for _ in range(50):
        x = np.where(free, 1.0 / free.sum(), 0.0)
        for _ in range(50):  # f is strictly convex on the affine set: undamped Newton from 1/|F| is fine
            p, K = kkt_matrix(x, free)
            step = np.linalg.solve(K, np.concatenate([-(p + x - c)[free], [0.0]]))[:-1]
            x[free] += step
            if np.max(np.abs(step)) < 1e-15:
                break
        p, K = kkt_matrix(x, free)
        gradient = p + x - c
        nu = gradient - gradient[free].mean()  # ∇f + λ1 − ν = 0 with ν_F = 0
        negative_x, negative_nu = free & (x <= 0), ~free & (nu < -1e-13)
        if not (negative_x.any() or negative_nu.any()):
            break
        free = (free & ~negative_x) | negative_nu
    else:
        print("  note: the log-sum-exp reference's active-set method did not settle")
    # H_FF dx_F + dλ 1 = dc_F, 1ᵀ dx_F = 0: the gradient is the adjoint's top block.
    w = np.linalg.solve(K.T, np.concatenate([g[free], [0.0]]))
    grad_c = np.zeros(n)
    grad_c[free] = w[:-1]
    margin = float(min(x[free].min(), nu[~free].min(initial=np.inf)))
    return x, grad_c, dict(free=int(free.sum()), upper=0, margin=margin)


LAYERS = {
    "constrained_sparsemax": (sparsemax_data, sparsemax_reference),
    "constrained_softmax": (softmax_data, softmax_reference),
    "lse": (lse_data, lse_reference),
}
LABEL = {"constrained_sparsemax": "constrained_sparsemax", "constrained_softmax": "constrained_softmax",
         "lse": "solve_convex (log-sum-exp)"}


# ------------------------------------------------------------------------------ timing


def run_compiled(compiled, args):
    """(result, seconds, note): one timed call; two more, and the median of three, when the
    first took under ONCE_S (a longer call is measured once)."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
        if times[0] >= ONCE_S:
            return result, times[0], "measured once"
    return result, statistics.median(times), ""


def run_eager(call):
    """(result, seconds, note) of an un-jittable call: one warm-up call, then as run_compiled."""
    jax.block_until_ready(call())
    return run_compiled(lambda: call(), ())


def flat(grads) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in grads])


def accuracy(grad: np.ndarray, reference: np.ndarray):
    cosine = float(grad @ reference / (np.linalg.norm(grad) * np.linalg.norm(reference)))
    return cosine, float(np.linalg.norm(grad - reference) / np.linalg.norm(reference))


def _describe(what, info) -> str:
    status = ad.Status(int(info.status))
    return f"{what} {int(info.iterations)} iterations" + ("" if status == ad.Status.SOLVED else f" ({status.name})")


def _per_iteration(compiled, arrays) -> float:
    start = time.perf_counter()
    jax.block_until_ready(compiled(*arrays))
    return (time.perf_counter() - start) / PROBE_ITERATIONS


def altdiff_forward(name, arrays, options):
    """Forward solve, jitted (compile excluded): the same computation for every strategy,
    since without ``grad`` no Jacobian is carried."""
    layer = altdiff_layer(name)
    compiled = jax.jit(lambda *p: layer(*p, options)).lower(*arrays).compile()
    solution, seconds, note = run_compiled(compiled, arrays)
    return solution, seconds, [n for n in (note and f"forward {note}", _describe("forward", solution.info)) if n]


def _gradient_function(name, arrays, g, options):
    layer = altdiff_layer(name)

    def loss(*p):
        solution = layer(*p, options)
        return jnp.asarray(g) @ solution.x, solution.info

    grad = jax.grad(loss, argnums=tuple(range(len(arrays))), has_aux=True)
    return jax.jit(grad).lower(*arrays).compile()


def altdiff_backward(name, arrays, g, options):
    """jax.grad of gᵀx* with respect to every parameter, jitted (compile excluded)."""
    (grads, info), seconds, note = run_compiled(_gradient_function(name, arrays, g, options), arrays)
    return flat(grads), seconds, [n for n in (note and f"fwd+bwd {note}", _describe("under grad", info)) if n]


def projected_seconds(name, arrays, g, options, iterations: int) -> float:
    """Seconds per iteration of a PROBE_ITERATIONS-iteration gradient run (compiled
    separately) times ``iterations``: a lower bound on the full run when ``iterations`` is
    the forward's, since the carried Jacobians take at least as many to converge."""
    probe = dataclasses.replace(options, max_iter=PROBE_ITERATIONS)
    return _per_iteration(_gradient_function(name, arrays, g, probe), arrays) * iterations


def altdiff_worker(connection, name, params, g, tol, budget):
    """The altdiff_jax rows of one problem, in a child process that the parent can stop.

    Sends ("stage", what) before each stage and ("done", what, result) after it: the
    forward, then the "adjoint" and "altdiff" gradients.
    """
    warnings.filterwarnings("ignore")
    arrays = tuple(jnp.asarray(p) for p in params)
    connection.send(("stage", "forward"))
    solution, t_forward, notes = altdiff_forward(name, arrays, ad.Options(tol=tol))
    iterations = int(solution.info.iterations)
    connection.send(("done", "forward", (np.asarray(solution.x), t_forward, notes)))
    for method in ("adjoint", "altdiff"):
        connection.send(("stage", method))
        options = ad.Options(tol=tol, differentiation=method)
        if method == "altdiff":
            projected = projected_seconds(name, arrays, g, options, iterations)
            if projected > budget:
                connection.send(("done", method, (None, None, [f"fwd+bwd skipped: projected >= {projected:.0f} s "
                                                              f"(> budget {budget:.0f} s)"])))
                continue
        connection.send(("done", method, altdiff_backward(name, arrays, g, options)))
    connection.close()


def run_altdiff_rows(name, params, g, tol, budget):
    """{stage: result or None} from altdiff_worker, stopping it at ``budget`` s per stage.

    A stage that overruns (its compile included) is reported as None, with the stages after
    it: the child is terminated.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process running XLA
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=altdiff_worker, args=(sender, name, params, g, tol, budget), daemon=True)
    worker.start()
    sender.close()
    results, stage, deadline = {}, None, time.perf_counter() + budget + 60.0  # + start-up and import
    try:
        while len(results) < 3:
            if not receiver.poll(max(0.0, deadline - time.perf_counter())):
                break
            try:
                message = receiver.recv()
            except EOFError:  # the child died
                stage = f"{stage} (child process died)"
                break
            if message[0] == "stage":
                stage, deadline = message[1], time.perf_counter() + budget
            else:
                results[message[1]] = message[2]
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join()
    return results, stage


def run_cvxpylayers(name, params, g):
    start = time.perf_counter()
    layer = cvxpy_layer(name, params[0].size)
    setup = time.perf_counter() - start
    arrays = tuple(jnp.asarray(p) for p in params)
    solver_args = {"solve_method": "Clarabel"}
    gj = jnp.asarray(g)
    loss = jax.grad(lambda *p: gj @ layer(*p, solver_args=solver_args)[0], argnums=tuple(range(len(arrays))))
    (x,), t_forward, note_f = run_eager(lambda: layer(*arrays, solver_args=solver_args))
    grads, t_backward, note_b = run_eager(lambda: loss(*arrays))
    notes = [n for n in (note_f and f"forward {note_f}", note_b and f"fwd+bwd {note_b}") if n]
    notes.append(f"canonicalization {setup:.2f} s (excluded)")
    return np.asarray(x), flat(grads), t_forward, t_backward, notes


# -------------------------------------------------------------------------------- main


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"jax {jax.__version__} ({jax.default_backend()})")


def source_version() -> str:
    """The commit of the altdiff_jax being measured, '+ uncommitted changes' when dirty."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "altdiff_jax"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "altdiff_jax (no git)"
    return f"altdiff_jax at {commit}" + (" + uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--layers", nargs="*", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--budget-s", type=float, default=120.0,
                        help="wall-clock limit of each altdiff_jax stage, compile included (default 120)")
    parser.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    args = parser.parse_args()
    started = time.perf_counter()

    try:
        import cvxpylayers
        import diffcp
        import cvxpylayers.jax  # noqa: F401  (the JAX interface)

        cvx = (f"cvxpylayers {getattr(cvxpylayers, '__version__', '?')} (JAX interface, DIFFCP backend: "
               f"diffcp {getattr(diffcp, '__version__', '?')}, solve_method=Clarabel at its default "
               f"tolerances, default derivative mode lsqr; not jittable, timed eagerly after a warm-up "
               f"call, canonicalization excluded)")
    except ImportError as error:
        cvx = None
        print(f"note: cvxpylayers is not installed ({error}): its rows are left out "
              f"(`pip install cvxpylayers` adds them)")
    warnings.filterwarnings("ignore", module="cvxpy")
    warnings.filterwarnings("ignore", module="cvxpylayers")
    warnings.filterwarnings("ignore", module="diffcp")

    header = [
        f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}; {source_version()}",
        f"float64 on CPU; altdiff_jax Options(tol={args.tol:g}, differentiation=...), other options "
        f"default; jitted, compile excluded; median of {REPEATS} calls (one call when it takes "
        f"over {ONCE_S:.0f} s)",
        "loss gᵀx*, g ~ N(0, I); fwd+bwd = jax.grad with respect to every parameter (y and u, or c)",
        f"budget {args.budget_s:.0f} s of wall clock per altdiff_jax stage (forward; adjoint fwd+bwd; "
        f"altdiff fwd+bwd), compile included: a stage running over is stopped and reported as '> budget'; "
        f"differentiation='altdiff' is skipped up front where a {PROBE_ITERATIONS}-iteration probe's cost "
        f"per iteration x the forward's iterations (a lower bound) exceeds the budget",
        "the forward is the same computation for 'adjoint' and 'altdiff' (no Jacobian is carried "
        "without grad): measured once, shown on both rows",
    ]
    if cvx:
        header.append(cvx)
    print("\n".join(header))
    print(f"{'layer':<27} {'n':>5} {'method':<12} {'forward s':>10} {'fwd+bwd s':>10} {'cosine':>12} "
          f"{'rel. error':>10}  notes")
    rows, notes, seconds = [], [], {}

    def report(name, size, method, t_f, t_b, grad, grad_ref, row_notes):
        """One row; t_f and t_b are seconds, or a string when not measured."""
        cells = [f"{t:.4f}" if isinstance(t, float) else t for t in (t_f, t_b)]
        if grad is None:
            cells += ["–", "–"]
        else:
            cosine, error = accuracy(grad, grad_ref)
            cells += [f"{cosine:.9f}", f"{error:.2e}"]
        rows.append((LABEL[name], size, method, *cells))
        seconds[name, size, method] = tuple(t if isinstance(t, float) else None for t in (t_f, t_b))
        notes.append(f"{LABEL[name]}, n={size}, {method}: " + "; ".join(row_notes))
        print(f"{LABEL[name]:<27} {size:>5} {method:<12} {cells[0]:>10} {cells[1]:>10} {cells[2]:>12} "
              f"{cells[3]:>10}  {'; '.join(row_notes)}", flush=True)

    for size in args.sizes:
        for name in args.layers:
            make_data, reference = LAYERS[name]
            data = make_data(size, seed=size)
            params, g = data["params"], data["g"]
            x_ref, grad_ref, sets = reference(params, g)
            planted = float(np.max(np.abs(x_ref - data["x"])))
            if planted > 1e-12:
                print(f"  note: the reference x* differs from the planted one by {planted:.1e}")
            results, stage = run_altdiff_rows(name, params, g, args.tol, args.budget_s)
            over = f"> {args.budget_s:.0f}"
            stopped = f"the {stage} stage ran over the {args.budget_s:.0f} s budget (compile included): stopped"
            if "forward" in results:
                x, t_forward, forward_notes = results["forward"]
                forward_notes = forward_notes + [f"‖x − x*‖∞ {float(np.max(np.abs(x - x_ref))):.1e}"]
            else:
                t_forward, forward_notes = over, []
            for method in ("adjoint", "altdiff"):
                if method in results:
                    grad, t_backward, row_notes = results[method]
                    t_backward = "skipped" if grad is None else t_backward
                    report(name, size, method, t_forward, t_backward, grad, grad_ref, forward_notes + row_notes)
                elif stage == method:
                    report(name, size, method, t_forward, over, None, grad_ref, forward_notes + [stopped])
                else:
                    report(name, size, method, t_forward, "–", None, grad_ref,
                           forward_notes + [f"not run: {stopped}"])
            if cvx:
                x, grad, t_f, t_b, row_notes = run_cvxpylayers(name, params, g)
                x_note = f"‖x − x*‖∞ {float(np.max(np.abs(x - x_ref))):.1e}"
                report(name, size, "cvxpylayers", t_f, t_b, grad, grad_ref, row_notes + [x_note])
            print(f"  reference x*: {sets['free']} free entries, {sets['upper']} at their upper bound; margin "
                  f"{sets['margin']:.1e} to a change of active set")
            notes.append(f"{LABEL[name]}, n={size}, reference: {sets['free']} free, {sets['upper']} at upper "
                         f"bound, margin {sets['margin']:.1e}")

    ratios = []
    for size in args.sizes:
        for name in args.layers:
            parts = []
            for label, a, b, which in (("forward adjoint/cvxpylayers", "adjoint", "cvxpylayers", 0),
                                       ("fwd+bwd adjoint/cvxpylayers", "adjoint", "cvxpylayers", 1),
                                       ("fwd+bwd altdiff/adjoint", "altdiff", "adjoint", 1)):
                ta, tb = (seconds.get((name, size, m), (None, None))[which] for m in (a, b))
                if ta is not None and tb is not None:
                    parts.append(f"{label} {ta / tb:.3g}")
            if parts:
                ratios.append(f"{LABEL[name]}, n={size}: " + ", ".join(parts))
    if ratios:
        print("time ratios:\n" + "\n".join(f"  {line}" for line in ratios))
    elapsed = time.perf_counter() - started
    header.append(f"whole run {elapsed:.0f} s; load average at end {os.getloadavg()[0]:.1f}")
    print(header[-1])
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Non-QP layers: altdiff_jax vs cvxpylayers\n\n")
            f.write("`python benchmarks/" + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "`\n\n")
            f.write("".join(f"- {line}\n" for line in header))
            f.write("\n| layer | n | method | forward s | fwd+bwd s | cosine | rel. error |\n")
            f.write("|---|---:|---|---:|---:|---:|---:|\n")
            f.write("".join("| " + " | ".join(str(c) for c in row) + " |\n" for row in rows))
            if ratios:
                f.write("\nTime ratios:\n\n" + "".join(f"- {line}\n" for line in ratios))
            f.write("\nPer-row notes:\n\n" + "".join(f"- {line}\n" for line in notes))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
