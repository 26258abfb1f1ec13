"""The table and the log-log plot of a comparison.

The table has one row per size and backend or peer. A row gives the best time per call, the
speedup over the naive backend at the same size (naive time / time) and the ratio to the best
peer at the same size (time / the shortest peer time). A ratio below 1 is faster than every peer. Below it, one
line gives each backend's fitted exponent: the least-squares slope of log(time) over
log(size), which is near k for a cost that grows like size^k once fixed costs stop mattering.
"""

import math
import os

import numpy as np


def loglog_slope(sizes, times):
    """Return the least-squares slope of log(time) over log(size), or NaN below two points."""
    if len(sizes) < 2:
        return math.nan
    slope, _ = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope)


def exponents(measurements):
    """Return {backend: fitted exponent} over the sizes where each backend ran."""
    points = {}
    for m in measurements:
        if not m.skipped:
            points.setdefault(m.backend, []).append((m.size, m.seconds))
    return {name: loglog_slope(*zip(*pairs)) for name, pairs in points.items()}


def format_seconds(seconds):
    """Format a duration with 3 significant digits in s, ms or µs."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table_rows(case, measurements):
    """Return the table's rows as lists of strings, header first."""
    header = [case.size_name, "backend", "time", "speedup vs naive", "time / best peer", "note"]
    rows = [header]
    for size in sorted({m.size for m in measurements}):
        at_size = [m for m in measurements if m.size == size]
        naive = _time_of(at_size, "naive")
        peer_times = [m.seconds for m in at_size if m.backend in case.peers and not m.skipped]
        best_peer = min(peer_times, default=math.nan)
        for m in at_size:
            rows.append([f"{size:,}", m.backend, *_cells(m, naive, best_peer)])
    return rows


def _time_of(measurements, backend):
    for m in measurements:
        if m.backend == backend and not m.skipped:
            return m.seconds
    return math.nan


def _cells(m, naive, best_peer):
    if m.skipped:
        return ["-", "-", "-", f"skipped: {m.skipped}"]
    speedup = "-" if math.isnan(naive) else format_ratio(naive / m.seconds) + "x"
    ratio = "-" if math.isnan(best_peer) else format_ratio(m.seconds / best_peer)
    return [format_seconds(m.seconds), speedup, ratio, ""]


def format_ratio(value):
    """Format a ratio with 3 significant digits, or as a whole number from 1000 up."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def format_table(case, measurements, threads):
    """Return the comparison of `case` as text: a title, the aligned table and the exponents."""
    rows = table_rows(case, measurements)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [f"{case.name}: {case.description}; {_threads_text(threads)}", ""]
    for row in rows:
        cells = [cell.rjust(width) if i != 1 else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())

    fitted = exponents(measurements)
    if any(not math.isnan(value) for value in fitted.values()):
        parts = [f"{name} {value:.2f}" for name, value in fitted.items() if not math.isnan(value)]
        lines += ["", f"fitted exponent of {case.size_name}: " + ", ".join(parts)]
    return "\n".join(lines)


def _threads_text(threads):
    if threads is None:
        from fastml._threads import get_num_threads

        return f"{get_num_threads()} threads (all CPUs)"
    return f"{threads} thread" + ("s" if threads > 1 else "")


# Plot file formats, chosen by the file's extension; matplotlib writes each without extra packages.
PLOT_FORMATS = ("png", "svg", "pdf")


def plot(case, measurements, path, threads):
    """Draw time over size on log-log axes, one line per backend or peer, into `path`.

    The format follows the extension of `path`: one of PLOT_FORMATS.
    """
    file_format = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    make_figure(case, measurements, threads).savefig(path, format=file_format, dpi=110)


def make_figure(case, measurements, threads):
    """Return a matplotlib Figure of time over size, with each fitted exponent in the legend.

    The Figure has its own Agg canvas, so no pyplot state or display is involved.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib; install it with `pip install matplotlib`") from None

    figure = Figure(figsize=(8.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, exponent in exponents(measurements).items():
        points = [(m.size, m.seconds) for m in measurements if m.backend == name and not m.skipped]
        sizes, times = zip(*points)
        label = name if math.isnan(exponent) else f"{name} (exponent {exponent:.2f})"
        # Peers are dashed, so fastml's own backends stand out.
        style = "--" if name in case.peers else "-"
        axes.plot(sizes, times, style, marker="o", label=label)

    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(case.size_name)
    axes.set_ylabel("best time per call (s)")
    axes.set_title(f"{case.name}: {case.description}\n{_threads_text(threads)}", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    # Outside the axes, so the legend never hides a line.
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure
