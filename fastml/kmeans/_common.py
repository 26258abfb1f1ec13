"""Constants that every k-means backend must share to return the same result."""

# Candidate potentials (k-means++) and run inertias (n_init) are sums over all samples, which the
# backends add up in different orders. Values within this relative distance count as tied, and a
# tie goes to the first candidate or run, so that rounding does not change the choice.
TIE_RTOL = 1e-9


def first_within_tolerance(values):
    """Return the index of the first value within TIE_RTOL of the minimum of `values` (all >= 0)."""
    threshold = min(values) * (1 + TIE_RTOL)
    return next(i for i, value in enumerate(values) if value <= threshold)
