"""k-nearest neighbours compiled with Numba.

Queries are split into blocks of up to 256 rows (``query_block``) that run in parallel under
``prange``. A block walks the training rows in tiles of ``TRAIN_TILE``, and one single-threaded
BLAS product (``np.dot`` into the block's own buffer) gives the dot products of a tile. Each query
keeps a bounded max-heap of its best ``k + EXTRA_CANDIDATES`` approximate scores
(``||y||^2 / 2 - x.y``, or ``-x^.y^`` for cosine; see ``fastml.knn._common``). Most scores do not
beat a query's heap top. So the scan first counts the ones that do, GROUP scores at a time in a
loop that LLVM vectorizes, and only a group with a hit reaches the scalar loop that updates the
heap.

After the last tile each candidate is recomputed with the reference formula of the naive backend
(float64, features in order, no fused multiply-add), the candidates are heap-sorted by
(distance, index), and the bound of ``fastml.knn._common`` certifies that no other row can enter
the top k. An uncertified query is scanned exactly. The result therefore equals the naive
backend's bit for bit, whatever the BLAS rounding or the thread count.

Manhattan distances have no product form. A tile is transposed to feature-major float64 and each
query adds ``|x_f - y_f|`` feature by feature across the tile, a loop LLVM vectorizes.

Cost: O(n_query n_train d) flops in BLAS, O(n_query n_train) vectorized comparisons and about
m ln(n_train / m) heap updates per query, with m = k + EXTRA_CANDIDATES. Memory beyond the
output: O(block (TRAIN_TILE + m)) for the products and heaps of each block in flight, never
n_query x n_train. Manhattan: O(n_query n_train d) float64 operations and
O(d tile) memory per block in flight.
"""

import numpy as np
from numba import njit, prange

from fastml._threads import blas_threads, numba_threads
from fastml.knn._common import (
    COSINE,
    EUCLIDEAN,
    MANHATTAN,
    METRIC_CODES,
    manhattan_tile,
    n_candidates,
    query_block,
    row_norms,
    score_plan,
)
# The votes cost O(n_query k), nothing next to the search: compiling them would gain nothing.
from fastml.knn._numpy import class_scores, weighted_means  # noqa: F401

TRAIN_TILE = 1024
# Scores compared per vectorized count before the heap is touched.
GROUP = 64


