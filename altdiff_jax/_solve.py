"""``solve``, ``vjp``, ``jvp`` and ``jacobians``: the QP layer and its derivatives.

Reverse mode goes through a ``custom_vjp`` whose rules dispatch on
``Options.differentiation``; every strategy ends in the same place: cotangents of the
scaled seeds (∂∇f, ∂b, ∂h), mapped to the user's q, b, h, then to P, A, G (§5).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ._adjoint import AdjointInfo, adjoint_vjp
from ._admm import Iterate
from ._driver import run
from ._jacobian import Seeds, active_margin, parameter_seeds
from ._kkt import kkt_vjp
from ._objective import QUADRATIC_FACTORS, QuadraticObjective
from ._options import Numerics, Options, Structure
from ._problem import QP, Constraints, data_gradients, validate_qp
from ._scaling import Scaling, ruiz_equilibrate
from ._solution import Solution, Status


class _Run(NamedTuple):
    """What a forward solve leaves for a backward pass, in the solver's scaled space."""

    objective: QuadraticObjective
    constraints: Constraints
    scaling: Scaling
    z: Iterate
    J: Optional[Iterate]
    solution: Solution


def _initial_iterate(init: Optional[Solution], n: int, p: int, m: int, dtype) -> Iterate:
    if init is None:
        return Iterate(*(jnp.zeros((size,), dtype) for size in (n, m, p, m)))
    values = []
    for name, size in zip(("x", "s", "lam", "nu"), (n, m, p, m)):
        value = jnp.asarray(getattr(init, name), dtype)
        if value.shape != (size,):
            raise ValueError(f"init.{name} has shape {value.shape}, expected {(size,)}")
        values.append(value)
    return Iterate(*values)


def _forward(structure: Structure, P, q, A, b, G, h, numerics: Numerics, init: Iterate, seeds) -> _Run:
    """Equilibrate, factor once, run the loop, map the solution back to the user's scaling.

    ``seeds(scaling)`` gives the scaled seeds to carry (or None for a plain solve).
    """
    P = 0.5 * (P + P.T)
    P_s, q_s, constraints, scaling = ruiz_equilibrate(
        P, q, Constraints(A, b, G, h), structure.scaling_iterations
    )
    objective = QUADRATIC_FACTORS[structure.quadratic](P_s, q_s, constraints)
    return run_objective(structure, objective, constraints, scaling, numerics, init, seeds)


def run_objective(structure, objective, constraints, scaling, numerics, init, seeds) -> _Run:
    """Run the loop for any objective on (scaled) constraints; shared by every layer."""
    carried = None if seeds is None else seeds(scaling)
    z, J, info = run(objective, constraints, scaling, scaling.scale(init), carried, numerics, structure)
    user = scaling.unscale(z)
    return _Run(objective, constraints, scaling, z, J, Solution(user.x, user.s, user.lam, user.nu, info))


def _constant_seeds(q, b, h, wrt):
    n, p, m = q.size, b.size, h.size
    return lambda scaling: scaling.scale_seeds(parameter_seeds(n, p, m, wrt, q.dtype))


def _usable(solution: Solution) -> jax.Array:
    """A solve has a derivative if it converged or was truncated, with a finite result."""
    status = solution.info.status
    ok = (status == Status.SOLVED) | (status == Status.MAX_ITER)
    return ok & jnp.all(jnp.isfinite(solution.x))


def _pull_back(structure: Structure, numerics: Numerics, forward: _Run, blocks, cotangent: Iterate):
    """Cotangent of (x, s, λ, ν) -> gradients of all six leaves, by the chosen strategy.

    A solve that failed (infeasible, unbounded, non-finite) has a zero gradient, so it
    cannot poison the rest of a batch.

    Returns:
        ``([q̄, b̄, h̄], AdjointInfo)``: cotangents of the user's q, b, h (None where not
        computed); the gradients of P, A, G (or of an objective's θ) follow from them.
    """
    solution, scaling = forward.solution, forward.scaling
    usable = _usable(solution)
    strategy = structure.differentiation
    if strategy == "altdiff":
        bars = []
        for J in blocks:
            total = None
            if J is not None:
                total = sum(block.T @ g for block, g in zip(J, cotangent))
            bars.append(total)
        info = AdjointInfo(solution.info.status, solution.info.iterations, solution.info.jacobian_change)
    else:
        # The output map (x, s, λ, ν) = U(x̃, s̃, λ̃, ν̃) is diagonal, so Uᵀ = U.
        scaled_cotangent = scaling.unscale(cotangent)
        z, rho = forward.z, solution.info.rho
        if strategy == "adjoint":
            sigma_bar, info = adjoint_vjp(
                forward.objective, forward.constraints, z, rho, numerics.alpha,
                scaled_cotangent, numerics.tol, structure.max_iter,
            )
        else:  # "kkt"; active iff s̃ − margin <= ν̃/ρ: the Alt-Diff mask at the fixed point
            margin = active_margin(forward.constraints, numerics.tol)
            sigma_bar = Seeds(*kkt_vjp(
                forward.objective.hessian(z.x), None, forward.constraints,
                z.x, z.lam, z.nu / rho, z.s - margin, scaled_cotangent,
            ))
            finite = jnp.all(jnp.isfinite(sigma_bar.grad))
            info = AdjointInfo(
                jnp.where(finite, Status.SOLVED, Status.NONFINITE).astype(jnp.int32),
                jnp.int32(0), jnp.zeros((), z.x.dtype),
            )
        bars = list(scaling.parameter_cotangents(sigma_bar))
    bars = [None if bar is None else jnp.where(usable & jnp.all(jnp.isfinite(bar)), bar, 0.0) for bar in bars]
    return bars, info


