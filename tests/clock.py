"""A scripted clock for code that reports how long it took: `stepping_time(step)` stands in for a module's `time`, and
each perf_counter() call is `step` seconds after the last, so a duration measured by two calls is exactly `step`
(an assertion can then pin the reported value, units and rounding included, instead of accepting anything >= 0).
Everything else in it is the real time module."""
import itertools
import time
import types


def stepping_time(step: float) -> types.SimpleNamespace:
    ticks = itertools.count()
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.perf_counter = lambda: next(ticks) * step
    return clock
