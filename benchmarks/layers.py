"""The non-QP layers: time and gradient accuracy of altdiff_jax vs cvxpylayers (and qpth).

Run ``python benchmarks/layers.py [--sizes 100 1000] [--tol 1e-6] [--budget-s 120]
[--layers ...] [--out FILE]`` (or ``python -m benchmarks.layers``). cvxpylayers and qpth are
optional: a peer that is not installed is left out with one line saying so.

The layers of the paper's Tables 4 and 6 (the QP layer is in ``benchmarks/paper.py``), float64
on CPU, measured side by side with ``harness.run_cases`` (each contender in its own process,
interleaved timing, a wall-clock budget per contender and problem, set-up excluded):

* ``constrained_sparsemax(y, u)``: argmin ‖x − y‖² s.t. 1ᵀx = 1, 0 <= x <= u, gradient
  with respect to y and u;
* ``constrained_softmax(y, u)``: argmin −yᵀx + Σ xᵢ log xᵢ s.t. 1ᵀx = 1, x <= u,
  gradient with respect to y and u;
* ``solve_convex`` with f(x; c) = log Σ exp(xᵢ) + ½‖x − c‖² s.t. 1ᵀx = 1, x >= 0
  (G = −I), θ = c: a smooth, non-quadratic objective with a dense Hessian.

Contenders (``layer_contenders``, shared with ``benchmarks/paper.py``): altdiff_jax at
``Options(tol, differentiation=...)`` for each strategy; cvxpylayers' JAX layer (DIFFCP
backend, Clarabel at the same tolerance, diffcp's "lsqr" derivative, as in the paper's
appendix); qpth for constrained sparsemax (a QP). See ``benchmarks/harness/peers.py``.

Gradient references, independent of the code paths being timed:

* constrained sparsemax: x* by bisection on the threshold τ of x = clip(y − τ, 0, u), and
  the closed-form Jacobian of the capped-simplex projection on its free set;
* constrained softmax: x* by bisection on τ of x = min(u, exp(y − τ)), and its
  closed-form Jacobian (a softmax on the free set);
* log-sum-exp: an active-set method in NumPy started from the active set of the
  projection of c onto the simplex (exact Newton on the free set, sets updated until
  x_F > 0 and ν_A >= 0), and the gradient from the bordered free-set KKT system.

Each reference also gives its margin, the distance of x* from a change of active set:
the gradient jumps there, and a solve whose error exceeds the margin may differentiate
the other branch.
"""

from __future__ import annotations

import argparse

import numpy as np

if __package__:
    from . import harness
else:
    import harness

STRATEGIES = ("altdiff", "adjoint", "kkt")


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
PARAMETERS = {"constrained_sparsemax": ("y", "u"), "constrained_softmax": ("y", "u"), "lse": ("c",)}


def case(layer: str, n: int, tol: float) -> harness.Case:
    """A planted problem of the layer at size n, with its exact x* and gradient."""
    make, reference = LAYERS[layer]
    data = make(n, seed=n)
    names = PARAMETERS[layer]
    x, grad, sets = reference(data["params"], data["g"])
    note = (f"{LABEL[layer]}, n={n}: reference x* {sets['free']} free entries, {sets['upper']} at their upper bound, "
            f"margin {sets['margin']:.1e} to a change of active set")
    planted = float(np.max(np.abs(x - data["x"])))
    if planted > 1e-12:
        note += f"; differs from the planted x* by {planted:.1e}"
    return harness.Case(f"n={n}", dict(zip(names, data["params"])), data["g"], x,
                        dict(zip(names, np.split(grad, len(names)))), tol, n, note)


def layer_contenders(layer: str, tol: float, n: int) -> list:
    """altdiff_jax (each strategy), cvxpylayers ("lsqr"), and qpth for constrained sparsemax.

    Memory estimates (rough): altdiff_jax a few dense n x 2n blocks for its ``altdiff``
    strategy (the carried Jacobian columns) and for the log-sum-exp layer (a dense Hessian),
    O(n) otherwise (the sparsemax and softmax layers are structured); cvxpylayers sparse,
    qpth its dense G (2n x n) and the (2n)² Schur complement.
    """
    c = harness.contender

    def altdiff_memory(strategy: str) -> float:
        if strategy == "altdiff":
            return 8.0 * 12 * n * n
        return 8.0 * 4 * n * n if layer == "lse" else 2**29 + 8.0 * 200 * n

    rows = [c(f"altdiff_jax {s}", "altdiff", tol, altdiff_memory(s), differentiation=s, layer=layer)
            for s in STRATEGIES]
    rows.append(c("cvxpylayers (lsqr)", "cvxpylayers_layer", tol, 2**29 + 8.0 * 200 * n, layer=layer, mode="lsqr"))
    if layer == "constrained_sparsemax":
        rows.append(c("qpth (OptNet)", "qpth_sparsemax", tol, 8.0 * 17 * n * n))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--layers", nargs="*", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--budget-s", type=float, default=120.0,
                        help="wall-clock limit per contender and problem, compile included (default 120)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", nargs="*", default=None, help="keep the contenders whose label contains one")
    parser.add_argument("--out", default=None, help="also write the tables as Markdown to this file")
    args = parser.parse_args()
    header = harness.hardware_line(("cvxpylayers", "diffcp", "clarabel", "qpth", "torch"))
    print(header)
    body = [f"float64 on CPU; every solver at tolerance {args.tol:g}; loss gᵀx*, g ~ N(0, I); gradient with respect "
            f"to every parameter (y and u, or c); times: best of {args.repeats} interleaved runs, set-up "
            f"(compilation, canonicalization) apart; budget {args.budget_s:.0f} s per contender and problem"]
    try:
        for layer in args.layers:
            results = harness.run_cases([case(layer, n, args.tol) for n in args.sizes],
                                        lambda c: layer_contenders(layer, c.tol, c.problem[PARAMETERS[layer][0]].size),
                                        args.repeats, args.budget_s, peers=args.peers)
            table = harness.results_table(results)
            print(table)
            body += ["", f"## {LABEL[layer]}", "", table, "Notes:", ""]
            body += [f"- {case.note}" for case, _ in results] + [f"- {harness.timing_spread(results)}"]
    finally:
        harness.shutdown()
    if args.out:
        harness.write_markdown(args.out, "Non-QP layers: altdiff_jax vs cvxpylayers and qpth", header, body)


if __name__ == "__main__":
    main()
