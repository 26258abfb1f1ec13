"""Constants that every k-means backend must share to return the same result."""

import numpy as np

# Rows per GEMM tile in the Numba kernels, and the alignment of the row blocks of both compiled
# backends: a 256 x k float tile stays in L2 cache for k up to a few hundred.
CHUNK = 256
# Row blocks in the Numba and Cython kernels. Each block owns its accumulators, so memory grows
# with MAX_BLOCKS x k x d; the count depends on n only, never on the thread count.
MAX_BLOCKS = 16

# Candidate potentials (k-means++) and run inertias (n_init) are sums over all samples, which the
# backends add up in different orders. Values within this relative distance count as tied, and a
# tie goes to the first candidate or run, so that rounding does not change the choice.
TIE_RTOL = 1e-9


def row_blocks(n_samples):
    """Return block boundaries: at most MAX_BLOCKS blocks, each a whole number of CHUNK rows."""
    n_chunks = -(-n_samples // CHUNK)
    n_blocks = max(1, min(MAX_BLOCKS, n_chunks))
    chunks_per_block = -(-n_chunks // n_blocks)
    bounds = np.arange(n_blocks + 1, dtype=np.intp) * chunks_per_block * CHUNK
    return np.minimum(bounds, n_samples)


def first_within_tolerance(values):
    """Return the index of the first value within TIE_RTOL of the minimum of `values` (all >= 0)."""
    threshold = min(values) * (1 + TIE_RTOL)
    return next(i for i, value in enumerate(values) if value <= threshold)
