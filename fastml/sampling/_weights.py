"""Token weights and their fixed-point masses, defined once so that every backend computes them
bit for bit alike.

A token's weight is ``w = exp(z - max(z))`` in float64, where ``z`` are the logits after the
temperature: the probability of the token relative to the most likely one (which has weight 1).
Two facts make a shared definition necessary:

- The exponential is this module's own, not the C library's or NumPy's. NumPy's SIMD ``exp``
  (NumPy 2.4, AVX-512) and glibc's ``exp`` differed in the last bit on 92,656 of 2,000,000
  random inputs in [-50, 0], and a one-bit difference moves a top-p boundary that sits exactly at
  it. ``exp_weight`` below is a fixed sequence of IEEE-754 operations: a Cody-Waite reduction by
  ln 2, a degree-13 Taylor polynomial evaluated by Horner's rule, and an exact power-of-two
  scaling. Pure Python, NumPy, Numba and C evaluate it identically as long as no multiply-add is
  fused.
  It is within 1 unit in the last place of ``math.exp`` on the tested inputs, and inputs below
  ``EXP_CUTOFF`` (weights under about 3e-308) give exactly 0.
- Masses are the weights in fixed point: ``q = floor(w * 2**shift)`` with
  ``shift = 62 - vocab_size.bit_length()``, so ``q <= 2**shift`` and the sum of a whole row stays
  below 2**62. Sums of masses are exact integers, so they do not depend on the summation order:
  any partial-selection strategy finds the same top-p boundary, and the final draw picks the same
  token. The truncation costs less than ``2**-shift`` of the top token's weight per token
  (about 2.8e-14 for a vocabulary of 128,256), and a token whose mass is 0 is never sampled.
"""

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np

# Inputs below the cutoff give weight 0. Above it the exponent k stays >= -1021, so p * 2**k
# (with p >= 1/sqrt(2)) is a normal number and the scaling is exact.
EXP_CUTOFF = -708.0
MIN_EXPONENT = -1021

LOG2E = 1.4426950408889634

# Adding and then subtracting 1.5 * 2**52 rounds a float64 of magnitude below 2**51 to the nearest
# integer (ties to even) with two plain additions, which vectorize everywhere, unlike floor().
ROUNDER = 6755399441055744.0


def _split_ln2():
    """Return ln 2 as hi + lo, where hi keeps the top 21 bits of the float64 significand.

    The product of hi and any integer |k| < 2**32 is then exact, which keeps the reduction
    r = x - k ln 2 accurate to the last bit (the Cody-Waite trick).
    """
    with localcontext() as context:
        context.prec = 50
        ln2 = Decimal(2).ln()
    bits = np.float64(float(ln2)).view(np.uint64)
    hi = float(np.uint64(bits & np.uint64(0xFFFFFFFF00000000)).view(np.float64))
    lo = float(ln2 - Decimal(hi))
    return hi, lo


LN2_HI, LN2_LO = _split_ln2()

# Taylor coefficients 1/n! for n = 13 down to 0, correctly rounded. On |r| <= ln(2)/2 the
# truncation error of degree 13 is below 6e-18, under a tenth of a float64 unit.
EXP_COEFFICIENTS = tuple(float(Fraction(1, math.factorial(n))) for n in range(13, -1, -1))

# POW2[j] = 2**(j + MIN_EXPONENT) for the exponents k in [MIN_EXPONENT, 0] that can occur.
POW2 = np.array([math.ldexp(1.0, k) for k in range(MIN_EXPONENT, 1)], dtype=np.float64)
POW2.setflags(write=False)

# The fast backends narrow down a selection with a histogram of the gaps below the row maximum:
# N_BUCKETS buckets of 1/16 logit, the last one open-ended (see _numba.py).
N_BUCKETS = 1024
BUCKETS_PER_LOGIT = 16.0


def exp_weight(x):
    """Return exp(x) for x <= 0 as the fixed operation sequence every backend uses."""
    if not x >= EXP_CUTOFF:
        # Also catches x = -inf (a removed token, or a logit of -inf).
        return 0.0

    k = (x * LOG2E + ROUNDER) - ROUNDER
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_COEFFICIENTS[0]
    for coefficient in EXP_COEFFICIENTS[1:]:
        p = p * r + coefficient
    return p * float(POW2[int(k) - MIN_EXPONENT])


def mass_shift(vocab_size):
    """Return the fixed-point shift for masses of a row of `vocab_size` tokens."""
    return 62 - int(vocab_size).bit_length()
