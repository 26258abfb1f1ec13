"""Scaled dot-product attention in pure Python, one query row at a time: the oracle.

For each (batch, head, query) the row scores q.k * scale (+ mask) over the visible keys are
computed, the row maximum is subtracted before ``exp`` so that no score can overflow, and the
normalized weights average the value rows. Everything is a Python float (float64), also for
float32 input, whose output is rounded to float32 at the end.

Cost: O(B Hq L S (E + Ev)) multiply-adds in the interpreter (about a microsecond each) and O(S)
extra memory per row, so it is meant for small inputs.
"""

import math

import numpy as np

NEG_INF = float("-inf")


def attend(q, k, v, kv_batch, mask, kv_lengths, is_causal, scale, n_threads):
    """Return the attention output (B, Hq, L, Ev); see ``fastml.attention._api`` for the inputs."""
    n_batch, n_heads, n_queries, _ = q.shape
    group = n_heads // k.shape[1]
    queries, keys, values = q.tolist(), k.tolist(), v.tolist()
    mask_rows = mask.tolist() if mask is not None else None

    out = []
    for b in range(n_batch):
        kb = int(kv_batch[b])
        heads = []
        for h in range(n_heads):
            # Grouped-query attention: query heads h = kvh * group ... kvh * group + group - 1
            # share key/value head kvh.
            head_keys, head_values = keys[kb][h // group], values[kb][h // group]
            rows = []
            for i in range(n_queries):
                n_visible = visible_keys(i, n_queries, int(kv_lengths[b]), is_causal)
                row_mask = _mask_row(mask_rows, b, h, i)
                scores = _scores(queries[b][h][i], head_keys, n_visible, scale, row_mask)
                rows.append(_weighted_average(scores, head_values, len(head_values[0])))
            heads.append(rows)
        out.append(heads)
    return np.array(out, dtype=q.dtype).reshape(q.shape[:3] + (v.shape[3],))


def visible_keys(i, n_queries, kv_length, is_causal):
    """Return how many keys (the first ones) query `i` may attend to.

    Causal attention aligns the last query with the last valid key (bottom-right), so query i
    attends to keys 0 .. kv_length - n_queries + i; queries before the first key attend to none.
    """
    if not is_causal:
        return kv_length
    return min(kv_length, max(0, kv_length - n_queries + i + 1))


def _mask_row(mask_rows, b, h, i):
    """Return the additive mask row of (b, h, i); the mask has size 1 along broadcast axes."""
    if mask_rows is None:
        return None
    by_batch = mask_rows[b if len(mask_rows) > 1 else 0]
    by_head = by_batch[h if len(by_batch) > 1 else 0]
    return by_head[i if len(by_head) > 1 else 0]


def _scores(query, keys, n_visible, scale, row_mask):
    scores = []
    for j in range(n_visible):
        score = scale * sum(a * b for a, b in zip(query, keys[j]))
        if row_mask is not None:
            # -inf excludes the key even if its score overflowed to +inf (inf - inf is NaN).
            score = NEG_INF if row_mask[j] == NEG_INF else score + row_mask[j]
        scores.append(score)
    return scores


def _weighted_average(scores, values, value_dim):
    """Return sum_j softmax(scores)_j values[j]; a row without a finite score gives zeros."""
    top = max(scores, default=NEG_INF)
    if top == NEG_INF:
        return [0.0] * value_dim

    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    row = [0.0] * value_dim
    for weight, value in zip(weights, values):
        for e in range(value_dim):
            row[e] += weight * value[e]
    return [x / total for x in row]
