"""Adapters (:data:`ADAPTERS`): altdiff_jax and each peer (qpax, jaxopt, OSQP, cvxpylayers,
qpth) as "solve, and gradient of gᵀx* with respect to every parameter it supports", with
forward and backward timed apart where the peer allows; :class:`Contender`, a named adapter
configuration; :func:`run_adapter`, one adapter measured in this process.

A peer that is not installed raises :class:`MissingPeer` (skipped with one line).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import time
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .problems import QP_KEYS
from .reference import symmetric
from .timing import block, interleaved


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
