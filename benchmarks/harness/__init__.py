"""Shared benchmark harness: provenance, interleaved timing, exact references, peers.

Every maintained benchmark script imports this package (``from benchmarks import harness``
when run as ``python -m benchmarks.NAME``, ``import harness`` when run as
``python benchmarks/NAME.py``); the names below are re-exported here, so ``harness.X`` is
the same whichever module holds X. Importing it turns on JAX's float64 (``jax_enable_x64``).

* :mod:`.provenance`: :func:`hardware_line`, the line every results file starts with
  (commit, date, CPU, cores, memory, jax and the peers' versions); :data:`ROOT`,
  :data:`RESULTS`.
* :mod:`.timing`: :func:`interleaved`, several named callables, each already compiled and
  warmed up, run round-robin; best, median and spread of each. The machines here swing 2x
  from one run to the next: interleaving exposes every contender to the same swings, and
  the best of several runs is the least disturbed one.
* :mod:`.problems`: :func:`paper_qp`, the paper's dense QP generator; :func:`stacked_qp`,
  :func:`loss_vector`.
* :mod:`.reference`: :func:`reference`, the exact x* of a QP (Clarabel through cvxpy, or a
  dense NumPy interior point on problems too large for Clarabel's sparse LDLᵀ) and the exact
  gradient of gᵀx* by the adjoint of the active-set KKT system (``tests/reference.py``);
  :func:`cosine` and :func:`relative_error` compare a gradient with it.
* :mod:`.peers`: adapters (:data:`ADAPTERS`), altdiff_jax and each peer as "solve, and
  gradient of gᵀx* with respect to every parameter it supports", with forward and backward
  timed apart where the peer allows; :func:`run_adapter` measures one in this process.
* :mod:`.workers`: :func:`side_by_side` measures several, each in its own child process (a
  hard time budget, a memory cap, and a crash or hang that stays there), interleaved.
* :mod:`.cases`: :class:`Case` and :func:`run_cases`, tables of problems side by side.
* :mod:`.report`: :func:`results_table`, :func:`pivot`, :func:`markdown_table`,
  :func:`write_markdown`, :func:`plot_panels`: the results files.

A peer that is not installed is skipped with one printed line, never an exception.

Module-level settings (``CLARABEL_MAX``, ``IMPORT_ALLOWANCE_S``) are read from their own
modules: to change one, set it there (``harness.reference.CLARABEL_MAX``), not here.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .cases import Case, Ladder, run_cases  # noqa: E402
from .peers import (  # noqa: E402
    ADAPTERS,
    Contender,
    MissingPeer,
    Prepared,
    altdiff,
    contender,
    cvxpy_layer_problem,
    cvxpylayers_layer,
    cvxpylayers_qp,
    jaxopt_qp,
    lse_objective,
    osqp_qp,
    qpax_qp,
    qpth_qp,
    qpth_sparsemax,
    run_adapter,
)
from .problems import QP_KEYS, loss_vector, paper_qp, paper_qp_of_size, stacked_qp  # noqa: E402
from .provenance import (  # noqa: E402
    PEER_PACKAGES,
    RESULTS,
    ROOT,
    available_memory,
    export_package,
    hardware_line,
    package_version,
    source_version,
    total_memory,
)
from .reference import (  # noqa: E402
    CLARABEL_MAX,
    Reference,
    _tests_module,
    _tests_reference,
    cosine,
    flatten,
    interior_point,
    polish,
    reference,
    relative_error,
    symmetric,
)
from .report import (  # noqa: E402
    RESULT_HEADER,
    Panel,
    accuracy,
    backward_cell,
    fmt,
    markdown_table,
    pivot,
    plot_panels,
    results_table,
    timing_spread,
    write_markdown,
)
from .timing import Dropped, Timing, block, interleaved, time_call  # noqa: E402
from .workers import IMPORT_ALLOWANCE_S, Measurement, Worker, shutdown, side_by_side  # noqa: E402
