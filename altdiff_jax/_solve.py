"""``solve``, ``vjp``, ``jvp`` and ``jacobians``: the QP layer and its derivatives.

Reverse mode goes through a ``custom_vjp`` whose rules dispatch on
``Options.differentiation``; every strategy ends in the same place: cotangents of the
scaled seeds (∂∇f, ∂b, ∂h, ∂lb, ∂ub), mapped to the user's q, b, h, lb, ub, then to P,
A, G (``docs/mathematics.md``, "Gradients of every parameter").
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.experimental import sparse as jsparse

from ._adjoint import AdjointInfo
from ._batching import is_batched
from ._driver import initial_status, run, run_then_differentiate
from ._iterate import SEED_FIELDS, Iterate, Seeds, all_finite, parameter_seeds
from ._linalg import Dense, SharedDense, lanes_gathered
from ._linalg import structured as is_structured
from ._objective import QuadraticObjective
from ._xupdate import make_x_solver
from ._options import Numerics, Options, Structure, resolve_options
from ._problem import QP, Constraints, _as_sparse, data_gradients, validate_qp
from ._scaling import Scaling, bound_scale, cost_scaling, ruiz_equilibrate, ruiz_equilibrate_operators
from ._sparse import ITERATIVE, MatrixFree, Sparse, is_sparse, stored_entries
from ._solution import Solution, Status
from ._strategies import Strategy, strategy_for

BATCH_POLISH_ATTEMPTS = {4: 0, 8: None}
"""Polishing stops per lane in a vmapped batch of dense problems (``_driver.run``), by item
size (None: one per new active set, as for one problem), where a stop costs only the lanes
that take it (``_linalg.lanes_gathered``): float64 does not cap them; capped at two, a lane
whose guesses failed ran on to ADMM's tolerance, 590 iterations against 120
(``benchmarks/results/batch_constants.md``). Float32 polishes only after the loop: its
polish (LU of K_δ with up to 12 refinement steps) costs more than the iterations an early
stop saves."""

WHOLE_BATCH_POLISH_ATTEMPTS = {4: 0, 8: 2}
"""The same where every lane polishes when one does (not ``_linalg.lanes_gathered``): two
stops per lane in float64, as measured when that was so on CPU
(``benchmarks/results/batches.md`` at the time: early polishing ends most lanes, and a lane
whose guesses fail twice converges in the loop instead of making the batch pay for more
polishing passes)."""

REUSABLE_FACTOR_SIZE = 400
"""Variables from which one dense float64 QP's polishing rounds update the last round's
factor for a nearby active set (``_polish``) instead of factoring anew: below it a fresh
factorisation costs about a millisecond or less, and the update's code adds about a second
(a third at n 100) to the compile time; at the paper's Tiny size (n 1500) the update saves
a fifth of the run, at n 3000 an eighth (measured at n 100–700, where these problems never
used it, 1500 and 3000: ``benchmarks/results/reusable_factor.md``)."""

SPARSE_POLISH_ATTEMPTS = 0
"""Polishing stops of a sparse-path problem (``_driver.run``; 0: only after the loop). Its
polish solves the reduced KKT system by conjugate gradients, and a failed early attempt
costs far more than the iterations a successful one saves: on the MPC QP at T 1000, 2.7×
the time with two stops, 12× with one per new active set
(``benchmarks/results/sparse.md``)."""

EXPLICIT_INVERSE_COLUMNS = 16
"""Carried Jacobian columns from which one problem's x-update keeps H(ρ)⁻¹ explicitly
(``_linalg.ExplicitInverse``): the columns then cost one matrix product per iteration
instead of two triangular solves (``benchmarks/results/jacobians.md``)."""

_FORWARD_MODE_MESSAGE = "can't apply forward-mode autodiff (jvp) to a custom_vjp function"


class _Run(NamedTuple):
    """What a forward solve leaves for a backward pass, in the solver's scaled space."""

    objective: Any
    constraints: Constraints
    scaling: Scaling
    z: Iterate
    J: Optional[Iterate]
    solution: Solution
    polished_system: Any  # PolishedSystem of the polished point, for the kkt pullback (or None)


def initial_iterate(init: Optional[Solution], constraints: Constraints, n: int, dtype) -> Iterate:
    """The starting iterate: zeros (the paper's), or a previous :class:`Solution`."""
    p, m, nb = constraints.b.shape[0], constraints.h.shape[0], constraints.lb.shape[0]
    if init is None:
        x = jnp.zeros((n,), dtype)
        z_B = jnp.clip(x, constraints.lb, constraints.ub) if nb else jnp.zeros((0,), dtype)
        return Iterate(x, jnp.zeros((m,), dtype), jnp.zeros((p,), dtype), jnp.zeros((m,), dtype), z_B,
                       jnp.zeros((nb,), dtype))
    values = {}
    for name, size in (("x", n), ("s", m), ("lam", p), ("nu", m), ("mu", nb)):
        value = getattr(init, name, None)
        value = jnp.zeros((size,), dtype) if value is None else jnp.asarray(value)
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(f"init.{name} must have a floating dtype, got {value.dtype}")
        if value.shape != (size,):
            raise ValueError(f"init.{name} has shape {value.shape}, expected {(size,)}")
        values[name] = jnp.nan_to_num(value.astype(dtype))  # a warm start must not poison the loop
    z_B = jnp.clip(values["x"], constraints.lb, constraints.ub) if nb else values["mu"]
    return Iterate(values["x"], values["s"], values["lam"], values["nu"], z_B, values["mu"])


def _factorization(structure: Structure, batched: bool, matrices_batched: bool, attempts: Optional[int]) -> str:
    """``"auto"``: Cholesky, refactored when ρ changes (under ``vmap`` on CPU, for the lanes
    whose ρ changed), except in a batch that shares P, A and G (the eigen-factor is then one
    factorisation for every lane) or that runs without polishing stops (float32, or
    ``polish=False``: the loop runs long enough for ρ to change many times, at a
    factorisation each). Measured in ``benchmarks/results/factorization.md`` (float32
    rows; a float64 batch without polishing runs the same long loop), when a change
    refactored every lane."""
    if structure.factorization != "auto":
        return structure.factorization
    without_stops = attempts == 0 or not structure.polish
    return "eigen" if batched and (not matrices_batched or without_stops) else "cholesky"


def _forward(structure: Structure, data: QP, numerics: Numerics, init: Iterate, seeds, columns: int = 0,
             exact_jacobians: bool = False) -> _Run:
    """Equilibrate, factor once, run the loop, map the solution back to the user's scaling.

    ``data`` holds operators for P, A, G (``_linalg``): dense ones are equilibrated by
    Ruiz; structured ones (the layers') run as they are. ``seeds(scaling)`` gives the
    scaled seeds to carry (or None for a plain solve), ``columns`` of them;
    ``exact_jacobians``: see ``_driver.run``.
    """
    P, q, A, b, G, h, lb, ub = constants_unfolded(data)
    if isinstance(P, Dense):
        P = Dense(0.5 * (P.matrix + P.matrix.T))
    elif isinstance(P, ITERATIVE):
        P = P.symmetric_part()
    A, G = (op.merged() if isinstance(op, Sparse) else op for op in (A, G))
    sparse = is_sparse(P, A, G)
    batched, matrices_batched = is_batched(data), is_batched(P, A, G)
    if batched and type(G) is Dense and not matrices_batched:
        # A batch sharing P, A, G (so that the equilibrated G is shared too): polishing's
        # Gram matrices by one product.
        G = SharedDense(G.matrix)
    constraints = Constraints(A, b, G, h, lb, ub)
    if sparse:
        P_hat, q_s, scaled, scaling = ruiz_equilibrate_operators(P, q, constraints, structure.scaling_iterations)
    elif all(isinstance(op, Dense) for op in (P, A, G)):
        P_hat, q_s, scaled, scaling = ruiz_equilibrate(P, q, constraints, structure.scaling_iterations)
    else:
        scaling = cost_scaling(P, q, b.shape[0], h.shape[0])
        P_hat, q_s, scaled = P, scaling.c * q, constraints
    structured = is_structured(P, A, G)
    # A batch of dense problems polishes by per-lane factorisations: float32 only after the
    # loop (BATCH_POLISH_ATTEMPTS, WHOLE_BATCH_POLISH_ATTEMPTS).
    by_dtype = BATCH_POLISH_ATTEMPTS if lanes_gathered() else WHOLE_BATCH_POLISH_ATTEMPTS
    attempts = None if structured or not batched else by_dtype[q.dtype.itemsize]
    if sparse:
        attempts = SPARSE_POLISH_ATTEMPTS
    method = _factorization(structure, batched, matrices_batched, attempts)
    # With exact Jacobians (and polishing) columns are carried only in the rare loop after
    # a failed polish.
    explicit = batched or (columns >= EXPLICIT_INVERSE_COLUMNS and not (exact_jacobians and structure.polish))
    solver = make_x_solver(P_hat, scaling.c, numerics.sigma, scaled, numerics.rho, method, explicit_inverse=explicit)
    objective = QuadraticObjective(P_hat, q_s, scaling.c, numerics.sigma, solver)
    status0 = initial_status((P, q, A, b, G, h), constraints)
    # One dense float64 problem: a polishing round reuses a factor for a nearby active set,
    # where factoring anew is dear enough to pay for the larger program.
    reusable = not (batched or structured or sparse or q.dtype == jnp.float32) and q.shape[0] >= REUSABLE_FACTOR_SIZE
    return run_objective(structure, objective, scaled, scaling, numerics, init, seeds, status0, (lb, ub), attempts,
                         reusable, early_first_polish=not structured, exact_jacobians=exact_jacobians)


