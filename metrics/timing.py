"""How the benchmark scripts time code: one call, repeated calls, calls taken in turns.

What is timed: wall-clock time from `clock()` just before `run()` to `clock()` just after it returns (default
clock `time.perf_counter`, in seconds). `setup()` runs before each timed call and is not timed; warm-up calls are
the caller's (call `run()` once before timing). Nothing is dropped or averaged away: a `Timing` keeps every
call's seconds and summarises them (median, min, max).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar('T')
Clock = Callable[[], float]


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed call (in call order), at least one."""

    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        seconds = tuple(float(s) for s in self.seconds)
        if not seconds:
            raise ValueError('seconds: expected at least one timed call, got none')
        object.__setattr__(self, 'seconds', seconds)

    @property
    def repeats(self) -> int:
        return len(self.seconds)

    @property
    def median(self) -> float:
        """The median in seconds (of an even count: the mean of the middle two)."""
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    def summary_ms(self) -> dict:
        """{'median_ms', 'min_ms', 'max_ms', 'repeats'}: the widget benchmarks' JSON rows, in milliseconds."""
        return {'median_ms': 1000 * self.median, 'min_ms': 1000 * self.min, 'max_ms': 1000 * self.max,
                'repeats': self.repeats}


def timed(run: Callable[[], T], clock: Clock = time.perf_counter) -> tuple[T, float]:
    """(run()'s result, the seconds it took)."""
    start = clock()
    result = run()
    return result, clock() - start


def _check_repeats(repeats: int) -> None:
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f'repeats: expected a positive whole number, got {repeats!r}')


def repeat_timing(run: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None,
                  clock: Clock = time.perf_counter) -> Timing:
    """`repeats` timed calls of run(), each after an untimed setup() when given."""
    _check_repeats(repeats)
    seconds = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        seconds.append(timed(run, clock)[1])
    return Timing(tuple(seconds))


def interleaved_timings(runs: Sequence[Callable[[], object]], repeats: int, alternate: bool = False,
                        clock: Clock = time.perf_counter) -> list[Timing]:
    """One Timing per run, the runs taken in turns (A B, A B, ...) so that load drift hits all alike;
    `alternate`: every second round in reverse order (A B, B A, ...) so that none always goes first."""
    _check_repeats(repeats)
    if not runs:
        raise ValueError('runs: expected at least one function to time, got none')
    seconds: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    for r in range(repeats):
        for i in (order[::-1] if alternate and r % 2 else order):
            seconds[i].append(timed(runs[i], clock)[1])
    return [Timing(tuple(s)) for s in seconds]
