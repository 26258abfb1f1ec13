"""Scaled dot-product attention with PyTorch's semantics on NumPy arrays, four backends.

``scaled_dot_product_attention`` follows ``torch.nn.functional.scaled_dot_product_attention``
(boolean or additive masks, ``is_causal``, ``scale``, grouped-query heads), except that the
causal mask aligns to the bottom-right corner when L != S and that a query that sees no key gets
zeros; ``multi_head_attention`` projects, splits into heads, attends and projects back.
See docs/attention.md.
"""

from fastml.attention._api import scaled_dot_product_attention
from fastml.attention._multi_head import multi_head_attention, rotary_embedding

__all__ = ["multi_head_attention", "rotary_embedding", "scaled_dot_product_attention"]
