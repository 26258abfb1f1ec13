"""Compare fastml's backends with each other and with peer libraries on built-in data.

This is the library behind ``fastml compare``. ``run`` validates a request, then times every
backend and installed peer of a case at every size (``_run``) and returns the measurements.
``format_table`` and ``plot`` (``_report``) present them. The cases, one workload per
primitive, are in ``_cases``.
"""

from fastml.compare._cases import CASES, SkipMeasurement
from fastml.compare._report import exponents, format_table, make_figure, plot
from fastml.compare._run import DEFAULT_MAX_TIME, DEFAULT_REPEAT, Measurement, measure_all

__all__ = [
    "CASES",
    "Measurement",
    "SkipMeasurement",
    "check_backends",
    "check_sizes",
    "exponents",
    "format_table",
    "get_case",
    "make_figure",
    "plot",
    "run",
]


# Other names of cases: "bpe" alone is BPE training, the primitive's main workload.
ALIASES = {"bpe": "bpe-train"}


def get_case(name):
    """Return the case `name`; "_" and "-" are interchangeable ("kv_cache" is "kv-cache")."""
    key = str(name).replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in CASES:
        raise ValueError(f"unknown primitive {name!r}; expected one of: {', '.join(CASES)}")
    return CASES[key]


def check_sizes(case, sizes):
    """Return `sizes` sorted and without duplicates; raise ValueError for one out of range."""
    if len(sizes) == 0:
        raise ValueError(f"no sizes given for {case.name}; give at least one {case.size_name}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"sizes must be ints, got {size!r} of type {type(size).__name__}")
        if not case.min_size <= size <= case.max_size:
            raise ValueError(
                f"invalid size {size:,} for {case.name}: {case.size_name} must be between "
                f"{case.min_size:,} and {case.max_size:,}"
            )
    return tuple(sorted(set(sizes)))


def check_backends(case, names):
    """Return `names` in the case's order; raise ValueError for a name the case does not have."""
    accepted = case.backends()
    if len(names) == 0:
        raise ValueError(f"no backends given for {case.name}; expected any of: {', '.join(accepted)}")
    unknown = [name for name in names if name not in accepted]
    if unknown:
        raise ValueError(
            f"unknown backend {unknown[0]!r} for {case.name}; expected any of: {', '.join(accepted)}"
        )
    return tuple(name for name in accepted if name in names)


def run(name, sizes=None, backends=None, *, threads=None, repeat=DEFAULT_REPEAT,
        max_time=DEFAULT_MAX_TIME, progress=None):
    """Time the backends and peers of case `name` at `sizes`; return ``(case, measurements)``.

    `sizes` defaults to the case's ladder and `backends` to every fastml backend and peer of
    the case. A backend or peer that cannot run (not installed, not built, the naive backend
    above its size cap) gives a Measurement whose ``skipped`` contains the reason.
    """
    case = get_case(name)
    sizes = check_sizes(case, case.sizes if sizes is None else sizes)
    names = case.backends() if backends is None else check_backends(case, backends)
    measurements = measure_all(
        case, names, sizes, threads=threads, repeat=repeat, max_time=max_time, progress=progress
    )
    return case, measurements