def _masked_solution(solution: Solution) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, λ, ν) for the §5 formulas, zeroed for a failed solve (its gradient is zero)."""
    usable = _usable(solution)
    return tuple(jnp.where(usable, v, 0.0) for v in (solution.x, solution.lam, solution.nu))


def _altdiff_wrt(perturbed: dict) -> tuple[bool, bool, bool]:
    """Columns to carry for (q, b, h): P, A and G gradients are built from them (§5)."""
    return (
        perturbed["P"] or perturbed["q"] or perturbed["A"] or perturbed["G"],
        perturbed["b"] or perturbed["A"],
        perturbed["h"] or perturbed["G"],
    )


def _forward_for_gradient(structure, P, q, A, b, G, h, numerics, init, perturbed):
    """The forward pass under differentiation, with the Jacobian blocks Alt-Diff needs."""
    if structure.differentiation != "altdiff":
        return _forward(structure, P, q, A, b, G, h, numerics, init, None), (None, None, None)
    wrt = _altdiff_wrt(perturbed)
    forward = _forward(structure, P, q, A, b, G, h, numerics, init, _constant_seeds(q, b, h, wrt))
    return forward, split_columns(forward.scaling.unscale(forward.J), (q.size, b.size, h.size), wrt)


def split_columns(J: Iterate, sizes, wrt) -> tuple[Optional[Iterate], ...]:
    """The carried columns as one block each for q, b, h (None for a block not carried)."""
    blocks, offset = [], 0
    for size, carried in zip(sizes, wrt):
        width = size if carried else 0
        blocks.append(Iterate(*(v[:, offset : offset + width] for v in J)) if carried else None)
        offset += width
    return tuple(blocks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _solve_qp(structure, P, q, A, b, G, h, numerics, init):
    return _forward(structure, P, q, A, b, G, h, numerics, init, None).solution


def _solve_qp_fwd(structure, P, q, A, b, G, h, numerics, init):
    perturbed = {name: leaf.perturbed for name, leaf in zip("PqAbGh", (P, q, A, b, G, h))}
    P, q, A, b, G, h = (leaf.value for leaf in (P, q, A, b, G, h))
    numerics, init = jax.tree_util.tree_map(lambda leaf: leaf.value, (numerics, init))
    forward, blocks = _forward_for_gradient(structure, P, q, A, b, G, h, numerics, init, perturbed)
    if structure.differentiation == "altdiff":
        forward = forward._replace(objective=None, constraints=None, J=None)  # keep what bwd needs
    return forward.solution, (forward, blocks, numerics)


def _solve_qp_bwd(structure, residuals, cotangent: Solution):
    forward, blocks, numerics = residuals
    x = forward.solution.x
    sizes = (x.size, forward.solution.s.size, forward.solution.lam.size, forward.solution.nu.size)
    outputs = Iterate(*(
        jnp.zeros(size, x.dtype) if isinstance(g, SymbolicZero) else g
        for g, size in zip((cotangent.x, cotangent.s, cotangent.lam, cotangent.nu), sizes)
    ))
    bars, _ = _pull_back(structure, numerics, forward, blocks, outputs)
    return (*data_gradients(*_masked_solution(forward.solution), *bars), None, None)


_solve_qp.defvjp(_solve_qp_fwd, _solve_qp_bwd, symbolic_zeros=True)


def _prepare(problem: QP, options: Optional[Options], init: Optional[Solution]):
    P, q, constraints = validate_qp(problem)
    options = Options() if options is None else options
    if not isinstance(options, Options):
        raise ValueError(f"options must be an altdiff_jax.Options, got {type(options).__name__}")
    (n,), (p,), (m,) = q.shape, constraints.b.shape, constraints.h.shape
    z0 = _initial_iterate(init, n, p, m, P.dtype)
    return (P, q, *constraints, options.numerics(P.dtype), z0), options


def solve(problem: QP, options: Optional[Options] = None, init: Optional[Solution] = None) -> Solution:
    """Solve a QP by ADMM; reverse-mode differentiable by Alt-Diff.

    A pure function: jit it, vmap it over a batch of problems (any subset of the
    leaves batched), and take ``jax.grad`` of a loss of any field of the returned
    :class:`Solution` with respect to every leaf ``P, q, A, b, G, h``.

    How ``jax.grad`` differentiates is ``Options.differentiation``. With the default
    ``"altdiff"`` the loop also carries the Jacobians of (x, s, λ, ν) with respect to
    q, b and h (paper eqs. 5ga–5gd), only for the parameters being differentiated, and
    the stopping rule also waits for them to settle, so ``Options.tol`` truncates both
    the solution and its derivative. A failed solve (infeasible, unbounded,
    non-finite) has a zero gradient; a ``MAX_ITER`` one has the gradient of its
    truncated iterate.

    Forward mode (``jax.jvp``, ``jax.jacfwd``) cannot pass through this function's
    ``custom_vjp``; use :func:`jvp` for tangents and :func:`jacobians` for the full
    Jacobians dx*/dq, dx*/db, dx*/dh.

    Args:
        problem: the :class:`QP`, leaves of one floating dtype.
        options: :class:`Options`; ``None`` for the defaults.
        init: a previous :class:`Solution` to start from (warm start); ``None``
            starts from zero as the paper does.

    Returns:
        :class:`Solution` with ``x (n,)``, ``s (m,)``, ``lam (p,)``, ``nu (m,)`` and
        ``info``. Check ``info.status``: a failed solve is reported, never raised.

    Raises:
        ValueError: at trace time, if shapes or dtypes of the problem disagree.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import QP, solve
        >>> sol = solve(QP(P=jnp.eye(2), q=jnp.array([1.0, -1.0]),
        ...                G=jnp.eye(2), h=jnp.zeros(2)))
        >>> [round(float(v), 3) for v in sol.x]
        [-1.0, 0.0]
    """
    args, options = _prepare(problem, options, init)
    try:
        return _solve_qp(options.structure(), *args)
    except TypeError as error:
        if "forward-mode" in str(error) or "jvp" in str(error):
            raise TypeError(
                "altdiff_jax.solve is reverse-mode differentiable only (jax.grad, jax.vjp); "
                "jax.jvp and jax.jacfwd cannot pass its custom_vjp. For forward-mode "
                "derivatives use altdiff_jax.jvp(problem, tangents) or "
                "altdiff_jax.jacobians(problem), which returns dx*/dq, dx*/db and dx*/dh."
            ) from error
        raise


def vjp(
    problem: QP,
    cotangent: Union[jax.Array, Solution, Iterate],
    options: Optional[Options] = None,
    init: Optional[Solution] = None,
) -> tuple[Solution, QP, AdjointInfo]:
    """Solve and pull a cotangent back to all six leaves, reporting the backward pass.

    The same computation as ``jax.grad`` through :func:`solve`, with the strategy of
    ``Options.differentiation``, but it also returns the diagnostics of the backward
    iteration (its status, iteration count and last change), which ``jax.grad`` has
    no way to return.

    Args:
        problem: the :class:`QP`.
        cotangent: ``x̄ (n,)``, or an object with fields ``x, s, lam, nu`` (None for zero).
        options, init: as in :func:`solve`.

    Returns:
        ``(solution, grads, backward_info)``; ``grads`` is a :class:`QP` of gradients
        (None for absent blocks). For ``"altdiff"`` the backward info is the forward
        loop's (the Jacobians converged in it); for ``"kkt"`` its iteration count is 0.
    """
    args, options = _prepare(problem, options, init)
    P, q, A, b, G, h, numerics, z0 = jax.lax.stop_gradient(args)
    structure = options.structure()
    everything = dict.fromkeys("PqAbGh", True)
    forward, blocks = _forward_for_gradient(structure, P, q, A, b, G, h, numerics, z0, everything)
    sizes = dict(x=q.size, s=h.size, lam=b.size, nu=h.size)
    if not hasattr(cotangent, "x"):
        cotangent = Iterate(jnp.asarray(cotangent, q.dtype), None, None, None)
    outputs = Iterate(*(
        jnp.zeros(size, q.dtype) if getattr(cotangent, name) is None else jnp.asarray(getattr(cotangent, name), q.dtype)
        for name, size in sizes.items()
    ))
    for name, value in zip(sizes, outputs):
        if value.shape != (sizes[name],):
            raise ValueError(f"cotangent.{name} has shape {value.shape}, expected {(sizes[name],)}")
    bars, info = _pull_back(structure, numerics, forward, blocks, outputs)
    grads = data_gradients(*_masked_solution(forward.solution), *bars)
    grads = QP(*(None if leaf is None else g for g, leaf in zip(grads, problem)))
    return forward.solution, grads, info


def jvp(
    problem: QP, tangents: QP, options: Optional[Options] = None, init: Optional[Solution] = None
) -> tuple[Solution, jax.Array]:
    """Forward mode: the solution and its tangent dx* along ``tangents``, by Alt-Diff.

    One tangent column is carried through the recursion of eqs. (5ga)–(5gd), about one
    extra primal iteration per iteration. Tangents of P, A and G enter through the
    current iterate (∂∇f = dq + dP x + dAᵀλ + dGᵀν, ∂b = db − dA x, ∂h = dh − dG x),
    whose fixed point is the differentiated KKT system. The loop stops when the
    residuals and the change of the tangent are below ``Options.tol``.

    Args:
        problem: the :class:`QP`.
        tangents: a :class:`QP` of tangent arrays shaped like the problem's leaves;
            None for a zero tangent (and for an absent block).
        options, init: as in :func:`solve`.

    Returns:
        ``(solution, tangent_x)`` with ``tangent_x`` of shape ``(n,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import QP, jvp
        >>> problem = QP(P=2 * jnp.eye(2), q=jnp.zeros(2))
        >>> _, dx = jvp(problem, QP(P=None, q=jnp.array([1.0, 2.0])))
        >>> dx.round(6).tolist()  # dx* = −P⁻¹ dq
        [-0.5, -1.0]
    """
    args, options = _prepare(problem, options, init)
    P, q, A, b, G, h, numerics, z0 = jax.lax.stop_gradient(args)
    if not isinstance(tangents, QP):
        raise ValueError(f"tangents must be an altdiff_jax.QP, got {type(tangents).__name__}")
    dP, dq, dA, db, dG, dh = (
        jnp.zeros_like(value) if tangent is None else _checked_tangent(name, tangent, value)
        for name, tangent, value in zip(QP._fields, tangents, (P, q, A, b, G, h))
    )
    dP = 0.5 * (dP + dP.T)

    def seeds(scaling: Scaling):
        D, E_A, E_G, c = scaling
        # Tangents of the scaled data (see _scaling), then the seeds at the iterate z̃.
        dP_s = c * D[:, None] * dP * D[None, :]
        dA_s, dG_s = E_A[:, None] * dA * D[None, :], E_G[:, None] * dG * D[None, :]
        dq_s, db_s, dh_s = c * D * dq, E_A * db, E_G * dh

        def at(z: Iterate) -> Seeds:
            grad = dq_s + dP_s @ z.x + dA_s.T @ z.lam + dG_s.T @ z.nu
            return Seeds(grad[:, None], (db_s - dA_s @ z.x)[:, None], (dh_s - dG_s @ z.x)[:, None])

        return at

    forward = _forward(options.structure(), P, q, A, b, G, h, numerics, z0, seeds)
    return forward.solution, forward.scaling.D * forward.J.x[:, 0]


def _checked_tangent(name: str, tangent, value: jax.Array) -> jax.Array:
    tangent = jnp.asarray(tangent, value.dtype)
    if tangent.shape != value.shape:
        raise ValueError(f"tangents.{name} has shape {tangent.shape}, expected {value.shape} like QP.{name}")
    return tangent


def jacobians(
    problem: QP, options: Optional[Options] = None, init: Optional[Solution] = None
) -> tuple[Solution, dict[str, jax.Array]]:
    """Solve a QP and return the Jacobians of x* carried by Alt-Diff, the paper's product.

    The loop carries n + p + m Jacobian columns (q, b and h together) and stops when
    the residuals and the change of the Jacobians are below ``Options.tol``.

    Args:
        problem: the :class:`QP`.
        options: :class:`Options`; ``None`` for the defaults.
        init: optional warm start, as in :func:`solve`.

    Returns:
        ``(solution, jac)`` with ``jac["q"]`` = dx*/dq ``(n, n)``, ``jac["b"]`` =
        dx*/db ``(n, p)`` and ``jac["h"]`` = dx*/dh ``(n, m)`` (``p`` or ``m`` is 0 for
        an absent block). Not differentiable itself.

    Examples:
        >>> import jax.numpy as jnp
        >>> from altdiff_jax import QP, jacobians
        >>> _, jac = jacobians(QP(P=2 * jnp.eye(2), q=jnp.zeros(2)))
        >>> jac["q"].diagonal().round(6).tolist()  # dx*/dq = −P⁻¹
        [-0.5, -0.5]
    """
    args, options = _prepare(problem, options, init)
    P, q, A, b, G, h, numerics, z0 = jax.lax.stop_gradient(args)
    structure = options.structure()._replace(differentiation="altdiff")
    everything = dict.fromkeys("PqAbGh", True)
    forward, (J_q, J_b, J_h) = _forward_for_gradient(structure, P, q, A, b, G, h, numerics, z0, everything)
    return forward.solution, {"q": J_q.x, "b": J_b.x, "h": J_h.x}
