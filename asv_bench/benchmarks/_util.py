"""Helpers shared by the benchmark modules of every primitive.

How asv runs a suite decides how the modules are written. With the "spawn" launch method fixed in
asv.conf.json (asv 0.6, asv_runner 0.3), every parameter combination of every benchmark method
runs in a fresh Python process, once per round. A ``time_`` method calls ``setup`` again before
each sample, while a ``peakmem_`` or ``track_`` method runs once after one ``setup``. It follows
that:

- inputs and warmed-up callables are memoized per process (``functools.cache``), so the
  repeated ``setup`` calls of a ``time_`` benchmark cost nothing after the first;
- a peer library is imported inside ``setup`` through ``import_peer``, so only the processes
  that measure it load it;
- a ``track_`` method that compares timings takes all of them in its own process
  (``best_time``), under the same load.
"""

import importlib
import math
import sys
import time

import numpy as np

# Peers that must never be measured in one process. The faiss-cpu and scikit-learn wheels vendor
# the same libgomp (one hashed file name, so the dynamic loader keeps a single copy), and faiss
# also loads an OpenMP build of OpenBLAS. After faiss had run, scikit-learn's brute-force kNN ran
# on one thread of two (faiss-cpu 1.15.1, scikit-learn 1.9.1). faiss itself kept both threads,
# whichever of the two was loaded first.
CONFLICTING_PEERS = {"faiss": ("sklearn",), "sklearn": ("faiss",)}

_peers_in_process = set()

def skip(reason):
    """Skip the current parameter combination; asv records NaN when setup raises this."""
    raise NotImplementedError(reason)


def import_peer(module):
    """Import a peer library's `module` for measurement; raise if a conflicting peer is measured here.

    Called from ``setup``. If two conflicting peers ever meet in one process (another asv launch
    method, a new benchmark that mixes them), the benchmark fails instead of measuring a peer
    that silently lost its threads. Only peers imported through this function count. fastml's
    estimators derive from scikit-learn's base classes, so scikit-learn and its libgomp are
    loaded wherever ``fastml.kmeans`` is, but only a process that measures scikit-learn runs
    scikit-learn's OpenMP code.
    """
    package = module.partition(".")[0]
    for other in CONFLICTING_PEERS.get(package, ()):
        if other in _peers_in_process:
            raise RuntimeError(
                f"cannot measure {package} in a process that measures {other}, because they share "
                "one OpenMP runtime and the timings would be wrong; benchmark them in separate "
                "processes"
            )
    _peers_in_process.add(package)
    return importlib.import_module(module)


def best_time(func, repeat):
    """Call `func` `repeat` times; return the shortest wall-clock time in seconds.

    The minimum is the estimate least disturbed by other processes, which only ever add time.
    """
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_best_times(first, second, rounds, repeat):
    """Return the best times of two callables timed in alternating rounds of `repeat` calls.

    A speed target compares the two. Alternating spreads a change of machine load or speed over
    both sides.
    """
    best_first = best_second = math.inf
    for _ in range(rounds):
        best_first = min(best_first, best_time(first, repeat))
        best_second = min(best_second, best_time(second, repeat))
    return best_first, best_second


def loglog_slope(sizes, times):
    """Return the least-squares slope of log(time) over log(size): the empirical exponent."""
    slope, _ = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope)


def reset_peak_memory():
    """Reset the process's peak resident set size to its current size; return False if unsupported.

    Linux (4.0 and later) resets the high-water mark that ``getrusage`` reports, and so asv's
    ``peakmem_`` result, when "5" is written to /proc/self/clear_refs. Called at the end of
    ``setup``, it keeps setup's temporaries (data generation, JIT compilation) out of the result;
    what setup left resident still counts.
    """
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True
