"""altdiff_jax: differentiable convex optimization layers by ADMM and Alternating Differentiation."""

from ._options import Options
from ._problem import QP
from ._solution import Info, Solution, Status
from ._solve import jacobians, solve

__all__ = ["QP", "Options", "Solution", "Info", "Status", "solve", "jacobians"]
__version__ = "0.1.0"