def run_objective(
    structure, objective, constraints, scaling, numerics, init, seeds, status0, bounds,
    polish_attempts: Optional[int] = None, reusable_factor: bool = False, early_first_polish: bool = False,
    exact_jacobians: bool = False,
) -> _Run:
    """Run the loop for any objective on (scaled) constraints; shared by every layer.

    ``bounds`` are the user's (lb, ub): a polished point is put exactly within them (its
    scaled bounds lb/D, ub/D come back as D·(lb/D), which can miss lb by an ulp)."""
    carried = None if seeds is None else seeds(scaling)
    start = scaling.scale(init)
    settings = (polish_attempts, reusable_factor, early_first_polish)
    if exact_jacobians and carried is not None and structure.polish and objective.quadratic:
        z, J, objective, info, polished_system = run_then_differentiate(
            objective, constraints, scaling, start, carried, numerics, structure, status0, *settings)
    else:
        z, J, objective, info, polished_system = run(
            objective, constraints, scaling, start, carried, numerics, structure, status0, *settings)
    user = scaling.unscale(z)
    B = constraints.B
    x = jnp.where(info.polished, B.assign(user.x, jnp.clip(B.mv(user.x), *bounds)), user.x)
    solution = Solution(x, user.s, user.lam, user.nu, user.mu, info)
    return _Run(objective, constraints, scaling, z, J, solution, polished_system)


def constant_seeds(sizes, wrt, dtype):
    """``seeds(scaling)`` for the identity seeds of the carried parameters."""
    return lambda scaling: scaling.scale_seeds(parameter_seeds(sizes, wrt, dtype))


def usable(solution: Solution) -> jax.Array:
    """A solve has a derivative if it converged or was truncated, with a finite result."""
    status = solution.info.status
    ok = (status == Status.SOLVED) | (status == Status.MAX_ITER) | (status == Status.STALLED)
    return ok & all_finite(solution.x)


def pull_back(strategy: Strategy, structure: Structure, numerics: Numerics, forward: _Run, blocks,
              cotangent: Iterate):
    """Cotangent of the solution -> cotangents of the user's (q, b, h, lb, ub), by
    ``strategy`` (``_strategies``).

    A solve that failed (infeasible, unbounded, non-finite), or whose cotangents are not
    all finite, has a zero gradient, so it cannot poison the rest of a batch.

    Returns:
        ``([q̄, b̄, h̄, l̄b, ūb], AdjointInfo)`` (None where not computed); the gradients of
        P, A, G (or of an objective's θ) follow from them.
    """
    bars, info = strategy.cotangents(structure, numerics, forward, blocks, cotangent)
    ok = usable(forward.solution) & all_finite([bar for bar in bars if bar is not None])
    bars = [None if bar is None else jnp.where(ok, bar, 0.0) for bar in bars]
    return bars, info


def masked_solution(solution: Solution) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, λ, ν) for the §5 formulas, zeroed for a failed solve (its gradient is zero)."""
    ok = usable(solution)
    return tuple(jnp.where(ok, v, 0.0) for v in (solution.x, solution.lam, solution.nu))


def carried_parameters(perturbed: dict) -> tuple[bool, ...]:
    """Columns to carry for (q, b, h, lb, ub): P, A and G gradients are built from them (§5)."""
    return (
        perturbed["P"] or perturbed["q"] or perturbed["A"] or perturbed["G"],
        perturbed["b"] or perturbed["A"],
        perturbed["h"] or perturbed["G"],
        perturbed["lb"],
        perturbed["ub"],
    )


def split_columns(J: Iterate, sizes, wrt) -> tuple[Optional[Iterate], ...]:
    """The carried columns as one block each for q, b, h, lb, ub (None if not carried)."""
    blocks, offset = [], 0
    for size, carried in zip(sizes, wrt):
        width = size if carried else 0
        blocks.append(Iterate(*(v[:, offset : offset + width] for v in J)) if carried else None)
        offset += width
    return tuple(blocks)


def output_cotangent(cotangent: Solution, solution: Solution) -> Iterate:
    """The cotangent of a Solution as an Iterate (z, the bound block's copy of x, is no output)."""
    dtype = solution.x.dtype

    def dense(g, like):
        return jnp.zeros(like.shape, dtype) if g is None or isinstance(g, SymbolicZero) else g

    x, s, lam, nu, mu = (dense(getattr(cotangent, k), getattr(solution, k)) for k in ("x", "s", "lam", "nu", "mu"))
    return Iterate(x, s, lam, nu, jnp.zeros_like(mu), mu)


def _sizes(data) -> tuple[int, ...]:
    q, b, h, lb = data[1], data[3], data[5], data[6]
    return (q.size, b.size, h.size, lb.size, lb.size)


def _forward_for_gradient(structure, data, numerics, init, perturbed, wrt=None, exact_jacobians=False):
    """The forward pass under differentiation, with the Jacobian blocks Alt-Diff needs
    (for the columns of ``wrt``, a flag for each of q, b, h, lb, ub; by default those
    the ``perturbed`` leaves need)."""
    wrt, sizes = wrt or carried_parameters(perturbed), _sizes(data)
    strategy = strategy_for(structure, kkt_available=True)
    if not strategy.carries_jacobians:
        return strategy, _forward(structure, data, numerics, init, None), (None,) * 5
    columns = sum(size for size, carried in zip(sizes, wrt) if carried)
    forward = _forward(structure, data, numerics, init, constant_seeds(sizes, wrt, data[1].dtype), columns,
                       exact_jacobians)
    return strategy, forward, split_columns(forward.scaling.unscale(forward.J), sizes, wrt)


def constants_unfolded(data: QP) -> QP:
    """``data`` through an optimisation barrier: matrices a jitted function closes over are
    compile-time constants, and without the barrier XLA would evaluate the solver's set-up
    on them (equilibration, Gram matrices) while compiling, far slower than running it.
    Applied inside the custom_vjp rules, where the data carry no tangents: outside, the
    barrier's JVP would mark every leaf as differentiated."""
    return jax.lax.optimization_barrier(data)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def solve_qp(structure: Structure, data: QP, numerics: Numerics, init: Iterate) -> Solution:
    """The QP solve with its custom_vjp: ``data`` is a :class:`QP` of operators (P, A, G)
    and arrays; shared by :func:`solve` (dense operators) and the structured layers."""
    return _forward(structure, data, numerics, init, None).solution


def _solve_qp_fwd(structure, data, numerics, init):
    perturbed = tuple(
        any(leaf.perturbed for leaf in jax.tree_util.tree_leaves(field)) for field in data
    )
    data, numerics, init = jax.tree_util.tree_map(lambda leaf: leaf.value, (data, numerics, init))
    strategy, forward, blocks = _forward_for_gradient(
        structure, data, numerics, init, dict(zip(QP._fields, perturbed))
    )
    forward = strategy.residuals(forward)  # keep what bwd needs
    # A sparse matrix's gradient lives on its pattern, a matrix-free one's in its params: keep the operator.
    sparse = tuple(op if isinstance(op, ITERATIVE) else None for op in (data.P, data.A, data.G))
    # Strategy and flags travel in the residuals' tree structure (a dict key), not as leaves.
    return forward.solution, ({(strategy, perturbed): (forward, blocks, sparse)}, numerics)


def _solve_qp_bwd(structure, residuals, cotangent: Solution):
    by_key, numerics = residuals
    (((strategy, perturbed), (forward, blocks, sparse)),) = by_key.items()
    outputs = output_cotangent(cotangent, forward.solution)
    bars, _ = pull_back(strategy, structure, numerics, forward, blocks, outputs)
    wanted = dict(zip(QP._fields, perturbed))
    matrices = (wanted["P"], wanted["A"], wanted["G"])
    grads = data_gradients(*masked_solution(forward.solution), *bars, matrices=matrices,
                           operators=sparse)
    cotangents = []
    for name, grad, wanted in zip(QP._fields, grads, perturbed):
        if not wanted:
            grad = None
        elif name in ("P", "A", "G") and not isinstance(grad, ITERATIVE):
            grad = Dense(grad)  # structured operators are the layers' constants, never perturbed
        cotangents.append(grad)
    return QP(*cotangents), None, None


solve_qp.defvjp(_solve_qp_fwd, _solve_qp_bwd, symbolic_zeros=True)


def _prepare(problem: QP, options: Optional[Options], init: Optional[Solution]):
    P, q, constraints = validate_qp(problem)
    options = resolve_options(options)
    data = QP(P, q, *constraints)
    z0 = initial_iterate(init, constraints, q.shape[0], q.dtype)
    return data, options.numerics(q.dtype), z0, options


def raise_forward_mode(error: TypeError, name: str, alternatives: str) -> None:
    """Re-raise JAX's forward-mode error through a custom_vjp with a pointer to the
    forward-mode entry points; any other TypeError passes unchanged."""
    if _FORWARD_MODE_MESSAGE in str(error):
        raise TypeError(
            f"altdiff_jax.{name} is reverse-mode differentiable only (jax.grad, jax.vjp, jax.jacrev); "
            f"jax.jvp and jax.jacfwd cannot pass its custom_vjp. {alternatives}"
        ) from error
    raise error


def solve(problem: QP, options: Optional[Options] = None, init: Optional[Solution] = None) -> Solution:
    """Solve a QP by ADMM; reverse-mode differentiable by Alt-Diff.

    A pure function: jit it, vmap it over a batch of problems (any subset of the
    leaves batched), and take ``jax.grad`` of a loss of any field of the returned
    :class:`Solution` with respect to every leaf ``P, q, A, b, G, h, lb, ub``.

    How ``jax.grad`` differentiates is ``Options.differentiation``. The default
    ``"auto"`` is ``"kkt"``: the forward loop carries nothing, and the backward pass
    solves the KKT system on the active set at the solution, with the polish's factor
    when the solution is polished (exact to round-off). With ``"adjoint"`` the backward
    pass iterates the transposed Alt-Diff recursion on the cotangent. With ``"altdiff"``
    the loop also carries the Jacobians of the iterates with respect to the
    differentiated parameters (paper eqs. 5ga–5gd) and the stopping rule waits for them
    to settle, so ``Options.tol`` truncates both the solution and its derivative. A
    failed solve (infeasible, unbounded, non-finite) has a zero gradient; a ``MAX_ITER``
    one has the gradient of its truncated iterate (for ``"kkt"``, on the active set read
    from that iterate).

    Forward mode (``jax.jvp``, ``jax.jacfwd``) cannot pass this function's
    ``custom_vjp``; use :func:`jvp` for tangents and :func:`jacobians` for the full
    Jacobians.

    Args:
        problem: the :class:`QP`, leaves of one floating dtype (float32 or float64).
        options: :class:`Options`; ``None`` for the defaults.
        init: a previous :class:`Solution` to start from (warm start); ``None``
            starts from zero as the paper does.

    Returns:
        :class:`Solution` with ``x (n,)``, ``s (m,)``, ``lam (p,)``, ``nu (m,)``,
        ``mu (n,)`` (``(0,)`` without bounds) and ``info``. Check ``info.status``: a
        failed solve is reported, never raised.

    Raises:
        ValueError: at trace time, if shapes or dtypes of the problem disagree.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import QP, solve
        >>> sol = solve(QP(P=jnp.eye(2), q=jnp.array([1.0, -1.0]), lb=jnp.zeros(2)))
        >>> [round(float(v), 3) + 0.0 for v in sol.x], [round(float(v), 3) for v in sol.mu]
        ([0.0, 1.0], [-1.0, 0.0])
    """
    data, numerics, z0, options = _prepare(problem, options, init)
    try:
        return solve_qp(options.structure(), data, numerics, z0)
    except TypeError as error:
        raise_forward_mode(
            error, "solve",
            "Use altdiff_jax.jvp(problem, tangents) for tangents, or altdiff_jax.jacobians(problem).",
        )


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _not_differentiable(name: str, tree):
    return tree


@_not_differentiable.defjvp
def _not_differentiable_jvp(name, primals, tangents):
    raise TypeError(
        f"altdiff_jax.{name} returns derivatives and is not itself differentiable: "
        "differentiate a loss of altdiff_jax.solve(...) with jax.grad instead, "
        "or take finite differences of this function's output."
    )


def vjp(
    problem: QP,
    cotangent: Union[jax.Array, Solution, Iterate],
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
) -> tuple[Solution, QP, AdjointInfo]:
    """Solve and pull a cotangent back to every leaf, reporting the backward pass.

    The same computation as ``jax.grad`` through :func:`solve`, with the strategy of
    ``Options.differentiation`` (``"auto"``: ``"kkt"``, one solve with the KKT system at
    the solution, as for :func:`solve`), but it also returns the diagnostics of the
    backward pass (its status, iteration count and last change), which ``jax.grad`` has
    no way to return.

    Args:
        problem: the :class:`QP`.
        cotangent: ``x̄ (n,)``, or an object with fields ``x, s, lam, nu`` and
            optionally ``mu`` (None for zero).
        options: :class:`Options`, as in :func:`solve`.
        init: a previous :class:`Solution` to start from, as in :func:`solve`.

    Returns:
        ``(solution, grads, backward_info)``; ``grads`` is a :class:`QP` of gradients
        (None for absent blocks).

    Raises:
        TypeError: if differentiated itself (it is a derivative, not a layer).

    Examples:
        >>> import jax.numpy as jnp
        >>> import altdiff_jax as ad
        >>> problem = ad.QP(P=jnp.eye(2), q=jnp.array([1.0, -1.0]), lb=jnp.zeros(2))
        >>> sol, grads, backward = ad.vjp(problem, jnp.ones(2))  # x* = max(−q, 0)
        >>> (grads.q.round(6) + 0.0).tolist()  # ∂(x₁* + x₂*)/∂q: x₁* sits on its bound
        [0.0, -1.0]
        >>> ad.Status(int(backward.status)).name, grads.A  # no A in the problem: None
        ('SOLVED', None)
    """
    problem = _not_differentiable("vjp", problem)
    data, numerics, z0, options = _prepare(problem, options, init)
    structure = options.structure()
    everything = dict.fromkeys(QP._fields, True)
    strategy, forward, blocks = _forward_for_gradient(structure, data, numerics, z0, everything)
    solution = forward.solution
    if not hasattr(cotangent, "x"):
        cotangent = Iterate(jnp.asarray(cotangent), None, None, None, None, None)
    checked = {}
    for name in ("x", "s", "lam", "nu", "mu"):
        value = getattr(cotangent, name, None)
        like = getattr(solution, name)
        value = jnp.zeros_like(like) if value is None else jnp.asarray(value, like.dtype)
        if value.shape != like.shape:
            raise ValueError(f"cotangent.{name} has shape {value.shape}, expected {like.shape}")
        checked[name] = value
    outputs = output_cotangent(Solution(**checked, info=None), solution)
    bars, info = pull_back(strategy, structure, numerics, forward, blocks, outputs)
    sparse = tuple(op if isinstance(op, ITERATIVE) else None for op in (data.P, data.A, data.G))
    grads = data_gradients(*masked_solution(solution), *bars, operators=sparse)
    grads = QP(*(None if leaf is None else as_user_gradient(g, leaf) for g, leaf in zip(grads, problem)))
    return solution, grads, info


def as_user_gradient(gradient, leaf):
    """A gradient shaped as the user's leaf: a BCOO leaf's is a BCOO of its values'
    gradients at its own indices, a MatrixFree leaf's the leaf with its params' gradients."""
    if isinstance(gradient, MatrixFree):
        return leaf._replace(params=gradient.params)
    if isinstance(gradient, Sparse):
        return jsparse.BCOO((jnp.where(stored_entries(leaf), gradient.data, 0.0), leaf.indices), shape=leaf.shape)
    return gradient


def _checked_tangent(name: str, tangent, value: jax.Array) -> jax.Array:
    tangent = jnp.asarray(tangent, value.dtype)
    if tangent.shape != value.shape:
        raise ValueError(f"tangents.{name} has shape {tangent.shape}, expected {value.shape} like QP.{name}")
    return tangent


def _tangent_operator(name: str, tangent, operator):
    """The tangent of P, A or G as an operator (None for a zero tangent): a dense array for
    a dense matrix, a BCOO matrix (any pattern) for a sparse one; a MatrixFree operator
    takes none."""
    if tangent is None:
        return None
    if isinstance(operator, MatrixFree):
        raise ValueError(f"tangents.{name}: jvp takes no tangent of a MatrixFree operator; differentiate its "
                         "params with jax.grad or vjp")
    if isinstance(operator, Sparse):
        if not isinstance(tangent, jsparse.BCOO):
            raise ValueError(f"tangents.{name} must be a BCOO matrix like QP.{name}")
        tangent = _as_sparse("tangents", name, tangent, operator.dtype, name)
        if tangent.shape != operator.shape:
            raise ValueError(f"tangents.{name} has shape {tangent.shape}, expected {operator.shape} like QP.{name}")
        return tangent.merged()
    return Dense(_checked_tangent(name, tangent, operator.matrix))


def jvp(
    problem: QP, tangents: QP, options: Optional[Options] = None, init: Optional[Solution] = None
) -> tuple[Solution, jax.Array]:
    """Forward mode: the solution and its tangent dx* along ``tangents``, by Alt-Diff.

    The tangent is that of the recursion of eqs. (5ga)–(5gd). Tangents of P, A and G
    enter through the current iterate (∂∇f = dq + dP x + dAᵀλ + dGᵀν, ∂b = db − dA x,
    ∂h = dh − dG x), whose fixed point is the differentiated KKT system.
    ``Options.differentiation`` chooses how it is computed, as in :func:`jacobians`:

    * ``"auto"`` (the default; also ``"kkt"`` and ``"adjoint"``), with polishing: solve
      first; where the solution is polished, its tangent is the fixed point on the
      polished active set, solved with the polish's factor (exact to round-off);
      otherwise (not polished, or that solve did not settle), if the solve converged or
      stalled, the loop continues from the solution carrying the tangent. A failed solve, or one stopped at ``max_iter``
      before it could be polished, has a zero tangent.
    * ``"altdiff"`` (or ``polish=False``): one tangent column is carried through the loop
      from the start, about one extra primal iteration per iteration, and the loop stops
      when the residuals and the change of the tangent are below ``Options.tol``.

    Args:
        problem: the :class:`QP`.
        tangents: a :class:`QP` of tangent arrays shaped like the problem's leaves (for
            a BCOO matrix, a BCOO matrix of its shape, any pattern; a :class:`MatrixFree`
            takes none); None for a zero tangent (and for an absent block).
        options: :class:`Options`, as in :func:`solve`.
        init: a previous :class:`Solution` to start from, as in :func:`solve`.

    Returns:
        ``(solution, tangent_x)`` with ``tangent_x`` of shape ``(n,)``.

    Raises:
        TypeError: if differentiated itself.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import QP, jvp
        >>> problem = QP(P=2 * jnp.eye(2), q=jnp.zeros(2))
        >>> _, dx = jvp(problem, QP(P=None, q=jnp.array([1.0, 2.0])))
        >>> dx.round(6).tolist()  # dx* = −P⁻¹ dq
        [-0.5, -1.0]
    """
    problem = _not_differentiable("jvp", problem)
    data, numerics, z0, options = _prepare(problem, options, init)
    if not isinstance(tangents, QP):
        raise ValueError(f"tangents must be an altdiff_jax.QP, got {type(tangents).__name__}")
    for name in ("lb", "ub"):
        if getattr(tangents, name) is not None and getattr(problem, name) is None:
            raise ValueError(f"tangents.{name} is given but the problem has no {name}")
    vectors = (data.q, data.b, data.h, data.lb, data.ub)
    dq, db, dh, dlb, dub = (
        jnp.zeros_like(value) if getattr(tangents, name) is None
        else _checked_tangent(name, getattr(tangents, name), value)
        for name, value in zip(("q", "b", "h", "lb", "ub"), vectors)
    )
    dP, dA, dG = (_tangent_operator(name, getattr(tangents, name), getattr(data, name)) for name in ("P", "A", "G"))
    if dP is not None:  # P enters through its symmetric part
        dP = dP.symmetric_part() if isinstance(dP, Sparse) else Dense(0.5 * (dP.matrix + dP.matrix.T))

    def seeds(scaling: Scaling):
        D, E_A, E_G, c = scaling
        # Tangents of the scaled data (see _scaling), then the seeds at the iterate z̃.
        dP_s = None if dP is None else dP.scale(D, D).times(c)
        dA_s = None if dA is None else dA.scale(E_A, D)
        dG_s = None if dG is None else dG.scale(E_G, D)
        dq_s, db_s, dh_s = c * D * dq, E_A * db, E_G * dh
        D_B = bound_scale(D, dlb)
        dlb_s, dub_s = dlb / D_B, dub / D_B

        def at(z: Iterate) -> Seeds:
            grad, d_b, d_h = dq_s, db_s, dh_s
            if dP_s is not None:
                grad = grad + dP_s.mv(z.x)
            if dA_s is not None:
                grad, d_b = grad + dA_s.rmv(z.lam), d_b - dA_s.mv(z.x)
            if dG_s is not None:
                grad, d_h = grad + dG_s.rmv(z.nu), d_h - dG_s.mv(z.x)
            return Seeds(*(v[:, None] for v in (grad, d_b, d_h, dlb_s, dub_s)))

        return at

    exact = options.differentiation != "altdiff"
    forward = _forward(options.structure(), data, numerics, z0, seeds, 1, exact)
    return forward.solution, forward.scaling.D * forward.J.x[:, 0]


def jacobians(
    problem: QP, options: Optional[Options] = None, init: Optional[Solution] = None,
    wrt: Sequence[str] = SEED_FIELDS,
) -> tuple[Solution, dict[str, jax.Array]]:
    """Solve a QP and return the Jacobians of x* by Alt-Diff, the paper's product.

    The Jacobians are those of the recursion of eqs. (5ga–5gd), one column per entry of
    the parameters in ``wrt`` (n for q, p for b, m for h, n for each of lb and ub).
    ``Options.differentiation`` chooses how they are computed:

    * ``"auto"`` (the default), with polishing: solve first, carrying nothing; where the
      solution is polished (``info.polished``), the Jacobians are the fixed point of the
      recursion on the polished active set, solved with the polish's factor: exact to
      round-off. Otherwise (not polished, or that solve did not settle), if the solve
      converged or stalled, the loop continues from the solution carrying the columns
      beside the iterates.
    * ``"altdiff"`` (and ``"auto"`` with ``polish=False``): the loop carries the columns
      from the start, truncated by the same stopping rule as the solution (the change of
      each block <= ``Options.tol``), as in the paper.

    With ``"auto"`` and polishing (the default), a failed solve (``info.status``
    infeasible, unbounded or non-finite), or one stopped at ``max_iter`` before it could be
    polished, has zero Jacobians; use ``"altdiff"`` for the carried Jacobians of a
    truncated solve.

    Args:
        problem: the :class:`QP`.
        options: :class:`Options`; ``None`` for the defaults.
        init: optional warm start, as in :func:`solve`.
        wrt: the parameters to differentiate by, any of ``"q"``, ``"b"``, ``"h"``,
            ``"lb"``, ``"ub"`` (``"lb"`` and ``"ub"`` only for a problem with bounds;
            they are left out of the default when it has none). Only their columns are
            carried.

    Returns:
        ``(solution, jac)``, with one entry per name in ``wrt``: ``jac["q"]`` = dx*/dq
        ``(n, n)``, ``jac["b"]`` = dx*/db ``(n, p)``, ``jac["h"]`` = dx*/dh ``(n, m)``,
        ``jac["lb"]``, ``jac["ub"]`` ``(n, n)``.

    Raises:
        ValueError: if ``wrt`` names an unknown parameter, or bounds the problem lacks, or
            if ``options.differentiation`` is neither ``"auto"`` nor ``"altdiff"``.
        TypeError: if differentiated itself.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import QP, jacobians
        >>> problem = QP(P=2 * jnp.eye(2), q=jnp.zeros(2), A=jnp.ones((1, 2)), b=jnp.ones(1))
        >>> _, jac = jacobians(problem, wrt=("b",))
        >>> list(jac), jac["b"].round(6).tolist()  # x* = b/2 on both coordinates
        (['b'], [[0.5], [0.5]])
    """
    problem = _not_differentiable("jacobians", problem)
    data, numerics, z0, options = _prepare(problem, options, init)
    if options.differentiation not in ("auto", "altdiff"):
        raise ValueError(
            "jacobians carries Alt-Diff Jacobians; Options.differentiation must be 'auto' or "
            f"'altdiff', got {options.differentiation!r} (use vjp for a backward pass)"
        )
    bounded = data.lb.shape[0] > 0
    if isinstance(wrt, str):
        wrt = (wrt,)
    names = tuple(name for name in wrt if bounded or wrt is not SEED_FIELDS or name not in ("lb", "ub"))
    for name in names:
        if name not in SEED_FIELDS:
            raise ValueError(f"wrt names {name!r}; jacobians differentiates by any of {SEED_FIELDS}")
        if name in ("lb", "ub") and not bounded:
            raise ValueError(f"wrt names {name!r} but the problem has no bounds")
    if not names:
        raise ValueError("wrt names no parameter")
    structure = options.structure()._replace(differentiation="altdiff")
    carried = tuple(name in names for name in SEED_FIELDS)
    _, forward, blocks = _forward_for_gradient(
        structure, data, numerics, z0, None, wrt=carried, exact_jacobians=options.differentiation == "auto"
    )
    return forward.solution, {name: block.x for name, block in zip(SEED_FIELDS, blocks) if name in names}
