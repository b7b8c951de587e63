"""Shared benchmark harness: provenance, interleaved timing, exact references, peers.

Every benchmark script imports this module (``from benchmarks import harness`` when run as
``python -m benchmarks.NAME``, ``import harness`` when run as ``python benchmarks/NAME.py``).

* :func:`hardware_line`: the line every results file starts with (commit, date, CPU,
  cores, memory, jax and the peers' versions).
* :func:`interleaved`: several named callables, each already compiled and warmed up, run
  round-robin; best, median and spread of each. The machines here swing 2x from one run
  to the next: interleaving exposes every contender to the same swings, and the best of
  several runs is the least disturbed one.
* :func:`reference`: the exact x* of a QP (Clarabel through cvxpy, or a dense NumPy
  interior point on problems too large for Clarabel's sparse LDLᵀ) and the exact gradient of
  gᵀx* by the adjoint of the active-set KKT system (``tests/reference.py``); :func:`cosine`
  and :func:`relative_error` compare a gradient with it.
* :func:`paper_qp`: the paper's dense QP generator.
* Adapters (:data:`ADAPTERS`): altdiff_jax and each peer as "solve, and gradient of gᵀx*
  with respect to every parameter it supports", with forward and backward timed apart where
  the peer allows. :func:`run_adapter` measures one in this process; :func:`side_by_side`
  measures several, each in its own child process (a hard time budget, a memory cap, and a
  crash or hang that stays there), interleaved.
* :func:`markdown_table`, :func:`write_markdown`, :func:`plot_panels`: the results files.

A peer that is not installed is skipped with one printed line, never an exception.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gc
import importlib
import importlib.metadata
import math
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QP_KEYS = ("P", "q", "A", "b", "G", "h")
PEER_PACKAGES = ("qpax", "jaxopt", "cvxpylayers", "diffcp", "qpth", "torch", "osqp", "cvxpy", "clarabel")


# ------------------------------------------------------------------------------ provenance


def package_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_version() -> str:
    """``git rev-parse --short HEAD``, with a mark when altdiff_jax has uncommitted changes."""
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "altdiff_jax"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown (no git)"
    return f"commit {commit}" + (" + uncommitted changes to altdiff_jax" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _memory_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


def total_memory() -> float:
    """Bytes of memory of the machine (MemTotal), or +inf where unknown."""
    kib = _memory_kib("MemTotal")
    return math.inf if kib is None else 1024.0 * kib


def available_memory() -> float:
    """Bytes of memory available now (MemAvailable), or +inf where unknown."""
    kib = _memory_kib("MemAvailable")
    return math.inf if kib is None else 1024.0 * kib


def hardware_line(packages: Sequence[str] = ()) -> str:
    """One line of provenance: commit, date, CPU, cores, memory, load, jax, package versions.

    Args:
        packages: distributions whose versions to add (those not installed are left out).
    """
    total = _memory_kib("MemTotal")
    parts = [
        source_version(),
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        _cpu_model(),
        f"{os.cpu_count()} cores",
        f"{total / 2**20:.0f} GiB RAM" if total else "RAM unknown",
        f"load {os.getloadavg()[0]:.1f}",
        f"Python {platform.python_version()}",
        f"jax {jax.__version__} ({jax.default_backend()}, x64 {jax.config.jax_enable_x64})",
    ]
    if "OPENBLAS_NUM_THREADS" in os.environ:
        parts.append(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    versions = [f"{name} {package_version(name)}" for name in packages if package_version(name)]
    return "machine: " + ", ".join(parts) + ("; " + ", ".join(versions) if versions else "")


# ---------------------------------------------------------------------------------- timing


def block(result):
    """Waits for JAX's asynchronous dispatch (a no-op on non-JAX values)."""
    return jax.block_until_ready(result)


def time_call(fn: Callable[[], Any]) -> float:
    """Seconds of one call of ``fn``, its JAX results included."""
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


@dataclasses.dataclass
class Timing:
    """The seconds of the runs of one callable."""

    times: list = dataclasses.field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times) if self.times else math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.nan

    @property
    def spread(self) -> float:
        """(slowest − fastest) / fastest: how much the machine swung over these runs."""
        return max(self.times) / min(self.times) - 1.0 if self.times else math.nan

    def __str__(self) -> str:
        if not self.times:
            return "not measured"
        if len(self.times) == 1:
            return f"{self.best:.4g} s (1 run)"
        return (f"best {self.best:.4g} s, median {self.median:.4g} s, spread {100 * self.spread:.0f}% "
                f"({len(self.times)} runs)")


class Dropped(Exception):
    """Raised by a callable of :func:`interleaved` that must not be called again."""


def interleaved(calls: Mapping[str, Callable[[], Any]], repeats: int = 5, once_s: float = 10.0,
                timed: bool = False, warmup: bool = False) -> dict[str, Timing]:
    """Runs the callables round-robin ``repeats`` times; their timings by name.

    Each round starts one callable further along, so that none always runs right after the
    same other one. A callable whose run took over ``once_s`` seconds is not run again (it
    keeps the runs it had), and one that raises :class:`Dropped` is left out from then on.

    Args:
        calls: name -> callable, each compiled and warmed up already.
        repeats: rounds.
        once_s: a run longer than this is the callable's last.
        timed: the callables return their own seconds (a child process timed itself)
            instead of a result to wait for.
        warmup: call each once first, untimed (compilation, caches).
    """
    if warmup:
        for call in calls.values():
            block(call())
    timings = {name: Timing() for name in calls}
    active = list(calls)
    for round_ in range(repeats):
        if not active:
            break
        shift = round_ % len(active)
        for name in active[shift:] + active[:shift]:
            try:
                seconds = calls[name]() if timed else time_call(calls[name])
            except Dropped:
                active.remove(name)
                continue
            timings[name].times.append(seconds)
            if seconds > once_s:
                active.remove(name)
    return timings


# ------------------------------------------------------------------------------- problems


def paper_qp(n: int, ineq: int, eq: int, seed: int = 0) -> dict:
    """The paper's dense QP (section 5.1), made feasible.

    P = MᵀM with M standard Gaussian (n, n); q, A (eq, n), G (ineq, n) standard Gaussian;
    b = A x0 and h = G x0 + U(0, 1) for a Gaussian x0. NumPy float64 arrays by name.
    """
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    P = M.T @ M
    del M
    q = rng.standard_normal(n)
    A, G, x0 = rng.standard_normal((eq, n)), rng.standard_normal((ineq, n)), rng.standard_normal(n)
    return dict(P=P, q=q, A=A, b=A @ x0, G=G, h=G @ x0 + rng.uniform(size=ineq))


def stacked_qp(problems: Sequence[Mapping[str, np.ndarray]], in_axes, dtype=jnp.float64):
    """The ``altdiff_jax.QP`` of a vmapped batch: leaves whose ``in_axes`` entry is None
    from the first problem, the others stacked along a new leading axis."""
    import altdiff_jax as ad

    leaves = {}
    for k in QP_KEYS:
        stacked = np.stack([pr[k] for pr in problems])
        leaves[k] = jnp.asarray(stacked[0] if getattr(in_axes, k) is None else stacked, dtype)
    return ad.QP(**leaves)


def loss_vector(n: int, seed: int = 1) -> np.ndarray:
    """g ~ N(0, I) of the linear loss gᵀx*."""
    return np.random.default_rng(seed).standard_normal(n)


# ----------------------------------------------------------------------------- references


def _tests_module(name: str):
    """A helper module of the test suite, ``tests/NAME.py``."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(name)


def _tests_reference():
    """The test suite's NumPy/cvxpy ground truth, ``tests/reference.py``."""
    return _tests_module("reference")


def interior_point(P, q, A, b, G, h, tol: float = 1e-10, max_iter: int = 60):
    """Dense Mehrotra predictor-corrector for min ½xᵀPx + qᵀx s.t. Ax = b, Gx <= h.

    Each iteration factors H = P + Gᵀ diag(ν/s) G (Cholesky) and the Schur complement
    A H⁻¹ Aᵀ, with LAPACK: for dense problems too large for Clarabel's sparse LDLᵀ. It stops
    at ``tol`` (relative to the data's size) or when the complementarity gap is below it and
    the residuals stall (H is then too ill-conditioned for further progress): :func:`polish`
    makes the point exact.

    Returns:
        (x, lam, nu, iterations) with P x + q + Aᵀλ + Gᵀν = 0, ν >= 0.
    """
    from scipy.linalg import cho_factor, cho_solve, solve_triangular

    n, m = q.size, h.size
    x, lam, s, nu = np.zeros(n), np.zeros(b.size), np.ones(m), np.ones(m)
    scale = 1.0 + max(np.abs(q).max(), np.abs(b).max(initial=0.0), np.abs(h).max())

    best = math.inf

    def max_step(v, dv):
        negative = dv < 0
        return min(1.0, float(np.min(-v[negative] / dv[negative], initial=np.inf)))

    for iteration in range(1, max_iter + 1):
        r_dual = P @ x + q + A.T @ lam + G.T @ nu
        r_eq, r_ineq = A @ x - b, G @ x + s - h
        mu = s @ nu / m
        residual = max(np.abs(r_dual).max(), np.abs(r_eq).max(initial=0.0), np.abs(r_ineq).max())
        if mu <= tol * scale and (residual <= tol * scale or residual > 0.5 * best):
            break
        best = min(best, residual) if iteration > 1 else residual
        L = _cholesky(P + (G.T * (nu / s)) @ G)
        Y = solve_triangular(L, A.T, lower=True)
        schur = cho_factor(Y.T @ Y)

        def newton(r_comp):  # the step for s∘ν → s∘ν − r_comp
            r1 = -r_dual - G.T @ ((nu * r_ineq - r_comp) / s)
            h_r1 = cho_solve((L, True), r1)
            d_lam = cho_solve(schur, A @ h_r1 + r_eq)
            dx = h_r1 - cho_solve((L, True), A.T @ d_lam)
            ds = -r_ineq - G @ dx
            return dx, d_lam, ds, (-r_comp - nu * ds) / s

        dx, d_lam, ds, d_nu = newton(s * nu)
        alpha = min(max_step(s, ds), max_step(nu, d_nu))
        sigma = ((s + alpha * ds) @ (nu + alpha * d_nu) / m / mu) ** 3
        dx, d_lam, ds, d_nu = newton(s * nu + ds * d_nu - sigma * mu)
        alpha = 0.99 * min(max_step(s, ds), max_step(nu, d_nu))
        x, lam, s, nu = x + alpha * dx, lam + alpha * d_lam, s + alpha * ds, nu + alpha * d_nu
    return x, lam, nu, iteration


