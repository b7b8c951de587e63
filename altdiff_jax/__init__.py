"""altdiff_jax: differentiable convex optimization layers by ADMM and Alternating Differentiation."""

from ._options import Options
from ._problem import QP
from ._solution import Info, Solution, Status
from ._adjoint import AdjointInfo
from ._layers import constrained_softmax, constrained_sparsemax, sparsemax
from ._sharding import sharded_vmap, solve_sharded
from ._smooth import solve_convex
from ._solve import jacobians, jvp, solve, vjp
from ._sparse import MatrixFree
from . import problems

__all__ = [
    "QP", "MatrixFree", "Options", "Solution", "Info", "AdjointInfo", "Status",
    "solve", "vjp", "jvp", "jacobians", "solve_convex",
    "sparsemax", "constrained_sparsemax", "constrained_softmax",
    "solve_sharded", "sharded_vmap",
]
__version__ = "0.2.0"
