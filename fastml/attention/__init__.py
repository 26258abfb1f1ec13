"""Scaled dot-product attention with PyTorch's semantics on NumPy arrays, four backends.

``scaled_dot_product_attention`` follows ``torch.nn.functional.scaled_dot_product_attention``
(boolean or additive masks, ``is_causal``, ``scale``, grouped-query heads), except that the
causal mask aligns to the bottom-right corner when L != S and that a query that attends to no key gets
zeros; ``multi_head_attention`` projects, splits into heads, attends and projects back.
``KVCache``, ``cached_attention`` and ``DecoderLayer`` decode token by token against cached keys
and values. See docs/attention.md.
"""

from fastml.attention._api import scaled_dot_product_attention
from fastml.attention._decoder import DecoderLayer
from fastml.attention._kv_cache import KVCache, cached_attention
from fastml.attention._multi_head import multi_head_attention, rotary_embedding

__all__ = [
    "DecoderLayer",
    "KVCache",
    "cached_attention",
    "multi_head_attention",
    "rotary_embedding",
    "scaled_dot_product_attention",
]
