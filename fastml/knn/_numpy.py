"""k-nearest neighbours vectorized with NumPy.

Euclidean, sqeuclidean and cosine: for a block of ``QUERY_BLOCK`` queries and a tile of
``TRAIN_TILE`` training rows, one matrix product gives the approximate scores of the tile
(``||y||^2 / 2 - x.y``, see ``fastml.knn._common``), and ``argpartition`` merges them into the
block's best ``k + EXTRA_CANDIDATES`` candidates. The candidates are recomputed with the
reference formulas of the naive backend, feature by feature in the same order, so the distances
are bitwise those of the naive backend. A query whose candidates the bound cannot certify is
scanned exactly. Manhattan distances have no matrix-product form: they are summed feature by
feature over the whole tile, in float64, and merged with a stable sort.

Cost: O(n_query n_train d) flops in BLAS (on ``n_threads`` threads), O(n_query n_train) for the
selection, and O(n_query m d) to recompute m candidates per query. Manhattan:
O(n_query n_train d) elementwise operations plus O(n_query n_train log) for the sorts. Extra
memory: O(QUERY_BLOCK (TRAIN_TILE + m)), never n_query x n_train. The selection, one
``argpartition`` pass over every score in the interpreter's memory, is what keeps this backend
several times slower than the compiled ones.
"""

import numpy as np

from fastml._threads import blas_threads
from fastml.knn._common import n_candidates, row_norms, score_plan

QUERY_BLOCK = 256
TRAIN_TILE = 4096


def kneighbors(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices)`` of the k nearest training rows of every query row."""
    distances, indices, _ = search(X_train, X_query, k, metric, n_threads)
    return distances, indices


def search(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices, n_full_scans)``; the last counts uncertified queries."""
    with blas_threads(n_threads):
        if metric == "manhattan":
            return (*_manhattan(X_train, X_query, k), 0)
        return _search_with_products(X_train, X_query, k, metric)


def class_scores(neighbor_codes, weights, n_classes):
    """Return the summed weight of each class among the neighbours, shape (n_query, n_classes).

    The weights of a row are added in neighbour order (nearest first), as the naive backend does.
    """
    n_query, k = neighbor_codes.shape
    scores = np.zeros((n_query, n_classes))
    rows = np.arange(n_query)
    for j in range(k):
        # One neighbour per row at a time, so no (row, class) pair repeats within the update.
        scores[rows, neighbor_codes[:, j]] += weights[:, j]
    return scores


def weighted_means(neighbor_targets, weights):
    """Return the weighted mean of the neighbours' targets, shape (n_query, n_outputs).

    `neighbor_targets` has shape (n_query, k, n_outputs); sums run in neighbour order.
    """
    n_query, k, n_outputs = neighbor_targets.shape
    sums = np.zeros((n_query, n_outputs))
    total_weight = np.zeros(n_query)
    for j in range(k):
        total_weight += weights[:, j]
        sums += weights[:, j, None] * neighbor_targets[:, j, :]
    return sums / total_weight[:, None]


def _search_with_products(X_train, X_query, k, metric):
    train_norms = row_norms(X_train)
    query_norms = row_norms(X_query)
    plan = score_plan(X_train, X_query, metric, train_norms, query_norms)
    n_train = X_train.shape[0]
    n_cand = n_candidates(k, n_train)
    distances = np.empty((X_query.shape[0], k), dtype=X_train.dtype)
    indices = np.empty((X_query.shape[0], k), dtype=np.intp)
    n_full_scans = 0

    for start in range(0, X_query.shape[0], QUERY_BLOCK):
        rows = slice(start, start + QUERY_BLOCK)
        scores, candidates = _candidates(plan.queries[rows], plan.train, plan.half_norms, n_cand)

        # Exact distances of the candidates, sorted by (distance, index).
        exact = _exact_distances(
            plan.query_points[rows], plan.train_points, candidates, metric,
            query_norms[rows], train_norms, plan.round_to_single,
        )
        order = np.lexsort((candidates, exact), axis=1)
        exact = np.take_along_axis(exact, order, axis=1)
        candidates = np.take_along_axis(candidates, order, axis=1)
        distances[rows] = exact[:, :k]
        indices[rows] = candidates[:, :k]

        # Rows outside the candidates scored at least the largest candidate score.
        bound = _lower_bound(plan, rows, scores.max(axis=1))
        certified = bound > exact[:, k - 1] if n_cand < n_train else np.ones(bound.shape, bool)
        for i in np.flatnonzero(~certified):
            query = start + i
            distances[query], indices[query] = _full_scan(plan, query, k, metric, query_norms, train_norms)
            n_full_scans += 1
    return distances, indices, n_full_scans