def _cholesky(H: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of H, with the smallest diagonal shift (1e-14, 1e-12, ... times
    its largest diagonal entry) that makes round-off-indefinite H factorable: near the end of
    an interior-point solve the weights ν/s of the active rows reach 1e12 and more."""
    shift = 0.0
    for _ in range(6):
        try:
            return np.linalg.cholesky(H + shift * np.eye(H.shape[0]) if shift else H)
        except np.linalg.LinAlgError:
            shift = 100.0 * shift if shift else 1e-14 * float(np.max(np.diag(H)))
    return np.linalg.cholesky(H + shift * np.eye(H.shape[0]))


def polish(P, q, A, b, G, h, x, lam, nu):
    """The exact KKT point on the active set of (x, ν) (slack s_i/‖s‖∞ <= ν_i/‖ν‖∞): the
    dense equality-constrained system [[P, Cᵀ], [C, 0]] with C = (A; G_active). Returns
    (x, λ, ν, accepted): the input when the result is not primal-dual feasible."""
    slack = h - G @ x
    active = slack / max(np.abs(slack).max(), 1e-300) <= nu / max(nu.max(), 1e-300)
    C = np.vstack([A, G[active]])
    K = np.block([[P, C.T], [C, np.zeros((C.shape[0], C.shape[0]))]])
    z = np.linalg.solve(K, np.concatenate([-q, b, h[active]]))
    n, p = q.size, b.size
    nu_new = np.zeros_like(nu)
    nu_new[active] = z[n + p:]
    scale = 1.0 + max(np.abs(q).max(), np.abs(b).max(initial=0.0), np.abs(h).max())
    feasible = (G @ z[:n] - h).max() <= 1e-9 * scale and nu_new.min() >= -1e-9 * scale
    return (z[:n], z[n:n + p], np.maximum(nu_new, 0.0), True) if feasible else (x, lam, nu, False)


CLARABEL_MAX = 4000  # n + p + m above which the reference uses interior_point (LAPACK) instead


@dataclasses.dataclass
class Reference:
    """Exact x*, duals and gradient of gᵀx* with respect to P, q, A, b, G, h."""

    x: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    grads: dict
    note: str


def reference(problem: Mapping[str, np.ndarray], g: np.ndarray, solver: str = "auto") -> Reference:
    """The exact solution and gradient of gᵀx* of a dense QP.

    x* from Clarabel through cvxpy at tolerance 1e-10 (``tests/reference.clarabel_solve``),
    or from :func:`interior_point` (``solver="auto"`` picks it when n + p + m exceeds
    :data:`CLARABEL_MAX`: Clarabel's sparse LDLᵀ of a dense KKT matrix is too slow there),
    made exact by :func:`polish`; then the adjoint of the KKT system restricted to the active
    set (slack s_i/‖s‖∞ <= ν_i/‖ν‖∞), solved densely (``tests/reference.kkt_gradients``).
    The note gives the solver, the active count, and the KKT residuals of x*.
    """
    ref = _tests_reference()
    P, q, A, b, G, h = (np.asarray(problem[k], float) for k in QP_KEYS)
    size = q.size + b.size + h.size
    if solver == "clarabel" or (solver == "auto" and size <= CLARABEL_MAX):
        x, lam, nu = ref.clarabel_solve(P, q, A, b, G, h)
        how = "Clarabel (cvxpy, tol 1e-10)"
    else:
        x, lam, nu, iterations = interior_point(P, q, A, b, G, h)
        how = f"dense interior point (NumPy/LAPACK, {iterations} iterations)"
    x, lam, nu, polished = polish(P, q, A, b, G, h, x, lam, nu)
    how += ", polished on its active set" if polished else ", polish rejected (not feasible)"
    grads = ref.kkt_gradients(P, q, A, b, G, h, x, lam, nu, g)
    slack = h - G @ x
    active = int(np.sum(slack / max(np.abs(slack).max(), 1e-300) <= nu / max(nu.max(), 1e-300)))
    residuals = (np.abs(P @ x + q + A.T @ lam + G.T @ nu).max(), np.abs(A @ x - b).max(),
                 max(0.0, float(-slack.min())), float(np.abs(slack * nu).max()))
    note = (f"reference x*: {how}, {active} of {h.size} inequalities active; KKT residuals: stationarity "
            f"{residuals[0]:.1e}, equality {residuals[1]:.1e}, inequality {residuals[2]:.1e}, "
            f"complementarity {residuals[3]:.1e}; gradient by the dense active-set KKT adjoint")
    return Reference(x, lam, nu, grads, note)


def flatten(grads: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(grads[k], float)) for k in keys])


def cosine(grad, ref) -> float:
    """Cosine similarity of two gradients (dicts: over the keys of ``grad``)."""
    if isinstance(grad, Mapping):
        keys = [k for k in grad if grad[k] is not None]
        grad, ref = flatten(grad, keys), flatten(ref, keys)
    grad, ref = np.ravel(grad), np.ravel(ref)
    return float(grad @ ref / (np.linalg.norm(grad) * np.linalg.norm(ref)))


def relative_error(grad, ref) -> float:
    """‖grad − ref‖ / ‖ref‖ (dicts: over the keys of ``grad``)."""
    if isinstance(grad, Mapping):
        keys = [k for k in grad if grad[k] is not None]
        grad, ref = flatten(grad, keys), flatten(ref, keys)
    grad, ref = np.ravel(grad), np.ravel(ref)
    return float(np.linalg.norm(grad - ref) / np.linalg.norm(ref))


def symmetric(gradient_P) -> np.ndarray:
    """The symmetric part of a gradient with respect to P: P is symmetric, so only that part
    is a derivative (peers differ on whether they return it or q̄xᵀ)."""
    gradient_P = np.asarray(gradient_P, float)
    return 0.5 * (gradient_P + gradient_P.T)


# -------------------------------------------------------------------------------- adapters


class MissingPeer(Exception):
    """A peer's package is not installed."""


def _require(module: str, package: Optional[str] = None):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingPeer(f"{package or module} is not installed ({error}): its rows are left out "
                          f"(`pip install {package or module}` adds them)") from None


@dataclasses.dataclass
class Prepared:
    """One contender set up on one problem: compiled, warmed up, its results kept.

    Attributes:
        forward: solves only, as the layer's user does at inference.
        total: solves and computes the gradient of gᵀx*, as one training step does.
        backward: the gradient alone after a forward, where the peer can run it apart
            (None: backward time is total − forward).
        x: the solution; grads: gradient by parameter name (the symmetric part for P).
        setup_s: one-time set-up (compilation, canonicalization), excluded from the times.
        iterations: the forward's iterations, where the peer reports them.
        notes: status, iterations under grad, settings that matter.
    """

    forward: Callable[[], Any]
    total: Callable[[], Any]
    backward: Optional[Callable[[], Any]]
    x: np.ndarray
    grads: dict
    setup_s: float
    iterations: Optional[int] = None
    notes: list = dataclasses.field(default_factory=list)


def _jax_prepared(forward: Callable, gradient: Callable, args: tuple, note: Callable = lambda aux, grad: (None, []),
                  started: Optional[float] = None) -> Prepared:
    """A JAX contender from jitted ``forward(*args) -> (x, aux)`` and ``gradient(*args) ->
    (grads dict, aux)``: warmed up (the compilation is the set-up); ``note(aux, under_grad)``
    -> (iterations, notes)."""
    started = time.perf_counter() if started is None else started
    x, aux = block(forward(*args))
    grads, aux_grad = block(gradient(*args))
    grads = {k: np.asarray(v) for k, v in grads.items()}
    if "P" in grads:
        grads["P"] = symmetric(grads["P"])
    iterations, notes = note(aux, False)
    notes = notes + note(aux_grad, True)[1]
    return Prepared(lambda: forward(*args), lambda: gradient(*args), None, np.asarray(x), grads,
                    time.perf_counter() - started, iterations, notes)


def _as_jax(params: Mapping[str, Any]) -> dict:
    return {k: jnp.asarray(v) for k, v in params.items()}


# The layer problems: constrained sparsemax argmin ‖x − y‖² s.t. 1ᵀx = 1, 0 <= x <= u;
# constrained softmax argmin −yᵀx − H(x) s.t. 1ᵀx = 1, x <= u; and the log-sum-exp
# objective lse(x) + ½‖x − c‖² s.t. 1ᵀx = 1, x >= 0 through solve_convex.


def lse_objective(x, c):
    return jax.nn.logsumexp(x) + 0.5 * jnp.sum((x - c) ** 2)


@functools.cache
def _altdiff_functions(layer: Optional[str]):
    """Jitted (forward, gradient) of altdiff_jax's QP solve (``layer=None``) or of a
    structured layer, taking the Options as a pytree argument: a new tolerance reuses the
    compiled code (module-level, so a child process that hosts the same strategy again
    does not recompile)."""
    import altdiff_jax as ad

    def solve(params, options):
        if layer is None:
            solution = ad.solve(ad.QP(**params), options)
        elif layer == "lse":
            c = params["c"]
            n = c.shape[0]
            ones, eye = jnp.ones((1, n), c.dtype), jnp.eye(n, dtype=c.dtype)
            solution = ad.solve_convex(lse_objective, c, ones, jnp.ones(1, c.dtype), -eye, jnp.zeros(n, c.dtype),
                                       options)
        else:
            solution = getattr(ad, layer)(params["y"], params["u"], options)
        return solution.x, solution.info

    def loss(params, options, g):
        x, info = solve(params, options)
        return g @ x, info

    gradient = jax.grad(loss, has_aux=True)
    return jax.jit(lambda params, options, g: solve(params, options)), jax.jit(gradient)


def _altdiff_note(info, under_grad: bool):
    import altdiff_jax as ad

    status = ad.Status(int(info.status))
    if under_grad:
        return None, [f"{int(info.iterations)} iterations under grad ({status.name})"]
    return int(info.iterations), [] if status == ad.Status.SOLVED else [status.name]


def altdiff(problem, g, tol, differentiation="adjoint", layer=None, **options) -> Prepared:
    """altdiff_jax with ``Options(tol, differentiation, **options)``: ``solve`` of the QP
    (gradient with respect to all six leaves), or with ``layer`` one of its structured
    layers (``constrained_sparsemax(y, u)``, ``constrained_softmax(y, u)``, or
    ``solve_convex`` of :func:`lse_objective` for "lse"; gradient with respect to every
    parameter)."""
    import altdiff_jax as ad

    forward, gradient = _altdiff_functions(layer)
    params = {k: problem[k] for k in QP_KEYS} if layer is None else problem
    args = (_as_jax(params), ad.Options(tol=tol, differentiation=differentiation, **options), jnp.asarray(g))
    return _jax_prepared(forward, gradient, args, _altdiff_note)


def _jax_peer(solve: Callable, params: Mapping[str, Any], g, note: Callable = lambda aux, grad: (None, [])):
    """A JAX peer whose ``solve(**params) -> (x, aux)`` is jitted here, with the gradient
    of gᵀx* with respect to every parameter."""
    started = time.perf_counter()

    def loss(params, g):
        x, aux = solve(**params)
        return g @ x, aux

    forward = jax.jit(lambda params, g: solve(**params))
    return _jax_prepared(forward, jax.jit(jax.grad(loss, has_aux=True)), (_as_jax(params), jnp.asarray(g)), note,
                         started)


def qpax_qp(problem, g, tol, target_kappa=1e-3, max_iter=50) -> Prepared:
    """qpax ``solve_qp_primal`` (dense primal-dual interior point, relaxed-KKT implicit
    gradient), ``solver_tol=tol``; ``target_kappa`` is its gradient smoothing (default 1e-3)."""
    qpax = _require("qpax")
    settings = dict(solver_tol=tol, target_kappa=target_kappa, max_iter=max_iter)

    def solve(P, q, A, b, G, h):
        return qpax.solve_qp_primal(P, q, A, b, G, h, **settings), None

    prepared = _jax_peer(solve, {k: problem[k] for k in QP_KEYS}, g)
    *_, converged, iterations = qpax.solve_qp(*(jnp.asarray(problem[k]) for k in QP_KEYS), solver_tol=tol,
                                              max_iter=max_iter)
    prepared.iterations = int(iterations)
    if not bool(converged):
        prepared.notes.append("not converged")
    return prepared


def jaxopt_qp(problem, g, tol, maxiter=4000, **settings) -> Prepared:
    """jaxopt ``OSQP(tol, maxiter)`` (ADMM; implicit differentiation of its KKT conditions
    by its default linear solver), other settings default."""
    jaxopt = _require("jaxopt")
    solver = jaxopt.OSQP(tol=tol, maxiter=maxiter, **settings)

    def solve(P, q, A, b, G, h):
        run = solver.run(params_obj=(P, q), params_eq=(A, b), params_ineq=(G, h))
        return run.params.primal, run.state

    def note(state, under_grad):
        return int(state.iter_num), [] if under_grad or int(state.status) == 1 else [f"status {int(state.status)}"]

    return _jax_peer(solve, {k: problem[k] for k in QP_KEYS}, g, note)


def osqp_qp(problem, g, tol, max_iter=20000, polishing=True) -> Prepared:
    """OSQP (C) forward: setup (Ruiz scaling, KKT factorisation) + solve, eps_abs = eps_rel
    = tol, polishing on; backward: ``adjoint_derivative_compute(dx=g)`` and its getters
    (dense dP, dA)."""
    osqp = _require("osqp")
    import scipy.sparse as sp

    started = time.perf_counter()
    P, q, A, b, G, h = (np.asarray(problem[k], float) for k in QP_KEYS)
    p = b.size
    data = (sp.csc_matrix(np.triu(P)), q, sp.csc_matrix(np.vstack([A, G])),
            np.concatenate([b, np.full(h.size, -np.inf)]), np.concatenate([b, h]))
    state = {}

    def forward():
        solver = osqp.OSQP()
        solver.setup(*data, eps_abs=tol, eps_rel=tol, max_iter=max_iter, polishing=polishing, verbose=False)
        state["solver"], state["result"] = solver, solver.solve()
        return state["result"].x

    def backward():
        solver = state["solver"]
        solver.adjoint_derivative_compute(dx=g)
        dP, dC = solver.adjoint_derivative_get_mat(as_dense=True, dP_as_triu=False)
        dq, dl, du = solver.adjoint_derivative_get_vec()
        return dict(P=symmetric(dP), q=dq, A=np.asarray(dC[:p]), b=dl[:p] + du[:p], G=np.asarray(dC[p:]), h=du[p:])

    def total():
        forward()
        return backward()

    x = forward()
    info = state["result"].info
    notes = [info.status] + ([f"polish status {info.status_polish}"] if polishing else [])
    try:
        grads = backward()
    except Exception as error:  # noqa: BLE001 — an unsolved problem has no derivative
        raise RuntimeError(f"OSQP adjoint derivative failed: {error}") from None
    return Prepared(forward, total, backward, np.asarray(x), grads, time.perf_counter() - started, info.iter, notes)


def _cvxpylayers():
    _require("cvxpylayers")
    return _require("cvxpylayers.jax", "cvxpylayers")


def _cvxpylayer_prepared(layer, params: Mapping[str, Any], g, tol, mode, transform=None,
                         started=None) -> Prepared:
    """A cvxpylayers JAX layer (DIFFCP backend, Clarabel at ``tol``, derivative ``mode``),
    not jittable: run eagerly. ``transform(**params)`` -> the layer's arguments."""
    started = time.perf_counter() if started is None else started
    order = list(params)  # the layer's parameter order (JAX sorts a dict's keys)
    transform = transform or (lambda **p: tuple(p[k] for k in order))
    clarabel = dict(solve_method="Clarabel", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    gj = jnp.asarray(g)

    def solve(params, derivative: bool):
        args = dict(clarabel, mode=mode) if derivative else clarabel  # solve-only passes all to Clarabel
        return layer(*transform(**params), solver_args=args)[0]

    def loss(params):
        return gj @ solve(params, True)

    gradient = jax.grad(loss)
    _, pullback = jax.vjp(loss, params)
    (grads,) = block(pullback(jnp.ones(())))
    x = block(solve(params, False))
    grads = {k: np.asarray(v) for k, v in grads.items()}
    if "P" in grads:
        grads["P"] = symmetric(grads["P"])
    return Prepared(lambda: solve(params, False), lambda: gradient(params), lambda: pullback(jnp.ones(())),
                    np.asarray(x), grads, time.perf_counter() - started,
                    notes=[f"Clarabel tol {tol:g}, derivative mode {mode}"])


@functools.cache
def _cvxpy_qp_layer(n: int, p: int, m: int):
    import cvxpy as cp

    x = cp.Variable(n)
    Lt, q, A, b, G, h = (cp.Parameter(shape) for shape in ((n, n), n, (p, n), p, (m, n), m))
    objective = cp.Minimize(0.5 * cp.sum_squares(Lt @ x) + q @ x)
    problem = cp.Problem(objective, [A @ x == b, G @ x <= h])
    return _cvxpylayers().CvxpyLayer(problem, parameters=[Lt, q, A, b, G, h], variables=[x])


def cvxpylayers_qp(problem, g, tol, mode="dense") -> Prepared:
    """cvxpylayers' JAX layer of the dense QP: ½‖Lᵀx‖² + qᵀx s.t. Ax = b, Gx <= h with
    parameters Lᵀ, q, A, b, G, h (DPP: a parametric P is not); L = chol(P) is computed in
    JAX, so ``jax.grad`` reaches P through it. Canonicalization (the layer's construction,
    cached per shape) is the set-up."""
    _cvxpylayers()
    started = time.perf_counter()
    layer = _cvxpy_qp_layer(problem["q"].size, problem["b"].size, problem["h"].size)

    def transform(P, q, A, b, G, h):
        return jnp.linalg.cholesky(P).T, q, A, b, G, h

    return _cvxpylayer_prepared(layer, {k: problem[k] for k in QP_KEYS}, g, tol, mode, transform, started)


def qpth_qp(problem, g, tol, max_iter=50) -> Prepared:
    """qpth (OptNet) ``QPFunction(eps=tol, maxIter)``, batched primal-dual interior point in
    PyTorch (CPU, float64); backward by its KKT adjoint, run apart by autograd."""
    return _qpth_prepared({k: problem[k] for k in QP_KEYS}, g, tol, max_iter,
                          lambda P, q, A, b, G, h: (P, q, G, h, A, b))


def _qpth_prepared(params: Mapping[str, Any], g, tol, max_iter, to_qp: Callable) -> Prepared:
    """``to_qp(**tensors)`` -> qpth's (Q, p, G, h, A, b); gradients by torch autograd."""
    torch = _require("torch")
    qp = _require("qpth.qp", "qpth")
    started = time.perf_counter()
    tensors = {k: torch.tensor(np.asarray(v, float), dtype=torch.float64, requires_grad=True)
               for k, v in params.items()}
    gt = torch.tensor(np.asarray(g, float), dtype=torch.float64)
    function = qp.QPFunction(eps=tol, verbose=-1, maxIter=max_iter, check_Q_spd=False)
    state = {}

    def forward():
        state["x"] = function(*to_qp(**tensors))[0]
        return state["x"]

    def backward():
        loss = gt @ state["x"]
        return torch.autograd.grad(loss, list(tensors.values()), retain_graph=True)

    def total():
        forward()
        return backward()

    x = forward().detach().numpy().copy()
    grads = {k: v.numpy().copy() for k, v in zip(tensors, backward())}
    if "P" in grads:
        grads["P"] = symmetric(grads["P"])
    notes = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, eps {tol:g}, maxIter {max_iter}"]
    return Prepared(forward, total, backward, x, grads, time.perf_counter() - started, notes=notes)


def cvxpy_layer_problem(layer: str, n: int):
    """(cvxpy problem, parameters, variable) of a layer, DPP."""
    import cvxpy as cp

    x = cp.Variable(n)
    if layer == "lse":
        c = cp.Parameter(n)
        objective = cp.log_sum_exp(x) + 0.5 * cp.sum_squares(x - c)
        return cp.Problem(cp.Minimize(objective), [cp.sum(x) == 1, x >= 0]), [c], x
    y, u = cp.Parameter(n), cp.Parameter(n)
    if layer == "constrained_sparsemax":
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0, x <= u])
    elif layer == "constrained_softmax":
        problem = cp.Problem(cp.Minimize(-y @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1, x <= u])
    else:
        raise ValueError(f"unknown layer {layer!r}")
    return problem, [y, u], x


@functools.cache
def _cvxpy_layer(layer: str, n: int):
    problem, parameters, x = cvxpy_layer_problem(layer, n)
    assert problem.is_dpp()
    return _cvxpylayers().CvxpyLayer(problem, parameters=parameters, variables=[x])


def cvxpylayers_layer(problem, g, tol, layer="constrained_sparsemax", mode="lsqr") -> Prepared:
    """cvxpylayers' JAX layer of a structured layer (see :func:`cvxpy_layer_problem`),
    canonicalized once per size (the set-up)."""
    _cvxpylayers()
    started = time.perf_counter()
    built = _cvxpy_layer(layer, np.asarray(next(iter(problem.values()))).size)
    return _cvxpylayer_prepared(built, problem, g, tol, mode, started=started)


def qpth_sparsemax(problem, g, tol, max_iter=50) -> Prepared:
    """Constrained sparsemax as qpth's QP: Q = 2I, p = −2y, G = [−I; I], h = [0; u], A = 1ᵀ,
    b = 1 (dense, as qpth has it); gradients reach y and u through autograd."""
    torch = _require("torch")
    n = np.asarray(problem["y"]).size
    eye = torch.eye(n, dtype=torch.float64)
    ones = torch.ones(1, n, dtype=torch.float64)
    constant = dict(Q=2 * eye, G=torch.cat([-eye, eye]), A=ones, b=torch.ones(1, dtype=torch.float64))

    def to_qp(y, u):
        h = torch.cat([torch.zeros(n, dtype=torch.float64), u])
        return constant["Q"], -2 * y, constant["G"], h, constant["A"], constant["b"]

    return _qpth_prepared(problem, g, tol, max_iter, to_qp)


ADAPTERS: dict[str, Callable[..., Prepared]] = {
    "altdiff": altdiff, "qpax_qp": qpax_qp, "jaxopt_qp": jaxopt_qp, "osqp_qp": osqp_qp,
    "cvxpylayers_qp": cvxpylayers_qp, "qpth_qp": qpth_qp,
    "cvxpylayers_layer": cvxpylayers_layer, "qpth_sparsemax": qpth_sparsemax,
}


@dataclasses.dataclass(frozen=True)
class Contender:
    """A named adapter configuration: ``ADAPTERS[adapter](problem, g, tol, **kwargs)``.

    ``memory`` (bytes) is an estimate of the child process's peak on the problem at hand,
    used to skip what cannot fit and to run fewer children at once on large problems.
    """

    label: str
    adapter: str
    tol: float
    kwargs: tuple = ()
    memory: float = 0.0

    def prepare(self, problem, g) -> Prepared:
        return ADAPTERS[self.adapter](problem, g, self.tol, **dict(self.kwargs))


def contender(label: str, adapter: str, tol: float, memory: float = 0.0, **kwargs) -> Contender:
    return Contender(label, adapter, tol, tuple(sorted(kwargs.items())), memory)


@dataclasses.dataclass
class Measurement:
    """A contender's result on one problem. ``skipped`` says why it has no result."""

    label: str
    x: Optional[np.ndarray] = None
    grads: Optional[dict] = None
    setup_s: float = math.nan
    iterations: Optional[int] = None
    forward: Timing = dataclasses.field(default_factory=Timing)
    backward: Optional[Timing] = None
    total: Timing = dataclasses.field(default_factory=Timing)
    notes: list = dataclasses.field(default_factory=list)
    skipped: Optional[str] = None
    over_budget: bool = False

    @property
    def backward_s(self) -> float:
        """Measured backward, or total − forward (best of each) where not run apart."""
        if self.backward is not None and self.backward.times:
            return self.backward.best
        return self.total.best - self.forward.best


def run_adapter(adapter: str, problem, g, tol: float, repeats: int = 5, **kwargs):
    """One adapter in this process: (x, grads, forward seconds, backward seconds).

    Times are the best of ``repeats`` interleaved runs; backward is measured apart where
    the peer allows, else total − forward. Returns None (with one printed line) when the
    peer is not installed.
    """
    try:
        prepared = ADAPTERS[adapter](problem, g, tol, **kwargs)
    except MissingPeer as missing:
        print(f"skipped: {missing}")
        return None
    calls = {"forward": prepared.forward, "total": prepared.total}
    if prepared.backward is not None:
        calls["backward"] = prepared.backward
    t = interleaved(calls, repeats)
    backward = t["backward"].best if "backward" in t else t["total"].best - t["forward"].best
    return prepared.x, prepared.grads, t["forward"].best, backward


# --------------------------------------------------------------- child processes, side by side


def _serve(connection, memory_cap: float) -> None:
    """A child process: prepares one contender at a time, then times its calls on request."""
    if math.isfinite(memory_cap):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(memory_cap), int(memory_cap)))
    warnings.filterwarnings("ignore")
    prepared = None
    while True:
        command, argument = connection.recv()
        if command == "close":
            return
        if command == "prepare":
            prepared = None
            gc.collect()
            item, path = argument
            try:
                with np.load(path) as data:
                    arrays = {k: data[k] for k in data.files}
                g = arrays.pop("_g")
                prepared = item.prepare(arrays, g)
            except MissingPeer as missing:
                connection.send(("missing", str(missing)))
                continue
            except Exception as error:  # noqa: BLE001 — reported as the contender's result
                # The exception's own first line: JAX appends notes (its traceback filtering)
                # after the message, so the last line of the formatted exception is not it.
                first = traceback.format_exception_only(type(error), error)[0].strip()
                connection.send(("error", first[:300]))
                continue
            connection.send(("ready", dict(x=prepared.x, grads=prepared.grads, setup_s=prepared.setup_s,
                                           iterations=prepared.iterations, notes=prepared.notes,
                                           backward=prepared.backward is not None)))
        elif command == "time":
            connection.send(time_call(getattr(prepared, argument)))
        elif command == "release":
            prepared = None
            gc.collect()
            connection.send("released")


