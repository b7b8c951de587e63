"""Timing: one call with its JAX results waited for, and several callables run round-robin
(:func:`interleaved`) with the best, median and spread of each."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Mapping

import jax


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
                timed: bool = False, warmup: bool = False, settle_s: float = 0.0) -> dict[str, Timing]:
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
        settle_s: seconds to wait before each run, so that the threads of the run before
            (another process's: OpenMP workers keep spinning on the cores for a while after
            their work) are idle when the next one starts.
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
            if settle_s:
                time.sleep(settle_s)
            try:
                seconds = calls[name]() if timed else time_call(calls[name])
            except Dropped:
                active.remove(name)
                continue
            timings[name].times.append(seconds)
            if seconds > once_s:
                active.remove(name)
    return timings