def _candidates(queries, train, half_norms, n_cand):
    """Return the n_cand smallest approximate scores of each query and their training indices."""
    best_scores = np.empty((queries.shape[0], 0), dtype=queries.dtype)
    best_indices = np.empty((queries.shape[0], 0), dtype=np.intp)
    for start in range(0, train.shape[0], TRAIN_TILE):
        stop = min(start + TRAIN_TILE, train.shape[0])
        # (block, tile) scores ||y||^2 / 2 - x.y
        tile_scores = half_norms[start:stop] - queries @ train[start:stop].T
        tile_indices = np.broadcast_to(np.arange(start, stop), tile_scores.shape)
        scores = np.concatenate([best_scores, tile_scores], axis=1)
        indices = np.concatenate([best_indices, tile_indices], axis=1)
        if scores.shape[1] > n_cand:
            keep = np.argpartition(scores, n_cand - 1, axis=1)[:, :n_cand]
            scores = np.take_along_axis(scores, keep, axis=1)
            indices = np.take_along_axis(indices, keep, axis=1)
        best_scores, best_indices = scores, indices
    return best_scores, best_indices


def _exact_distances(query_points, train_points, candidates, metric, query_norms, train_norms, single):
    """Reference distances (float64) from each query row to its candidate training rows.

    `candidates` has shape (n_rows, m). Features are added one at a time, in order, so every
    entry is computed exactly as the naive backend computes it.
    """
    # (n_rows, m): a single row of candidates is shared by every query row.
    total = np.zeros((query_points.shape[0], candidates.shape[1]), dtype=np.float64)
    for f in range(query_points.shape[1]):
        x = query_points[:, f, None].astype(np.float64)
        y = train_points[candidates, f].astype(np.float64)
        if metric == "manhattan":
            total += np.abs(x - y)
        elif metric == "cosine":
            total += x * y
        else:
            diff = x - y
            total += diff * diff

    if metric == "euclidean":
        total = np.sqrt(total)
    elif metric == "cosine":
        total = _cosine_from_dots(total, query_norms[:, None], train_norms[candidates])
    return total.astype(np.float32).astype(np.float64) if single else total


def _cosine_from_dots(dots, query_norms, train_norms):
    norms = query_norms * train_norms
    zero = (query_norms == 0) | (train_norms == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = np.minimum(2.0, np.maximum(0.0, 1.0 - dots / norms))
    return np.where(zero, 1.0, distances)


def _lower_bound(plan, rows, thresholds):
    """Lower bound on the exact distance of any training row that scored at least `thresholds`."""
    bound = (plan.base[rows] + plan.slope * thresholds.astype(np.float64) - plan.margin[rows]) * plan.shrink
    if plan.sqrt_bound:
        bound = np.sqrt(np.maximum(bound, 0.0))
    return bound.astype(np.float32).astype(np.float64) if plan.round_to_single else bound


def _full_scan(plan, query, k, metric, query_norms, train_norms):
    """Exact k nearest neighbours of one query, from its distance to every training row."""
    every_row = np.arange(plan.train_points.shape[0])[None, :]
    exact = _exact_distances(
        plan.query_points[query : query + 1], plan.train_points, every_row, metric,
        query_norms[query : query + 1], train_norms, plan.round_to_single,
    )[0]
    # A stable sort keeps equal distances in ascending index.
    nearest = np.argsort(exact, kind="stable")[:k]
    return exact[nearest], nearest


def _manhattan(X_train, X_query, k):
    distances = np.empty((X_query.shape[0], k), dtype=X_train.dtype)
    indices = np.empty((X_query.shape[0], k), dtype=np.intp)
    for start in range(0, X_query.shape[0], QUERY_BLOCK):
        rows = slice(start, start + QUERY_BLOCK)
        distances[rows], indices[rows] = _manhattan_block(X_train, X_query[rows], k)
    return distances, indices


def _manhattan_block(X_train, queries, k):
    """k nearest training rows of a block of queries, exact, sorted by (distance, index)."""
    # Kept sorted by (distance, index), all indices below those of the next tile.
    best_values = np.empty((queries.shape[0], 0))
    best_indices = np.empty((queries.shape[0], 0), dtype=np.intp)
    for start in range(0, X_train.shape[0], TRAIN_TILE):
        stop = min(start + TRAIN_TILE, X_train.shape[0])
        tile = np.arange(start, stop)[None, :]
        values = _exact_distances(queries, X_train, tile, "manhattan", None, None, X_train.dtype == np.float32)
        values = np.concatenate([best_values, values], axis=1)
        tile_indices = np.broadcast_to(tile, (queries.shape[0], stop - start))
        indices = np.concatenate([best_indices, tile_indices], axis=1)

        # Columns are in ascending index among equal values, so a stable sort keeps the tie rule.
        order = np.argsort(values, axis=1, kind="stable")[:, :k]
        best_values = np.take_along_axis(values, order, axis=1)
        best_indices = np.take_along_axis(indices, order, axis=1)
    return best_values, best_indices
