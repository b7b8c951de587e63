"""Child processes: :func:`side_by_side` measures several contenders on one problem, each
prepared in its own spawned child (a hard time budget, a memory cap, and a crash or hang
that stays there), then timed interleaved."""

from __future__ import annotations

import dataclasses
import gc
import math
import multiprocessing
import multiprocessing.connection
import os
import sys
import tempfile
import time
import traceback
import warnings
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from .peers import Contender, MissingPeer
from .provenance import available_memory, total_memory
from .timing import Dropped, Timing, interleaved, time_call


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
            _reset_peak_resident()
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
            connection.send(_peak_resident_bytes())


def _reset_peak_resident() -> None:
    """Start this process's resident-memory high-water mark again (Linux; elsewhere the
    mark keeps the process's whole life)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def _peak_resident_bytes() -> int:
    """The highest resident memory of this process since :func:`_reset_peak_resident`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


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
SETTLE_S = 1.0
"""Pause before each timed call of a child, so that the cores are idle when it starts: a
contender whose OpenMP workers spin after their work (PyTorch's) otherwise slows the next
one down (altdiff_jax at Tiny: 0.54 s after qpth, 0.38 s alone:
``benchmarks/results/paper_full/paper_table1_tiny_small_xeon.md``)."""


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
    queue = _fitting(contenders, measurements, cap, log)
    timing = (repeats, budget_s, once_s, log)  # the arguments of _time_group after the measurements
    with tempfile.TemporaryDirectory(prefix="altdiff_bench_") as folder:
        path = os.path.join(folder, "problem.npz")
        np.savez(path, _g=np.asarray(g), **{k: np.asarray(v) for k, v in problem.items()})
        group: list = []  # (contender, worker) prepared, waiting to be timed
        pending: dict = {}  # worker -> (contender, start, deadline) being prepared
        while queue or pending:
            _start_preparations(queue, pending, group, measurements, jobs, cap, path, timing)
            wait = max(0.0, min(deadline for _, _, deadline in pending.values()) - time.perf_counter())
            ready = multiprocessing.connection.wait([w.connection for w in pending], wait)
            _collect(pending, ready, group, measurements, budget_s, log)
        _time_group(group, measurements, *timing)
    return measurements


def _fitting(contenders: Sequence[Contender], measurements: dict, cap: float, log) -> list:
    """The contenders whose memory estimate fits in ``cap``; the others are marked skipped."""
    queue = []
    for item in contenders:
        if item.memory > cap:
            measurements[item.label].skipped = (f"does not fit in memory (needs ~{item.memory / 2**30:.0f} GiB, "
                                                f"{cap / 2**30:.0f} GiB usable)")
            log(f"  {item.label}: skipped, {measurements[item.label].skipped}")
        else:
            queue.append(item)
    return queue


def _start_preparations(queue: list, pending: dict, group: list, measurements: dict, jobs: int, cap: float,
                        path: str, timing: tuple) -> None:
    """Sends the next contenders of ``queue`` to children, up to ``jobs`` preparing at once.
    When the next one's memory estimate does not fit beside those alive, it waits for the
    pending ones, or, with none pending, times and releases the prepared ``group`` first."""
    budget_s = timing[1]  # timing: (repeats, budget_s, once_s, log)
    while queue and len(pending) < jobs:
        alive = sum(c.memory for c, _ in group) + sum(c.memory for c, _, _ in pending.values())
        if alive + queue[0].memory > cap:
            if pending:
                break
            _time_group(group, measurements, *timing)
            group.clear()
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


def _answer(worker: Worker, ready: list, deadline: float, measurement: Measurement, budget_s: float):
    """(kind, answer) of a preparing child: its message, or "died" when it is gone or ran
    past its deadline (then stopped); None while it is still within its deadline."""
    if worker.connection in ready:
        try:
            return worker.receive(0.0)
        except (TimeoutError, EOFError, OSError):
            return "died", "child process died (out of memory?)"
    if time.perf_counter() > deadline:
        worker.kill()
        measurement.over_budget = True
        return "died", f"> budget: set-up and first calls ran over {budget_s:.0f} s, stopped"
    return None


def _collect(pending: dict, ready: list, group: list, measurements: dict, budget_s: float, log) -> None:
    """Takes the answers of the preparing children: a prepared contender joins ``group``;
    one that is missing, failed or died is marked skipped and its child freed."""
    for worker in list(pending):
        item, start, deadline = pending[worker]
        m = measurements[item.label]
        message = _answer(worker, ready, deadline, m, budget_s)
        if message is None:
            continue
        kind, answer = message
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


def _time_group(group, measurements, repeats, budget_s, once_s, log) -> None:
    calls = {}
    for item, worker in group:
        whats = ("forward", "total") + (("backward",) if measurements[item.label].backward is not None else ())
        for what in whats:
            calls[item.label, what] = _remote(worker, what, budget_s, measurements[item.label], log)
    timings = interleaved(calls, repeats, once_s, timed=True, settle_s=SETTLE_S)
    for (label, what), timing in timings.items():
        setattr(measurements[label], what, timing)
    for item, worker in group:
        if worker.alive():
            try:
                peak = worker.ask("release", None, 60.0)
                measurements[item.label].notes.append(
                    f"peak resident memory of its process while it hosted this contender {peak / 2**30:.1f} GiB")
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
