"""metrics/timing.py: the benchmarks' timing arithmetic, with a fake clock (no real durations)."""

from __future__ import annotations

import pytest

from metrics.timing import Timing, interleaved_timings, repeat_timing, timed


class FakeClock:
    """A clock that reads the given times in turn and records what ran between its reads."""

    def __init__(self, *times: float):
        self.times = list(times)
        self.log: list[str] = []

    def __call__(self) -> float:
        self.log.append('clock')
        return self.times.pop(0)

    def run(self, name: str, result=None):
        def fn():
            self.log.append(name)
            return result
        return fn


def test_timed_returns_the_result_and_the_clock_difference():
    clock = FakeClock(10.0, 12.5)
    assert timed(clock.run('run', result=[1, 2]), clock=clock) == ([1, 2], 2.5)
    assert clock.log == ['clock', 'run', 'clock']


def test_repeat_timing_median_min_max_of_an_odd_count():
    clock = FakeClock(0.0, 3.0, 10.0, 11.0, 20.0, 22.0)      # runs of 3, 1, 2 s
    timing = repeat_timing(clock.run('run'), 3, clock=clock)
    assert timing.seconds == (3.0, 1.0, 2.0)
    assert (timing.median, timing.min, timing.max, timing.repeats) == (2.0, 1.0, 3.0, 3)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert Timing((4.0, 1.0, 2.0, 8.0)).median == 3.0


def test_setup_runs_before_each_call_outside_the_timed_span():
    clock = FakeClock(0.0, 1.0, 5.0, 7.0)
    timing = repeat_timing(clock.run('run'), 2, setup=clock.run('setup'), clock=clock)
    assert clock.log == ['setup', 'clock', 'run', 'clock'] * 2
    assert timing.seconds == (1.0, 2.0)


def test_summary_ms_is_the_widget_benchmarks_row():
    assert Timing((0.25, 0.5, 0.125)).summary_ms() == {'median_ms': 250.0, 'min_ms': 125.0, 'max_ms': 500.0,
                                                       'repeats': 3}


def test_interleaved_timings_take_turns_and_alternate_on_request():
    clock = FakeClock(*range(16))
    timings = interleaved_timings([clock.run('a'), clock.run('b')], 2, clock=clock)
    assert [c for c in clock.log if c != 'clock'] == ['a', 'b', 'a', 'b']
    assert [t.repeats for t in timings] == [2, 2]

    clock = FakeClock(0.0, 1.0, 10.0, 12.0, 20.0, 24.0, 30.0, 38.0)
    a, b = interleaved_timings([clock.run('a'), clock.run('b')], 2, alternate=True, clock=clock)
    assert [c for c in clock.log if c != 'clock'] == ['a', 'b', 'b', 'a']
    assert a.seconds == (1.0, 8.0) and b.seconds == (2.0, 4.0)


@pytest.mark.parametrize('call, message', [
    (lambda: repeat_timing(lambda: None, 0), 'repeats: expected a positive whole number, got 0'),
    (lambda: interleaved_timings([lambda: None], -1), 'repeats: expected a positive whole number, got -1'),
    (lambda: interleaved_timings([], 2), 'runs: expected at least one function to time, got none'),
    (lambda: Timing(()), 'seconds: expected at least one timed call, got none'),
])
def test_bad_input_is_refused_by_name(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_nothing_runs_when_repeats_is_refused():
    clock = FakeClock()
    with pytest.raises(ValueError):
        repeat_timing(clock.run('run'), 0, setup=clock.run('setup'), clock=clock)
    assert clock.log == []
