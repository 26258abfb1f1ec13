"""Next-token sampling: validation, the uniform draws, and dispatch to a backend.

Every public function validates its input here, once. The backends receive C-contiguous
float32/float64 logits of shape (batch, vocab_size) with no NaN and no +inf and at least one
finite logit per row. They also receive normalized parameters: ``top_k=0`` disables top-k,
``top_p=1.0`` disables top-p and ``min_p=0.0`` disables min-p. The uniform numbers of the final draw are drawn here and
nowhere else.
"""

import numbers
from typing import NamedTuple

import numpy as np

from fastml import backends
from fastml._threads import get_num_threads
from fastml._validation import check_array, check_float, check_int
from fastml.sampling._weights import mass_shift


class _Settings(NamedTuple):
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    min_tokens_to_keep: int


def sample(
    logits,
    *,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    min_tokens_to_keep=1,
    rng=None,
    backend="auto",
):
    """Draw the next token from `logits` after temperature, top-k, top-p and min-p, in that order.

    Parameters
    ----------
    logits : array-like of shape (vocab_size,) or (batch, vocab_size)
        float32 or float64 (other numeric dtypes become float64). -inf marks a forbidden token;
        NaN and +inf are rejected, and every row needs at least one finite logit.
    temperature : float, default 1.0
        Logits are divided by it (in float64). 0 means greedy decoding: the largest logit wins,
        the lowest index on a tie, and the filters are not applied.
    top_k : int or None
        Keep the top_k most likely tokens (ties at the k-th logit go to the lower index).
        None or 0 disables it; a value above the vocabulary size keeps every token.
    top_p : float in [0, 1] or None
        Keep the shortest run of most likely tokens whose probability mass reaches top_p.
        0 keeps the most likely token, 1 (or None) keeps every token with a finite logit.
    min_p : float in [0, 1] or None
        Keep the tokens whose probability is at least min_p times the top probability.
    min_tokens_to_keep : int, default 1
        Top-k, top-p and min-p each keep at least this many tokens, as in Hugging Face.
    rng : None, int or numpy.random.Generator
        Source of the one uniform number drawn per row, whatever the other settings. The same
        seed gives the same tokens on every backend.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Returns
    -------
    numpy.int64 for 1-D logits, int64 array of shape (batch,) for 2-D logits.
    """
    logits, one_row = _check_logits(logits)
    settings = _check_settings(temperature, top_k, top_p, min_p, min_tokens_to_keep)
    generator = _check_rng(rng)
    module = backends.load("sampling", backend)

    # One uniform per row, drawn in this one place even for greedy decoding, so that every
    # backend consumes the same numbers and a Generator always advances by one number per row.
    uniforms = generator.random(logits.shape[0])

    if logits.shape[0] == 0:
        tokens = np.empty(0, dtype=np.int64)
    elif settings.temperature == 0:
        tokens = module.greedy(logits, get_num_threads())
    else:
        _check_scaling(logits, settings.temperature, np.float64)
        tokens = module.sample(
            logits, *settings, mass_shift(logits.shape[1]), uniforms, get_num_threads()
        )
    return tokens[0] if one_row else tokens


def greedy(logits, *, backend="auto"):
    """Return the index of the largest logit (of every row); the lowest index wins a tie."""
    logits, one_row = _check_logits(logits)
    module = backends.load("sampling", backend)
    if logits.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    tokens = module.greedy(logits, get_num_threads())
    return tokens[0] if one_row else tokens


def filter_logits(
    logits,
    *,
    temperature=1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    min_tokens_to_keep=1,
    backend="auto",
):
    """Return logits / temperature with every token that `sample` would never draw set to -inf.

    The kept tokens are exactly the candidates of ``sample`` with the same settings (the finite
    entries of the result). The result has the dtype of `logits`; scaling happens in float64 and
    is rounded once to that dtype. With temperature 0 only the greedy token stays finite, at its
    unscaled logit. See ``sample`` for the parameters.
    """
    logits, one_row = _check_logits(logits)
    settings = _check_settings(temperature, top_k, top_p, min_p, min_tokens_to_keep)
    module = backends.load("sampling", backend)
    if settings.temperature == 0:
        mask = np.zeros(logits.shape, dtype=bool)
        if logits.shape[0]:
            mask[np.arange(logits.shape[0]), module.greedy(logits, get_num_threads())] = True
        return _masked(logits, mask, one_row)

    _check_scaling(logits, settings.temperature, logits.dtype)
    return _filtered(module, logits, settings, one_row)


def apply_temperature(logits, temperature):
    """Return logits / temperature, computed in float64 and returned in the dtype of `logits`.

    `temperature` must be positive here; ``sample(..., temperature=0)`` and ``greedy`` cover
    greedy decoding. -inf logits stay -inf.
    """
    logits, one_row = _check_logits(logits)
    temperature = check_float(temperature, "temperature", min_value=0.0)
    if temperature == 0:
        raise ValueError(
            "temperature=0 means greedy decoding, which cannot be written as scaled logits; "
            "call greedy(logits) or pass a positive temperature"
        )
    _check_scaling(logits, temperature, logits.dtype)
    scaled = (logits.astype(np.float64) / temperature).astype(logits.dtype)
    return scaled[0] if one_row else scaled