class Worker:
    """A child process that hosts one prepared contender at a time (spawned: no fork of a
    process running XLA threads)."""

    def __init__(self, memory_cap: float):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, memory_cap), daemon=True)
        self.process.start()
        child.close()
        self.fresh = True
        self.busy = False
        self.hosted: set = set()  # labels of the contenders it has prepared

    def send(self, command, argument) -> None:
        self.connection.send((command, argument))

    def receive(self, timeout: float):
        """The child's answer, or raises TimeoutError / EOFError (then the child is gone)."""
        try:
            if not self.connection.poll(timeout):
                raise TimeoutError
            answer = self.connection.recv()
        except (TimeoutError, EOFError, OSError):
            self.kill()
            raise
        self.fresh = False
        return answer

    def ask(self, command, argument, timeout: float):
        self.send(command, argument)
        return self.receive(timeout)

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(("close", None))
            except OSError:
                pass
            self.process.join(10)
        self.kill()


_POOL: list = []
IMPORT_ALLOWANCE_S = 60.0  # added to the budget of a fresh child's first preparation (imports)


def shutdown() -> None:
    """Closes the child processes of :func:`side_by_side`."""
    while _POOL:
        _POOL.pop().close()


def _worker(memory_cap: float, label: str) -> Worker:
    """An idle child, preferably one that hosted ``label`` before (its compiled code and
    cached layers are still there), else any idle one, else a new one."""
    _POOL[:] = [w for w in _POOL if w.alive()]
    idle = [w for w in _POOL if not w.busy]
    worker = next((w for w in idle if label in w.hosted), idle[0] if idle else None)
    if worker is None:
        worker = Worker(memory_cap)
        _POOL.append(worker)
    worker.busy = True
    worker.hosted.add(label)
    return worker