def kneighbors(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices)`` of the k nearest training rows of every query row."""
    distances, indices, _ = search(X_train, X_query, k, metric, n_threads)
    return distances, indices


def search(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices, n_full_scans)``; the last counts uncertified queries."""
    # A read-only array is another type to Numba, and compiling every kernel again for it takes
    # far longer than copying it.
    X_train = np.require(X_train, requirements="W")
    X_query = np.require(X_query, requirements="W")
    n_query = X_query.shape[0]
    distances = np.empty((n_query, k), dtype=np.float64)
    indices = np.empty((n_query, k), dtype=np.intp)

    # The products run inside parallel blocks, so BLAS itself must stay single-threaded. Threads
    # beyond the number of query blocks would only be woken up to wait.
    block = query_block(n_query)
    n_threads = max(1, min(n_threads, -(-n_query // block)))
    with blas_threads(1), numba_threads(n_threads):
        if metric == "manhattan":
            tile = manhattan_tile(X_train.shape[1], TRAIN_TILE)
            _manhattan_blocks(X_train, X_query, block, tile, X_train.dtype == np.float32, distances, indices)
            n_full_scans = 0
        else:
            n_full_scans = _search_with_products(X_train, X_query, k, metric, block, distances, indices)
    return distances.astype(X_train.dtype), indices, n_full_scans


def _search_with_products(X_train, X_query, k, metric, block, distances, indices):
    train_norms = row_norms(X_train)
    query_norms = row_norms(X_query)
    plan = score_plan(X_train, X_query, metric, train_norms, query_norms)
    full_scan = np.zeros(X_query.shape[0], dtype=np.bool_)
    _product_blocks(
        plan.queries, plan.train, plan.half_norms, plan.query_points, plan.train_points,
        query_norms, train_norms, plan.base, plan.margin, plan.slope, plan.shrink,
        plan.sqrt_bound, plan.round_to_single, METRIC_CODES[metric],
        n_candidates(k, X_train.shape[0]), block, distances, indices, full_scan,
    )
    return int(full_scan.sum())


# --------------------------------------------------------------------------------------------
# Heaps of (value, index) pairs: the larger value is the larger pair, then the larger index.


@njit(nogil=True, cache=True, inline="always")
def _pair_less(value, index, other_value, other_index):
    return value < other_value or (value == other_value and index < other_index)


@njit(nogil=True, cache=True)
def _sift_down(values, indices, root, size):
    """Restore the max-heap order of values[:size] below `root`."""
    value = values[root]
    index = indices[root]
    while True:
        child = 2 * root + 1
        if child >= size:
            break
        if child + 1 < size and _pair_less(values[child], indices[child], values[child + 1], indices[child + 1]):
            child += 1
        if not _pair_less(value, index, values[child], indices[child]):
            break
        values[root] = values[child]
        indices[root] = indices[child]
        root = child
    values[root] = value
    indices[root] = index


@njit(nogil=True, cache=True)
def _heap_sort(values, indices, size):
    """Sort values[:size] and indices[:size] ascending by (value, index)."""
    for root in range(size // 2 - 1, -1, -1):
        _sift_down(values, indices, root, size)
    for end in range(size - 1, 0, -1):
        values[0], values[end] = values[end], values[0]
        indices[0], indices[end] = indices[end], indices[0]
        _sift_down(values, indices, 0, end)


@njit(nogil=True, cache=True)
def _push_row(scores, offsets, start, heap_values, heap_indices):
    """Offer the scores ``offsets[start + j] - scores[j]`` of rows start + j to a max-heap.

    Groups of GROUP scores are first counted against the heap top in a loop of fixed length,
    which LLVM vectorizes. Only a group with a score below the top goes through the scalar loop
    that updates the heap. In a microbenchmark, groups of 64 took 0.14 ns per score and groups
    of 16 took 0.4 ns, because the shorter loop was not vectorized.
    """
    n = scores.shape[0]
    full = n // GROUP * GROUP
    threshold = heap_values[0]
    for group in range(0, full, GROUP):
        group_scores = scores[group : group + GROUP]
        group_offsets = offsets[start + group : start + group + GROUP]
        below = 0
        for j in range(GROUP):
            below += (group_offsets[j] - group_scores[j]) < threshold
        if below > 0:
            _push_range(scores, offsets, start, group, group + GROUP, heap_values, heap_indices)
            threshold = heap_values[0]
    _push_range(scores, offsets, start, full, n, heap_values, heap_indices)


@njit(nogil=True, cache=True)
def _push_range(scores, offsets, start, first, stop, heap_values, heap_indices):
    """Offer the scores of rows start + first .. start + stop - 1, in ascending index.

    A new pair beats the top only if its score is strictly smaller: its index is larger than
    every index in the heap, so on an equal score the earlier row stays, as the tie rule wants.
    """
    size = heap_values.shape[0]
    for j in range(first, stop):
        score = offsets[start + j] - scores[j]
        if score < heap_values[0]:
            heap_values[0] = score
            heap_indices[0] = start + j
            _sift_down(heap_values, heap_indices, 0, size)


# --------------------------------------------------------------------------------------------
# Reference distances: float64, features in order, exactly as the naive backend computes them.


@njit(nogil=True, cache=True)
def _reference_distance(metric, x, y, x_norm, y_norm):
    total = 0.0
    if metric == MANHATTAN:
        for f in range(x.shape[0]):
            total += abs(np.float64(x[f]) - np.float64(y[f]))
        return total
    if metric == COSINE:
        if x_norm == 0.0 or y_norm == 0.0:
            return 1.0
        for f in range(x.shape[0]):
            total += np.float64(x[f]) * np.float64(y[f])
        return min(2.0, max(0.0, 1.0 - total / (x_norm * y_norm)))
    for f in range(x.shape[0]):
        diff = np.float64(x[f]) - np.float64(y[f])
        total += diff * diff
    if metric == EUCLIDEAN:
        return np.sqrt(total)
    return total


@njit(nogil=True, cache=True, inline="always")
def _rounded(value, single):
    """`value` rounded to float32 when `single`, as a float64."""
    if single:
        return np.float64(np.float32(value))
    return value


# --------------------------------------------------------------------------------------------
# Euclidean, sqeuclidean and cosine: products per tile, then certified candidates.


@njit(parallel=True, nogil=True, cache=True)
def _product_blocks(
    queries, train, half_norms, query_points, train_points, query_norms, train_norms,
    base, margin, slope, shrink, sqrt_bound, single, metric, n_cand, block, distances, indices,
    full_scan,
):
    n_query = queries.shape[0]
    n_train = train.shape[0]
    n_blocks = (n_query + block - 1) // block

    for b in prange(n_blocks):
        start = b * block
        stop = min(start + block, n_query)
        heap_values = np.full((stop - start, n_cand), np.inf, dtype=queries.dtype)
        heap_indices = np.full((stop - start, n_cand), n_train, dtype=np.intp)
        _scan_tiles(queries, train, half_norms, start, stop, heap_values, heap_indices)

        exact = np.empty(n_cand, dtype=np.float64)
        exact_indices = np.empty(n_cand, dtype=np.intp)
        for i in range(stop - start):
            # The lower bound on the exact distance of every row outside the candidates.
            bound = (base[start + i] + slope * heap_values[i, 0] - margin[start + i]) * shrink
            if sqrt_bound:
                bound = np.sqrt(max(bound, 0.0))
            full_scan[start + i] = not _finish_query(
                start + i, heap_values[i], heap_indices[i], bound, query_points, train_points,
                query_norms, train_norms, metric, single, exact, exact_indices, distances, indices,
            )


@njit(nogil=True, cache=True)
def _scan_tiles(queries, train, half_norms, start, stop, heap_values, heap_indices):
    """Fill each query's heap with its best approximate scores over all training tiles."""
    n_train = train.shape[0]
    n_rows = stop - start
    buffer = np.empty(n_rows * TRAIN_TILE, dtype=queries.dtype)
    for tile_start in range(0, n_train, TRAIN_TILE):
        tile_stop = min(tile_start + TRAIN_TILE, n_train)
        # (rows, tile) = queries[start:stop] @ train[tile_start:tile_stop].T
        dots = buffer[: n_rows * (tile_stop - tile_start)].reshape((n_rows, tile_stop - tile_start))
        np.dot(queries[start:stop], train[tile_start:tile_stop].T, dots)
        for i in range(n_rows):
            _push_row(dots[i], half_norms, tile_start, heap_values[i], heap_indices[i])


@njit(nogil=True, cache=True)
def _finish_query(
    query, heap_values, heap_indices, bound, query_points, train_points, query_norms,
    train_norms, metric, single, exact, exact_indices, distances, indices,
):
    """Recompute, sort and certify one query's candidates, and write its k nearest rows.

    `bound` is a lower bound on the exact distance of every row outside the candidates.
    Returns False if it does not certify them: the k nearest rows then come from an exact scan
    of every training row.
    """
    n_cand = heap_values.shape[0]
    k = distances.shape[1]
    x = query_points[query]
    for c in range(n_cand):
        j = heap_indices[c]
        value = _reference_distance(metric, x, train_points[j], query_norms[query], train_norms[j])
        exact[c] = _rounded(value, single)
        exact_indices[c] = j
    _heap_sort(exact, exact_indices, n_cand)

    certified = n_cand == train_points.shape[0] or _rounded(bound, single) > exact[k - 1]
    if not certified:
        _exact_scan(query, query_points, train_points, query_norms, train_norms, metric, single, exact, exact_indices, k)

    for c in range(k):
        distances[query, c] = exact[c]
        indices[query, c] = exact_indices[c]
    return certified


@njit(nogil=True, cache=True)
def _exact_scan(query, query_points, train_points, query_norms, train_norms, metric, single, values, indices, k):
    """Write the exact k nearest rows of `query`, sorted, into values[:k] and indices[:k]."""
    x = query_points[query]
    for j in range(train_points.shape[0]):
        value = _rounded(
            _reference_distance(metric, x, train_points[j], query_norms[query], train_norms[j]), single
        )
        if j < k:
            values[j] = value
            indices[j] = j
            if j == k - 1:
                for root in range(k // 2 - 1, -1, -1):
                    _sift_down(values, indices, root, k)
        elif value < values[0]:
            values[0] = value
            indices[0] = j
            _sift_down(values, indices, 0, k)
    _heap_sort(values, indices, k)


# --------------------------------------------------------------------------------------------
# Manhattan: exact float64 sums over feature-major tiles.


@njit(parallel=True, nogil=True, cache=True)
def _manhattan_blocks(X_train, X_query, block, tile, single, distances, indices):
    n_query, n_features = X_query.shape
    n_train = X_train.shape[0]
    k = distances.shape[1]
    n_blocks = (n_query + block - 1) // block

    for b in prange(n_blocks):
        start = b * block
        stop = min(start + block, n_query)
        transposed = np.empty((n_features, tile), dtype=np.float64)
        sums = np.empty(tile, dtype=np.float64)
        heap_values = np.full((stop - start, k), np.inf)
        heap_indices = np.full((stop - start, k), n_train, dtype=np.intp)

        for tile_start in range(0, n_train, tile):
            width = min(tile, n_train - tile_start)
            for r in range(width):
                for f in range(n_features):
                    transposed[f, r] = X_train[tile_start + r, f]
            for i in range(stop - start):
                _manhattan_row(X_query[start + i], transposed, width, sums, single)
                _push_exact(sums, width, tile_start, heap_values[i], heap_indices[i])

        for i in range(stop - start):
            _heap_sort(heap_values[i], heap_indices[i], k)
            for c in range(k):
                distances[start + i, c] = heap_values[i, c]
                indices[start + i, c] = heap_indices[i, c]


@njit(nogil=True, cache=True)
def _manhattan_row(x, transposed, width, sums, single):
    """sums[:width] = rounded sum over f of |x_f - y_f|, added in feature order for each y."""
    for r in range(width):
        sums[r] = 0.0
    for f in range(x.shape[0]):
        value = np.float64(x[f])
        row = transposed[f]
        for r in range(width):
            sums[r] += abs(value - row[r])
    if single:
        for r in range(width):
            sums[r] = np.float64(np.float32(sums[r]))


@njit(nogil=True, cache=True)
def _push_exact(values, width, start, heap_values, heap_indices):
    """Offer exact distances of rows start:start+width (ascending index) to a max-heap."""
    size = heap_values.shape[0]
    for r in range(width):
        if values[r] < heap_values[0]:
            heap_values[0] = values[r]
            heap_indices[0] = start + r
            _sift_down(heap_values, heap_indices, 0, size)