def top_k_filter(logits, top_k, *, min_tokens_to_keep=1, backend="auto"):
    """Return a copy of `logits` where all but the top_k most likely tokens are -inf.

    Exactly max(top_k, min_tokens_to_keep) tokens are kept: ties at the boundary logit go to
    the lower index. top_k=0 or a value of at least the vocabulary size keeps every token.
    """
    return _single_filter(logits, backend, top_k=top_k, min_tokens_to_keep=min_tokens_to_keep)


def top_p_filter(logits, top_p, *, min_tokens_to_keep=1, backend="auto"):
    """Return a copy of `logits` where every token outside the top_p nucleus is -inf.

    The nucleus is the shortest run of tokens in descending logit order (the lower index first
    among equal logits) whose softmax probability mass reaches top_p, extended to at least
    min_tokens_to_keep tokens. top_p=0 keeps the most likely token; top_p=1 keeps every token.
    """
    return _single_filter(logits, backend, top_p=top_p, min_tokens_to_keep=min_tokens_to_keep)


def min_p_filter(logits, min_p, *, min_tokens_to_keep=1, backend="auto"):
    """Return a copy of `logits` where tokens less likely than min_p times the top one are -inf.

    The min_tokens_to_keep most likely tokens are always kept.
    """
    return _single_filter(logits, backend, min_p=min_p, min_tokens_to_keep=min_tokens_to_keep)


def _single_filter(logits, backend, top_k=None, top_p=None, min_p=None, min_tokens_to_keep=1):
    logits, one_row = _check_logits(logits)
    settings = _check_settings(1.0, top_k, top_p, min_p, min_tokens_to_keep)
    module = backends.load("sampling", backend)
    return _filtered(module, logits, settings, one_row)


def _filtered(module, logits, settings, one_row):
    if logits.shape[0] == 0:
        mask = np.zeros(logits.shape, dtype=bool)
    else:
        mask = module.filter_mask(
            logits, *settings, mass_shift(logits.shape[1]), get_num_threads()
        )
    if settings.temperature != 1.0:
        logits = (logits.astype(np.float64) / settings.temperature).astype(logits.dtype)
    return _masked(logits, mask, one_row)


def _masked(logits, mask, one_row):
    result = np.where(mask, logits, np.array(-np.inf, dtype=logits.dtype))
    return result[0] if one_row else result


def _check_logits(logits):
    """Return `logits` as a C-contiguous float array of shape (batch, vocab_size), and whether it was 1-D."""
    ndim = np.ndim(logits)
    if ndim not in (1, 2):
        raise ValueError(
            "logits must be 1-D with shape (vocab_size,) or 2-D with shape (batch, vocab_size), "
            f"got shape {np.shape(logits)}"
        )
    array = check_array(
        logits, "logits", ndim=ndim, min_samples=0, min_features=0, ensure_finite=False
    )
    one_row = ndim == 1
    if one_row:
        array = array[np.newaxis, :]
    if array.shape[1] == 0:
        raise ValueError(
            f"logits has an empty vocabulary (shape {np.shape(logits)}); "
            "at least one token is required"
        )
    _check_values(array, one_row)
    return array, one_row


def _check_values(logits, one_row):
    """Reject NaN, +inf, and rows without a finite logit; -inf is allowed (a forbidden token)."""
    if np.isfinite(logits).all():
        return

    def position(row, column):
        return f"index {column}" if one_row else f"index ({row}, {column})"

    nan = np.argwhere(np.isnan(logits))
    if nan.size:
        raise ValueError(
            f"logits contains NaN at {position(*nan[0])}; NaN has no probability, "
            "replace it with -inf to forbid the token"
        )
    positive = np.argwhere(logits == np.inf)
    if positive.size:
        raise ValueError(
            f"logits contains +inf at {position(*positive[0])}; +inf gives no finite "
            "probabilities, use a large finite logit or set the other tokens to -inf"
        )
    empty_rows = np.flatnonzero(~(logits > -np.inf).any(axis=1))
    if empty_rows.size:
        where = "logits" if one_row else f"row {empty_rows[0]} of logits"
        raise ValueError(
            f"every entry of {where} is -inf; at least one token per row must have a finite logit"
        )


def _check_settings(temperature, top_k, top_p, min_p, min_tokens_to_keep):
    """Validate the sampling parameters and normalize the disabled ones."""
    temperature = check_float(temperature, "temperature", min_value=0.0)
    top_k = 0 if top_k is None else check_int(top_k, "top_k", min_value=0)
    top_p = 1.0 if top_p is None else check_float(top_p, "top_p", min_value=0.0, max_value=1.0)
    min_p = 0.0 if min_p is None else check_float(min_p, "min_p", min_value=0.0, max_value=1.0)
    min_tokens_to_keep = check_int(min_tokens_to_keep, "min_tokens_to_keep", min_value=1)
    return _Settings(temperature, top_k, top_p, min_p, min_tokens_to_keep)


def _check_scaling(logits, temperature, dtype):
    """Reject a temperature so small that logits / temperature overflows `dtype`."""
    if temperature >= 1.0 or logits.size == 0:
        return
    largest = float(logits.max())
    smallest = float(np.min(logits, where=logits > -np.inf, initial=np.inf))
    magnitude = max(abs(largest), abs(smallest))
    # Python floats: the quotient becomes inf on overflow, without a NumPy warning.
    if magnitude / temperature > float(np.finfo(dtype).max):
        raise ValueError(
            f"temperature={temperature} is too small for logits of magnitude {magnitude:g}: "
            f"logits / temperature overflows {np.dtype(dtype).name}; use temperature=0 for "
            "greedy decoding or a larger temperature"
        )


def _check_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng must be a non-negative int seed, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )
