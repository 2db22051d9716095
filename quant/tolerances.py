"""The tolerance policy of the project, in one place (STYLE principle 7).

* Integer paths (codes, accumulators, requantised states, weight updates, rng integers) are
  compared with :data:`BIT_EXACT`: ``np.array_equal`` / ``torch.equal``, no tolerance.
* Float paths use a named ``(rtol, atol)`` pair with float64 as the reference.
* Gradient directions use cosine thresholds.

Use: ``np.testing.assert_allclose(x32, x64, **F32_VS_F64)``.
"""
from __future__ import annotations

BIT_EXACT = {"rtol": 0.0, "atol": 0.0}
"""Integer paths: exact equality (kept as a dict so it can be passed like the others)."""

F32_VS_F64 = {"rtol": 1e-5, "atol": 1e-6}
"""float32 result vs float64 reference, O(1)-sized values after a few ops (eps32 = 1.2e-7)."""

F64_VS_F64 = {"rtol": 1e-12, "atol": 1e-12}
"""Two float64 implementations of the same formula (different op order or libm)."""

RNG_NORMAL_F64 = {"rtol": 1e-12, "atol": 1e-12}
"""quant.rng.normal_f64 across numpy / torch / numba: same integer uniforms, libm may differ by ulps."""

COSINE_GRAD_MIN = 0.99
"""EqProp vs BPTT/implicit gradient, float64, small beta: per-layer cosine must exceed this."""

COSINE_GRAD_CONVERGED_MIN = 0.9999
"""EqProp (beta 1e-4, symmetric) vs BPTT/implicit, float64, free and nudged phases converged to
residual ~1e-13 on a small net away from hard-sigmoid kinks: per-parameter cosine must exceed this."""

COSINE_GRAD_QUANT_MIN = 0.9
"""Same comparison under a quantised spec (int8 states): per-layer cosine must exceed this."""


def state_lsb_atol(lsb: float, n_lsb: float = 1.0) -> dict:
    """Tolerance in units of a fixed-point LSB (fake-quant float vs integer dequantised).

    >>> state_lsb_atol(2**-7)
    {'rtol': 0.0, 'atol': 0.0078125}
    """
    return {"rtol": 0.0, "atol": n_lsb * lsb}
