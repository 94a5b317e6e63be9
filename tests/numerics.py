"""Error bounds of float32 arithmetic, for tolerances that follow from the computation, not from one CPU.

u = 2^-24 is float32's unit roundoff. A float32 sum of n terms, in any order (any BLAS kernel, any
thread split), is within gamma(n) * sum |terms| of the exact sum (Higham, "Accuracy and Stability of
Numerical Algorithms", 2002, eq. 3.4). For a Gram entry sum_i x_ia x_ib, Cauchy-Schwarz bounds
sum_i |x_ia x_ib| by sqrt(G_aa G_bb) <= max_a G_aa, so every entry is within gamma(n) * max diag(G).
"""

from __future__ import annotations

import numpy as np

U32 = 2.0 ** -24
U64 = 2.0 ** -53


def gamma(n: int, u: float = U32) -> float:
    """Worst-case relative error of an n-term floating-point sum (or dot product) of that precision."""
    assert n * u < 1
    return n * u / (1 - n * u)


def gram_atol(moment: np.ndarray, rows: int) -> float:
    """Bound on |error| of every entry of a second moment E[x x^T] [C, C] whose float32 products were
    summed over at most `rows` rows at a time (then added in float64): gamma(rows) * max E[x_a^2]."""
    return gamma(rows) * float(np.max(np.diag(np.asarray(moment, dtype=np.float64))))