def side_by_side(contenders: Sequence[Contender], problem: Mapping[str, np.ndarray], g: np.ndarray,
                 repeats: int = 5, budget_s: float = 600.0, once_s: float = 10.0, jobs: int = 1,
                 log: Callable[[str], None] = print) -> dict[str, Measurement]:
    """Measures the contenders on one problem, each in a child process, interleaved.

    Each contender is prepared (compiled, warmed up, its x and gradient kept) in a child
    process within ``budget_s`` (plus :data:`IMPORT_ALLOWANCE_S` in a fresh child), ``jobs``
    at a time; then the prepared ones run round-robin (:func:`interleaved`, each child timing
    its own call, one call at a time), every call within ``budget_s``. A contender that
    overruns is stopped (``over_budget``). One whose memory estimate exceeds 80% of the
    memory available is skipped; while the next one's estimate does not fit beside those
    alive, those are timed and released first, so that large problems run fewer at once.
    """
    measurements = {c.label: Measurement(c.label) for c in contenders}
    cap = 0.8 * available_memory()
    queue = []
    for item in contenders:
        if item.memory > cap:
            measurements[item.label].skipped = (f"does not fit in memory (needs ~{item.memory / 2**30:.0f} GiB, "
                                                f"{cap / 2**30:.0f} GiB usable)")
            log(f"  {item.label}: skipped, {measurements[item.label].skipped}")
        else:
            queue.append(item)
    with tempfile.TemporaryDirectory(prefix="altdiff_bench_") as folder:
        path = os.path.join(folder, "problem.npz")
        np.savez(path, _g=np.asarray(g), **{k: np.asarray(v) for k, v in problem.items()})
        group: list = []  # (contender, worker) prepared, waiting to be timed
        pending: dict = {}  # worker -> (contender, start, deadline) being prepared
        while queue or pending:
            while queue and len(pending) < jobs:
                alive = sum(c.memory for c, _ in group) + sum(c.memory for c, _, _ in pending.values())
                if alive + queue[0].memory > cap:
                    if pending:
                        break
                    _time_group(group, measurements, repeats, budget_s, once_s, log)
                    group = []
                item = queue.pop(0)
                # Each child's address space is capped at 80% of the machine (a runaway
                # allocation fails in the child instead of swapping the machine). Not at 80%
                # of what is available now: a pooled child keeps its cap for later cases, and
                # XLA's virtual reservations made a child created while others held memory
                # fail to compile later, larger problems.
                worker = _worker(0.8 * total_memory(), item.label)
                start = time.perf_counter()
                pending[worker] = (item, start, start + budget_s + (IMPORT_ALLOWANCE_S if worker.fresh else 0.0))
                try:
                    worker.send("prepare", (item, path))
                except OSError:  # died since: its answer below is an EOF
                    worker.kill()
            wait = max(0.0, min(deadline for _, _, deadline in pending.values()) - time.perf_counter())
            ready = multiprocessing.connection.wait([w.connection for w in pending], wait)
            for worker in list(pending):
                item, start, deadline = pending[worker]
                m = measurements[item.label]
                if worker.connection in ready:
                    try:
                        kind, answer = worker.receive(0.0)
                    except (TimeoutError, EOFError, OSError):
                        kind, answer = "died", "child process died (out of memory?)"
                elif time.perf_counter() > deadline:
                    worker.kill()
                    m.over_budget = True
                    kind, answer = "died", f"> budget: set-up and first calls ran over {budget_s:.0f} s, stopped"
                else:
                    continue
                del pending[worker]
                if kind == "ready":
                    for field in ("x", "grads", "setup_s", "iterations", "notes"):
                        setattr(m, field, answer[field])
                    m.backward = Timing() if answer["backward"] else None
                    log(f"  {item.label}: ready in {time.perf_counter() - start:.1f} s")
                    group.append((item, worker))
                    continue
                m.skipped = {"missing": answer, "error": f"failed: {answer}"}.get(kind, answer)
                log(f"  {item.label}: {'skipped: ' if kind == 'missing' else ''}{m.skipped}")
                worker.busy = False
        _time_group(group, measurements, repeats, budget_s, once_s, log)
    return measurements


def _time_group(group, measurements, repeats, budget_s, once_s, log) -> None:
    calls = {}
    for item, worker in group:
        whats = ("forward", "total") + (("backward",) if measurements[item.label].backward is not None else ())
        for what in whats:
            calls[item.label, what] = _remote(worker, what, budget_s, measurements[item.label], log)
    timings = interleaved(calls, repeats, once_s, timed=True)
    for (label, what), timing in timings.items():
        setattr(measurements[label], what, timing)
    for _, worker in group:
        if worker.alive():
            try:
                worker.ask("release", None, 60.0)
            except (TimeoutError, EOFError, OSError):
                pass
        worker.busy = False


def _remote(worker: Worker, what: str, budget_s: float, measurement: Measurement, log):
    def call():
        if not worker.alive():
            raise Dropped
        try:
            return worker.ask("time", what, budget_s)
        except (TimeoutError, EOFError, OSError):
            measurement.over_budget = True
            measurement.notes.append(f"a {what} call ran over the {budget_s:.0f} s budget: stopped")
            log(f"  {measurement.label}: {what} call over budget, stopped")
            raise Dropped from None

    return call


class Ladder:
    """Budget bookkeeping over growing problems: a contender that ran over the budget is
    not run on larger ones, and one whose solve + gradient time at the last size, times the
    growth of the data (a lower bound: every contender reads all of it), exceeds the budget
    is skipped up front. (Compilation is left out of the projection: it does not grow with
    the data.)"""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.last: dict = {}  # label -> (data size, seconds)
        self.stopped: dict = {}  # label -> size at which it overran

    def skip_reason(self, label: str, data_size: float) -> Optional[str]:
        if label in self.stopped:
            return f"skipped: over the {self.budget_s:.0f} s budget at {self.stopped[label]}"
        if label in self.last:
            size, seconds = self.last[label]
            projected = seconds * data_size / size
            if projected > self.budget_s:
                return f"skipped: projected >= {projected:.0f} s (> budget {self.budget_s:.0f} s)"
        return None

    def record(self, measurement: Measurement, data_size: float, size_label: str) -> None:
        if measurement.over_budget:
            self.stopped[measurement.label] = size_label
        elif measurement.skipped is None:
            self.last[measurement.label] = (data_size, measurement.total.best)


# ------------------------------------------------------------------------- tables of cases


@dataclasses.dataclass
class Case:
    """One problem of a table: its data, exact answer, and what the rows call it.

    ``grads`` holds the exact gradient of gᵀx* by parameter name; ``data_size`` is what the
    :class:`Ladder` scales time with (n·(n + p + m) for a dense QP, n for a layer; the same
    for every case of a tolerance sweep).
    """

    label: str
    problem: dict
    g: np.ndarray
    x: np.ndarray
    grads: dict
    tol: float
    data_size: float
    note: str = ""


def run_cases(cases: Sequence[Case], contenders_of: Callable[[Case], list], repeats: int = 5,
              budget_s: float = 600.0, once_s: float = 10.0, jobs: int = 1,
              peers: Optional[Sequence[str]] = None) -> list:
    """[(case, {label: Measurement})]: each case's contenders (those whose label contains one
    of ``peers``, if given) side by side, except those a :class:`Ladder` over the cases rules
    out (over the budget on an earlier case, or projected to be)."""
    ladder = Ladder(budget_s)
    results = []
    for case in cases:
        print(f"-- {case.label}", flush=True)
        contenders = [c for c in contenders_of(case) if not peers or any(p in c.label for p in peers)]
        measurements = {}
        for item in contenders:
            reason = ladder.skip_reason(item.label, case.data_size)
            if reason:
                measurements[item.label] = Measurement(item.label, skipped=reason)
                print(f"  {item.label}: {reason}")
        chosen = [item for item in contenders if item.label not in measurements]
        measured = side_by_side(chosen, case.problem, case.g, repeats, budget_s, once_s, jobs)
        measurements = {item.label: measurements.get(item.label) or measured[item.label] for item in contenders}
        for m in measurements.values():
            ladder.record(m, case.data_size, case.label)
        results.append((case, measurements))
    return results


