"""Next-token sampling from logits: greedy, temperature, top-k, top-p and min-p, four backends.

``sample`` applies temperature, then top-k, then top-p, then min-p (the order of Hugging Face
generation) and draws one token per row. ``filter_logits`` returns what those filters keep.
``apply_temperature``, ``top_k_filter``, ``top_p_filter``, ``min_p_filter`` and ``greedy`` are
the steps on their own. The filters return a copy of the logits with removed tokens at -inf. All
backends keep the same tokens and, for the same seed, draw the same ones; see docs/sampling.md.
"""

from fastml.sampling._api import (
    apply_temperature,
    filter_logits,
    greedy,
    min_p_filter,
    sample,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "apply_temperature",
    "filter_logits",
    "greedy",
    "min_p_filter",
    "sample",
    "top_k_filter",
    "top_p_filter",
]
