"""``solve`` and ``jacobians``: the QP layer, with Alt-Diff behind a ``custom_vjp``."""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ._admm import Iterate
from ._driver import run
from ._jacobian import parameter_seeds
from ._objective import QuadraticObjective
from ._options import Options
from ._problem import QP, Constraints, data_gradients, validate_qp
from ._scaling import ruiz_equilibrate
from ._solution import Solution, Status


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


def _forward(structure, P, q, A, b, G, h, numerics, init, wrt):
    """Equilibrate, factor once, run the loop, and map the result back to the user's
    scaling; carry Jacobian columns for the parameters in ``wrt`` = (q, b, h)."""
    P = 0.5 * (P + P.T)
    P_s, q_s, constraints, scaling = ruiz_equilibrate(P, q, Constraints(A, b, G, h), structure[3])
    objective = QuadraticObjective.factor(P_s, q_s, constraints)
    (n,), (p,), (m,) = q.shape, b.shape, h.shape
    seeds = scaling.scale_seeds(parameter_seeds(n, p, m, wrt, q.dtype)) if any(wrt) else None
    z, J, info = run(objective, constraints, scaling, scaling.scale(init), seeds, numerics, structure)
    z = scaling.unscale(z)
    J = None if J is None else scaling.unscale(J)
    return Solution(z.x, z.s, z.lam, z.nu, info), J


def _split_columns(J: Iterate, sizes) -> tuple[Iterate, ...]:
    """Split the carried columns into the blocks of q, b and h, of the given widths."""
    blocks, offset = [], 0
    for size in sizes:
        blocks.append(Iterate(*(block[:, offset : offset + size] for block in J)))
        offset += size
    return tuple(blocks)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _solve_qp(structure, P, q, A, b, G, h, numerics, init):
    solution, _ = _forward(structure, P, q, A, b, G, h, numerics, init, (False, False, False))
    return solution


def _solve_qp_fwd(structure, P, q, A, b, G, h, numerics, init):
    perturbed = {name: leaf.perturbed for name, leaf in zip("PqAbGh", (P, q, A, b, G, h))}
    P, q, A, b, G, h = (leaf.value for leaf in (P, q, A, b, G, h))
    numerics, init = jax.tree_util.tree_map(lambda leaf: leaf.value, (numerics, init))
    # Gradients for P, A and G come from those for q, b and h (math note §5).
    wrt = (
        perturbed["P"] or perturbed["q"] or perturbed["A"] or perturbed["G"],
        perturbed["b"] or perturbed["A"],
        perturbed["h"] or perturbed["G"],
    )
    solution, J = _forward(structure, P, q, A, b, G, h, numerics, init, wrt)
    sizes = [size if carried else 0 for size, carried in zip((q.size, b.size, h.size), wrt)]
    blocks = _split_columns(J, sizes)
    blocks = tuple(block if carried else None for block, carried in zip(blocks, wrt))
    return solution, (solution, blocks)


def _solve_qp_bwd(structure, residuals, cotangent: Solution):
    """Jᵀ times the cotangent. A solve that failed (infeasible, unbounded, non-finite)
    has no derivative: its gradient is zero, so it cannot poison the rest of a batch.
    A ``MAX_ITER`` solve gives the truncated Alt-Diff gradient of its last iterate."""
    del structure
    solution, blocks = residuals
    usable = (solution.info.status == Status.SOLVED) | (solution.info.status == Status.MAX_ITER)
    usable = usable & jnp.all(jnp.isfinite(solution.x))
    x, lam, nu = (jnp.where(usable, v, 0.0) for v in (solution.x, solution.lam, solution.nu))
    outputs = (cotangent.x, cotangent.s, cotangent.lam, cotangent.nu)

    def pull_back(J: Optional[Iterate]):
        """Jᵀ g summed over the outputs x, s, λ, ν: the cotangent of one parameter."""
        if J is None:
            return None
        total = jnp.zeros(J.x.shape[1], x.dtype)
        for block, g in zip(J, outputs):
            if not isinstance(g, SymbolicZero):
                total = total + block.T @ g
        return jnp.where(usable & jnp.all(jnp.isfinite(total)), total, 0.0)

    grads = data_gradients(x, lam, nu, *(pull_back(block) for block in blocks))
    return (*grads, None, None)


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

    Under ``jax.grad`` the loop also carries the Jacobians of (x, s, λ, ν) with
    respect to q, b and h (paper eqs. 5ga–5gd), only for the parameters being
    differentiated; gradients for P, A, G follow from those (math note §5). The
    stopping rule then also waits for the Jacobians to settle, so ``Options.tol``
    truncates both the solution and its derivative.

    Forward mode (``jax.jvp``, ``jax.jacfwd``) cannot pass through this function's
    ``custom_vjp``; use :func:`jacobians` for the full Jacobians dx*/dq, dx*/db, dx*/dh.

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
                "derivatives use altdiff_jax.jacobians(problem, options), which returns "
                "dx*/dq, dx*/db and dx*/dh."
            ) from error
        raise


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
    solution, J = _forward(options.structure(), P, q, A, b, G, h, numerics, z0, (True, True, True))
    J_q, J_b, J_h = _split_columns(J, (q.size, b.size, h.size))
    return solution, {"q": J_q.x, "b": J_b.x, "h": J_h.x}
