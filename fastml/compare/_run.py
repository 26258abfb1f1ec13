"""Timing every backend and peer of a case on every size, best of repeats.

Time per call is the minimum over samples, because other processes only ever add time. A
sample times as many consecutive calls as last at least ``MIN_SAMPLE_TIME`` seconds, so that
calls of microseconds are not lost in the clock's resolution. The first call of every backend
compiles (Numba) or fills caches and is not counted, except on the naive backend: pure Python
has nothing to compile, and its calls last up to seconds.

Sizes run in the outer loop, so the input of a size is built once for all backends.

Peers listed in a case's ``isolated_peers`` run in a child process, each with its own. faiss-cpu
and scikit-learn load one copy of the same vendored libgomp, and scikit-learn's brute-force kNN
ran on one thread of two once faiss had run in the process (faiss-cpu 1.15.1, scikit-learn
1.9.1). rustbpe and tokenizers size their Rayon thread pools only once per process.
"""

import concurrent.futures
import contextlib
import math
import multiprocessing
import time
from dataclasses import dataclass

from fastml import backends as registry
from fastml._threads import num_threads
from fastml.compare._cases import CASES, SkipMeasurement
from fastml.exceptions import BackendUnavailableError

MIN_SAMPLE_TIME = 0.01
DEFAULT_REPEAT = 5
# Seconds of timed calls per measurement after which no new sample starts.
DEFAULT_MAX_TIME = 2.0


@dataclass(frozen=True)
class Measurement:
    """The best time per call of one backend or peer at one size, or why it was skipped."""

    case: str
    backend: str
    size: int
    seconds: float = math.nan
    skipped: str = ""


def best_time(func, *, repeat=DEFAULT_REPEAT, max_time=DEFAULT_MAX_TIME, first_call_counts=False):
    """Return the shortest time per call of `func`, in seconds, over at most `repeat` samples.

    The first call is a warm-up and is timed to size the samples; it counts as a sample only
    when `first_call_counts`. Sampling stops early once `max_time` seconds have been spent.
    """
    start = time.perf_counter()
    func()
    first = time.perf_counter() - start
    samples = [first] if first_call_counts else []
    calls = max(1, math.ceil(MIN_SAMPLE_TIME / max(first, 1e-9)))
    spent = first

    while len(samples) < repeat and (not samples or spent < max_time):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        elapsed = time.perf_counter() - start
        samples.append(elapsed / calls)
        spent += elapsed
    return min(samples)


def plan(case, names):
    """Split `names` into the ones measured in this process and the isolated peers, in order."""
    local = [name for name in names if name not in case.isolated_peers]
    isolated = [name for name in names if name in case.isolated_peers]
    return local, isolated


def unavailable_reason(case, name):
    """Return why backend or peer `name` cannot run here, or "" when it can."""
    try:
        if name in case.peers:
            case.check_peer(name)
        else:
            registry.load(case.primitive, name)
    except (SkipMeasurement, BackendUnavailableError) as exc:
        return str(exc)
    return ""


def measure(case, name, size, *, threads=None, repeat=DEFAULT_REPEAT, max_time=DEFAULT_MAX_TIME):
    """Build and time backend or peer `name` of `case` at `size`; return a Measurement."""
    if name == "naive" and size > case.naive_cap:
        return Measurement(
            case.name, name, size, skipped=f"naive runs up to {case.size_name}={case.naive_cap:,}"
        )
    reason = unavailable_reason(case, name)
    if reason:
        return Measurement(case.name, name, size, skipped=reason)

    with fastml_threads(threads):
        try:
            run = case.build(name, size)
        except SkipMeasurement as exc:
            return Measurement(case.name, name, size, skipped=str(exc))

        # The limits cover the pools that the build loaded, a peer's among them.
        with pool_limits(threads):
            seconds = best_time(
                run, repeat=repeat, max_time=max_time, first_call_counts=name == "naive"
            )
    return Measurement(case.name, name, size, seconds)


def fastml_threads(threads):
    """Return a context that sets fastml's thread count, or changes nothing for None.

    The torch and faiss builders copy the count from ``fastml.get_num_threads()``.
    """
    return contextlib.nullcontext() if threads is None else num_threads(threads)


def pool_limits(threads):
    """Return a context that limits every loaded BLAS and OpenMP pool, or nothing for None."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def measure_all(case, names, sizes, *, threads=None, repeat=DEFAULT_REPEAT,
                max_time=DEFAULT_MAX_TIME, progress=None):
    """Measure every name of `names` at every size; return the Measurements in table order.

    `progress` is called with the Measurement just taken (for a progress bar).
    """
    local, isolated = plan(case, names)
    options = dict(threads=threads, repeat=repeat, max_time=max_time)
    results = []
    for size in sizes:
        for name in local:
            results.append(measure(case, name, size, **options))
            _report(progress, results[-1])
    for name in isolated:
        # A peer that is not installed is reported without starting a process.
        reason = unavailable_reason(case, name)
        if reason:
            child_results = [Measurement(case.name, name, size, skipped=reason) for size in sizes]
        else:
            child_results = measure_in_child(case.name, name, sizes, **options)
        for result in child_results:
            results.append(result)
            _report(progress, result)

    order = {name: index for index, name in enumerate(names)}
    return sorted(results, key=lambda m: (m.size, order[m.backend]))


def _report(progress, measurement):
    if progress is not None:
        progress(measurement)


def measure_in_child(case_name, name, sizes, **options):
    """Run ``measure`` for every size in a fresh Python process; return its Measurements."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_measure_sizes, case_name, name, tuple(sizes), options).result()


def _measure_sizes(case_name, name, sizes, options):
    case = CASES[case_name]
    return [measure(case, name, size, **options) for size in sizes]
