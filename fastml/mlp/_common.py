"""Constants shared by the MLP backends and the model code."""

import math

# The activations a dense layer can end with. "identity" is the plain linear layer; the compiled
# backends receive the index into this tuple.
ACTIVATIONS = ("identity", "relu", "tanh", "gelu")
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}

# Constants of the exact GELU, z * Phi(z) with Phi(z) = (1 + erf(z / sqrt(2))) / 2.
INV_SQRT2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