def accuracy(m: Measurement, case: Case) -> dict:
    """Cosine and relative error against the case's exact gradient, the parameter whose own
    cosine is lowest, and ‖x − x*‖∞ (None where not measured)."""
    if m.grads is None:
        return dict(cosine=None, error=None, worst="–", x_error=None)
    per = {k: cosine(m.grads[k], case.grads[k]) for k in m.grads
           if m.grads[k] is not None and np.linalg.norm(case.grads[k]) > 0}
    worst = min(per, key=per.get)
    return dict(cosine=cosine(m.grads, case.grads), error=relative_error(m.grads, case.grads),
                worst=f"{worst} {per[worst]:.6f}", x_error=float(np.max(np.abs(m.x - case.x))))


def backward_cell(m: Measurement) -> str:
    """Measured apart, or ≈ total − forward (clipped at 0: a difference of two noisy bests)."""
    if m.backward is not None:
        return fmt(m.backward_s)
    return "≈" + fmt(max(m.backward_s, 0.0))


RESULT_HEADER = ["method", "iterations", "set-up s (once)", "forward s", "backward s", "total s", "cosine",
                 "rel. error", "worst parameter (cosine)", "‖x − x*‖∞", "notes"]


def results_table(results, with_tol: bool = False) -> str:
    """One row per case and contender: :data:`RESULT_HEADER` after the case (and its tol)."""
    rows = []
    for case, measurements in results:
        for m in measurements.values():
            a = accuracy(m, case)
            timed = m.skipped is None
            rows.append([case.label] + ([f"{case.tol:g}"] if with_tol else []) + [
                m.label, m.iterations if timed else None, m.setup_s if timed else None,
                m.forward.best if timed else None, backward_cell(m) if timed else None,
                m.total.best if timed else None,
                f"{a['cosine']:.9f}" if a["cosine"] is not None else None,
                f"{a['error']:.2e}" if a["error"] is not None else None, a["worst"],
                f"{a['x_error']:.1e}" if a["x_error"] is not None else None,
                "; ".join(([m.skipped] if m.skipped else []) + m.notes)])
    header = ["case"] + (["tol"] if with_tol else []) + RESULT_HEADER
    return markdown_table(header, rows, "l" + ("r" if with_tol else "") + "l" + "r" * 7 + "lrl")


def pivot(results, value: Callable[[Measurement, Case], float], fmt_value: Callable[[float], str]) -> str:
    """The paper's layout: a row per contender, a column per case."""
    labels = list(dict.fromkeys(label for _, ms in results for label in ms))
    rows = []
    for label in labels:
        row = [label]
        for case, ms in results:
            m = ms.get(label)
            if m is None or m.skipped:
                row.append("–" if m is None else "over budget" if m.over_budget or "over the" in m.skipped
                           else "skipped (projected over budget)" if "projected" in m.skipped else "–")
            else:
                row.append(fmt_value(value(m, case)))
        rows.append(row)
    return markdown_table(["method"] + [case.label for case, _ in results], rows, "l" + "r" * len(results))


def timing_spread(results) -> str:
    """How much the machine swung: the spread of the total-time runs over all contenders."""
    spreads = [m.total.spread for _, ms in results for m in ms.values() if len(m.total.times) > 1]
    return (f"spread of the total-time runs (slowest/fastest − 1): median {100 * np.median(spreads):.0f}%, "
            f"max {100 * max(spreads):.0f}%" if spreads else "")


# ------------------------------------------------------------------------------ writing


def fmt(value, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant digits, None/NaN as '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: Optional[str] = None) -> str:
    """A Markdown table; ``align`` has one letter per column, 'l' or 'r' (default: text
    left, numbers right, from the first row)."""
    if align is None:
        first = rows[0] if rows else header
        align = "".join("r" if isinstance(v, (int, float)) else "l" for v in first)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(path, title: str, header_line: str, body: Sequence[str], command: Optional[str] = None) -> None:
    """A results file: the hardware line first, then the title, the command and the body."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = command or "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    text = f"{header_line}\n\n# {title}\n\n`{command}`\n\n" + "\n".join(body).rstrip() + "\n"
    path.write_text(text)
    print(f"wrote {os.path.relpath(path, ROOT)}")


@dataclasses.dataclass
class Panel:
    """One plot: series name -> (xs, ys); NaN points are left out."""

    title: str
    xlabel: str
    ylabel: str
    series: dict
    logx: bool = True
    logy: bool = True


def plot_panels(path, panels: Sequence[Panel], header_line: str = "") -> bool:
    """A PNG of the panels side by side (False, with a printed line, without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no plot (`pip install matplotlib`)")
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        for name, (xs, ys) in panel.series.items():
            points = [(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y) and (y > 0 or not panel.logy)]
            if points:
                axis.plot(*zip(*points), "o-", label=name, markersize=4)
        axis.set_xscale("log" if panel.logx else "linear")
        axis.set_yscale("log" if panel.logy else "linear")
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel(panel.xlabel)
        axis.set_ylabel(panel.ylabel)
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if header_line:
        figure.text(0.01, 0.005, header_line[:220], fontsize=5, alpha=0.7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return True
