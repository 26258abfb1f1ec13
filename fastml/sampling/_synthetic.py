"""Synthetic next-token logits with the shape of a language model's, for tests and benchmarks.

Real next-token distributions are heavy-tailed: the probability of the r-th most likely token
falls roughly like a power of r. ``zipf_logits`` gives token ``perm[r]`` the logit
``-exponent * ln(r + 1)`` plus Gaussian noise, with the tokens in a random order per row, so a
softmax at temperature 1 is Zipf-like. With the defaults and 128,256 tokens, the top-p 0.9
nucleus contains about 12% of the vocabulary, a hard case for partial selection.
"""

import numpy as np


def zipf_logits(batch, vocab_size, *, exponent=1.1, noise=0.3, seed=0, dtype=np.float32):
    """Return an array of shape (batch, vocab_size) of Zipf-like logits."""
    rng = np.random.default_rng(seed)
    ranks = rng.permuted(np.tile(np.arange(1, vocab_size + 1), (batch, 1)), axis=1)
    logits = -exponent * np.log(ranks) + noise * rng.standard_normal((batch, vocab_size))
    return logits.astype(dtype)
