"""Sampling in pure Python: the obvious algorithm, the version to read first and the oracle.

Each row is sorted in full by the token order (higher logit first, the lower index first among
equal logits), and every filter takes a prefix of that sorted list. Weights and masses come from
``_weights.py``, so this backend computes exactly what the fast ones compute.

Cost per row of V tokens: O(V log V) for the sort plus O(V) interpreted work for the weights, the
filters and the draw: about 0.3 s for a row of 128,256 tokens (measured on a busy 2-core
machine). Extra memory: O(V) Python objects. Meant for small vocabularies and as the reference
in tests.
"""

import math

import numpy as np

from fastml.sampling._weights import exp_weight


def greedy(logits, n_threads):
    """Return the index of the largest logit of every row; the lowest index wins a tie."""
    return np.array([_argmax(row) for row in logits.tolist()], dtype=np.int64)


def filter_mask(logits, temperature, top_k, top_p, min_p, min_keep, shift, n_threads):
    """Return a boolean array of the shape of `logits`: True for the tokens every filter keeps."""
    mask = np.zeros(logits.shape, dtype=bool)
    for row, values in enumerate(logits.tolist()):
        kept, _ = _kept_tokens(values, temperature, top_k, top_p, min_p, min_keep, shift)
        mask[row, kept] = True
    return mask


def sample(logits, temperature, top_k, top_p, min_p, min_keep, shift, uniforms, n_threads):
    """Return one token per row, drawn from the kept tokens with the uniform number of that row."""
    tokens = []
    for values, u in zip(logits.tolist(), uniforms.tolist()):
        kept, masses = _kept_tokens(values, temperature, top_k, top_p, min_p, min_keep, shift)
        tokens.append(_draw(sorted(kept), masses, u))
    return np.array(tokens, dtype=np.int64)


def _argmax(values):
    best = 0
    for i in range(1, len(values)):
        # Strict >: an equal logit later in the row does not replace the first one.
        if values[i] > values[best]:
            best = i
    return best


def _kept_tokens(values, temperature, top_k, top_p, min_p, min_keep, shift):
    """Return the kept tokens of one row in token order, and the masses of all tokens."""
    z = [x / temperature for x in values]
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))

    # Weights relative to the most likely token, and the same in fixed point (see _weights.py).
    top = z[order[0]]
    weights = [exp_weight(v - top) for v in z]
    scale = math.ldexp(1.0, shift)
    masses = [int(w * scale) for w in weights]

    kept = order
    if top_k > 0:
        kept = kept[: max(top_k, min_keep)]
    if top_p < 1.0:
        kept = kept[: _nucleus_size(kept, masses, top_p, min_keep)]
    if min_p > 0.0:
        # Weights are probabilities divided by the top probability, so this is p >= min_p * p_max.
        kept = kept[:min_keep] + [i for i in kept[min_keep:] if weights[i] >= min_p]
    return kept, masses


def _nucleus_size(kept, masses, top_p, min_keep):
    """Return the length of the shortest prefix of `kept` whose mass reaches top_p of the total."""
    total = sum(masses[i] for i in kept)
    target = math.ceil(top_p * float(total))
    size, mass = 0, 0
    # The bound on size matters only if rounding put the target above the total.
    while mass < target and size < len(kept):
        mass += masses[kept[size]]
        size += 1
    return max(size, min(min_keep, len(kept)))


def _draw(kept, masses, u):
    """Return the first token of `kept` (in ascending index order) whose running mass exceeds u * total."""
    total = sum(masses[i] for i in kept)
    threshold = min(math.floor(u * float(total)), total - 1)
    running = 0
    for i in kept:
        running += masses[i]
        # A token of mass 0 never raises the running mass past the threshold, so it is never drawn.
        if running > threshold:
            return i
    raise AssertionError("unreachable: the threshold is below the total mass")
