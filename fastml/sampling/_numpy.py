"""Sampling vectorized with NumPy over chunks of rows, without sorting the vocabulary.

- Top-k: ``np.partition`` (introselect, O(V)) finds each row's k-th largest logit; the tokens
  above it are kept, and the ties at it are filled in ascending index order.
- Top-p widens a partial selection only as far as needed: select the top m logits with
  ``np.partition``, sum their masses, multiply m by 4 for the rows whose sum falls short of the
  target, then sort only the selected tokens (``np.lexsort`` on logit, then index) and cut the
  nucleus from their running sum. The masses are integers (see _weights.py), so these sums are
  exact and the boundary is the one the other backends find.
- Weights use the shared exponential of _weights.py written as ufunc calls, not ``np.exp``,
  whose SIMD version rounds differently from the other backends.
- The draw is one integer ``cumsum`` per row and a count of the running masses below u * total.

Cost per row of V tokens: O(V) for each vectorized pass (about 40 passes for the weights); top-p
adds O(V) per widening step (log_4(n / 64) steps) and O(n log n) for the sort of the n selected
tokens it ends with (at most 4 times the nucleus, or 64). Extra memory: a few float64/int64
arrays of about CHUNK_SIZE entries. Single-threaded: the number of threads does not apply.
"""

import math

import numpy as np

from fastml.sampling._weights import (
    BUCKETS_PER_LOGIT,
    EXP_COEFFICIENTS,
    EXP_CUTOFF,
    LN2_HI,
    LN2_LO,
    LOG2E,
    N_BUCKETS,
    ROUNDER,
)

# Rows are processed in chunks of about this many logits, which bounds the temporary arrays.
CHUNK_SIZE = 1 << 16
# The weights are computed in blocks of this many logits (256 KiB per float64 array).
EXP_BLOCK = 1 << 15


def greedy(logits, n_threads):
    """Return the index of the largest logit of every row; np.argmax returns the first maximum."""
    return np.argmax(logits, axis=1).astype(np.int64)


def filter_mask(logits, temperature, top_k, top_p, min_p, min_keep, shift, n_threads):
    """Return a boolean array of the shape of `logits`: True for the tokens every filter keeps."""
    mask = np.empty(logits.shape, dtype=bool)
    for rows in _chunks(logits):
        mask[rows], _ = _kept_tokens(logits[rows], temperature, top_k, top_p, min_p, min_keep, shift)
    return mask


def sample(logits, temperature, top_k, top_p, min_p, min_keep, shift, uniforms, n_threads):
    """Return one token per row, drawn from the kept tokens with the uniform number of that row."""
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    for rows in _chunks(logits):
        kept, masses = _kept_tokens(logits[rows], temperature, top_k, top_p, min_p, min_keep, shift)
        tokens[rows] = _draw(np.where(kept, masses, 0), uniforms[rows])
    return tokens


def exp_weights(x):
    """Return exp(x) for x <= 0, operation for operation as ``_weights.exp_weight``."""
    out = np.empty(x.shape, dtype=np.float64)
    flat_x = x.reshape(-1)
    flat_out = out.reshape(-1)
    # About 30 ufunc passes per block: blocks that fit in L2 cache keep them off main memory.
    for start in range(0, flat_x.size, EXP_BLOCK):
        stop = start + EXP_BLOCK
        _exp_block(flat_x[start:stop], flat_out[start:stop])
    return out


def _exp_block(x, out):
    clamped = np.maximum(x, EXP_CUTOFF)
    k = clamped * LOG2E
    k += ROUNDER
    k -= ROUNDER
    r = k * LN2_HI
    np.subtract(clamped, r, out=r)
    r -= np.multiply(k, LN2_LO, out=clamped)

    np.multiply(r, EXP_COEFFICIENTS[0], out=out)
    out += EXP_COEFFICIENTS[1]
    for coefficient in EXP_COEFFICIENTS[2:]:
        out *= r
        out += coefficient

    # 2**k from its bits (biased exponent k + 1023, zero mantissa), exactly the POW2 table.
    bits = k.astype(np.int64)
    bits += 1023
    bits <<= 52
    out *= bits.view(np.float64)
    out[x < EXP_CUTOFF] = 0.0


def _chunks(logits):
    n_rows, n_tokens = logits.shape
    step = max(1, CHUNK_SIZE // n_tokens)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _kept_tokens(values, temperature, top_k, top_p, min_p, min_keep, shift):
    """Return the kept-token mask of a chunk of rows and the masses of all its tokens."""
    z = values.astype(np.float64)
    if temperature != 1.0:
        z /= temperature

    kept = np.ones(z.shape, dtype=bool)
    if top_k > 0 and max(top_k, min_keep) < z.shape[1]:
        kept = _first_in_order(z, max(top_k, min_keep), kept)

    weights = exp_weights(z - z.max(axis=1, keepdims=True))
    masses = (weights * math.ldexp(1.0, shift)).astype(np.int64)

    if top_p < 1.0:
        kept = _top_p(z, masses, kept, top_p, min_keep)
    if min_p > 0.0:
        kept = (kept & (weights >= min_p)) | _first_in_order(z, min_keep, kept)
    return kept, masses


def _first_in_order(z, k, allowed):
    """Return the mask of the first k allowed tokens of each row in token order (k > 0).

    np.partition finds the k-th largest allowed logit; the tokens above it are in, and the ties
    at it are filled in ascending index order. A row with fewer than k allowed tokens keeps them all.
    """
    n_tokens = z.shape[1]
    if k >= n_tokens:
        return allowed.copy()
    key = np.where(allowed, z, -np.inf)
    if k == 1:
        # np.argmax returns the first maximum: the first token in order (the common min_keep=1).
        rows = np.arange(z.shape[0])
        first = np.argmax(key, axis=1)
        # Where every allowed logit is -inf, the first -inf may not be allowed.
        missed = ~allowed[rows, first]
        first[missed] = np.argmax(allowed[missed], axis=1)
        mask = np.zeros_like(allowed)
        mask[rows, first] = allowed[rows, first]
        return mask
    kth = np.partition(key, n_tokens - k, axis=1)[:, n_tokens - k, np.newaxis]
    chosen = allowed & (key > kth)
    ties = allowed & (key == kth)
    room = k - chosen.sum(axis=1, keepdims=True)
    return chosen | (ties & (np.cumsum(ties, axis=1) <= room))


def _top_p(z, masses, kept, top_p, min_keep):
    """Return the mask of the top-p nucleus of the kept tokens of each row.

    Every token of the buckets before the boundary bucket is in; only the boundary bucket's
    tokens are sorted.
    """
    key = np.where(kept, z, -np.inf)
    kept_masses = np.where(kept, masses, 0)
    targets = np.ceil(top_p * kept_masses.sum(axis=1).astype(np.float64)).astype(np.int64)
    buckets = _buckets(key, key.max(axis=1, keepdims=True))
    boundary = _boundary_buckets(buckets, kept_masses, targets)

    inside = kept & (buckets < boundary)
    at_boundary = kept & (buckets == boundary)
    rest = targets - np.where(inside, kept_masses, 0).sum(axis=1)
    nucleus = inside | _nucleus_of_selection(z, masses, at_boundary, rest)

    # Both the nucleus and the first min_keep tokens are prefixes of the token order, so where
    # the nucleus is shorter, the min_keep first tokens contain it.
    keep = np.minimum(min_keep, kept.sum(axis=1))
    short = np.flatnonzero(nucleus.sum(axis=1) < keep)
    if short.size:
        nucleus[short] = _first_in_order(z[short], min_keep, kept[short])
    return nucleus


def _buckets(key, top):
    """Return each logit's gap below its row's `top` in 1/16 logit, the last bucket open-ended."""
    gaps = (top - key) * BUCKETS_PER_LOGIT
    # fmin sends inf (a -inf logit) and NaN (a row whose top is -inf) to the last bucket, as
    # the compiled backends do.
    np.fmin(gaps, N_BUCKETS - 1, out=gaps)
    return gaps.astype(np.intp)


def _boundary_buckets(buckets, masses, targets):
    """Return, as a column, the first bucket of each row where the running mass reaches the target.

    A float64 histogram gives a guess, because np.bincount takes no integer weights. Exact
    integer sums then move the guess until the mass before the bucket is below the target and
    the mass through it is not.
    """
    n_rows = buckets.shape[0]
    offsets = np.arange(n_rows)[:, np.newaxis] * N_BUCKETS
    histogram = np.bincount(
        (buckets + offsets).ravel(), weights=masses.ravel(), minlength=n_rows * N_BUCKETS
    ).reshape(n_rows, N_BUCKETS)
    reached = np.cumsum(histogram, axis=1) >= targets[:, np.newaxis]
    guess = np.where(reached.any(axis=1), reached.argmax(axis=1), N_BUCKETS - 1)

    while True:
        below = np.where(buckets < guess[:, np.newaxis], masses, 0).sum(axis=1)
        through = below + np.where(buckets == guess[:, np.newaxis], masses, 0).sum(axis=1)
        too_far = (below >= targets) & (guess > 0) & (targets > 0)
        too_near = (through < targets) & (guess < N_BUCKETS - 1)
        if not (too_far.any() or too_near.any()):
            return guess[:, np.newaxis]
        guess = guess - too_far + too_near


def _nucleus_of_selection(z, masses, selected, targets):
    """Return the shortest prefix, in token order, of each row's selected tokens whose mass
    reaches the row's target (all of them if none does), sorting only the selected tokens."""
    n_rows, n_tokens = z.shape
    counts = selected.sum(axis=1)
    width = max(int(counts.max()), 1)

    # The selected columns of each row in ascending order, padded with the index n_tokens,
    # whose logit -inf and mass 0 sort it last and add nothing.
    rows, columns = np.nonzero(selected)
    slots = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    indices = np.full((n_rows, width), n_tokens)
    indices[rows, slots] = columns
    padded_z = np.concatenate([z, np.full((n_rows, 1), -np.inf)], axis=1)
    padded_masses = np.concatenate([masses, np.zeros((n_rows, 1), dtype=masses.dtype)], axis=1)
    logits = np.take_along_axis(padded_z, indices, axis=1)

    order = np.lexsort((indices, -logits), axis=1)
    indices = np.take_along_axis(indices, order, axis=1)
    running = np.cumsum(np.take_along_axis(padded_masses, indices, axis=1), axis=1)

    # The nucleus ends at the first running mass that reaches the target.
    sizes = np.where(targets > 0, (running < targets[:, np.newaxis]).sum(axis=1) + 1, 0)
    sizes = np.minimum(sizes, counts)
    inside = np.arange(width) < sizes[:, np.newaxis]
    nucleus = np.zeros((n_rows, n_tokens + 1), dtype=bool)
    np.put_along_axis(nucleus, np.where(inside, indices, n_tokens), True, axis=1)
    return nucleus[:, :n_tokens]


def _draw(masses, uniforms):
    """Return, per row, the first index whose running mass exceeds u * total (as naive)."""
    running = np.cumsum(masses, axis=1)
    totals = running[:, -1]
    thresholds = np.floor(uniforms * totals.astype(np.float64)).astype(np.int64)
    thresholds = np.minimum(thresholds, totals - 1)
    return (running <= thresholds[:, np.newaxis]).sum(axis=1)
