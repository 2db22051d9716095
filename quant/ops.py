"""Pure integer math shared by every path (numpy here; numba and torch mirror it).

Everything in this module works on Python ints and on numpy ``int64`` arrays and is exact:
no float is involved anywhere except in :func:`quantize_multiplier`, which turns a real
scale into an integer ``(multiplier, shift)`` pair once, offline.

Conventions
-----------
* Integers are two's complement. A ``bits``-wide signed integer spans
  ``[-2**(bits-1), 2**(bits-1) - 1]``; unsigned spans ``[0, 2**bits - 1]``.
* ``narrow_range`` drops the most negative signed code (``-2**(bits-1)``) so the range is
  symmetric, e.g. int8 narrow is ``[-127, 127]``; for unsigned it drops code ``2**bits - 1``
  (Brevitas/QONNX convention).
* Right shifts of negative numbers are arithmetic (``>>`` floors), as in numpy, numba and C on
  every platform we target.

Rounding modes (names used by :mod:`quant.spec`):

=================  ==========================================================  ==============
mode               definition of ``round(x / 2**s)``                           origin
=================  ==========================================================  ==============
``nearest_even``   nearest integer, ties to the even one                       ONNX / QONNX
``floor``          ``floor(x / 2**s)`` = ``x >> s`` (truncation toward -inf)   hls4ml ``TRN``
``stochastic``     ``floor`` + 1 with probability ``frac`` (see below)         --
=================  ==========================================================  ==============

Overflow modes: ``saturate`` clamps to the range (hls4ml ``SAT``), ``wrap`` keeps the low
``bits`` bits, two's complement (hls4ml ``WRAP``).
"""
from __future__ import annotations

import math

import numpy as np

ROUNDING_MODES = ("nearest_even", "floor", "stochastic")
OVERFLOW_MODES = ("saturate", "wrap")
U24_BITS = 24  # width of the uniform integers that drive stochastic rounding (see quant.rng)


def _is_tensor(x) -> bool:
    """True for a torch tensor (checked by type name, so this module never imports torch)."""
    return type(x).__module__.startswith("torch")


def _check_bits(bits: int, name: str = "bits", lo: int = 1, hi: int = 63) -> None:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not lo <= bits <= hi:
        raise ValueError(f"{name}={bits!r} is invalid; allowed: an int in [{lo}, {hi}]")


def max_int(signed: bool, narrow_range: bool, bits: int) -> int:
    """Largest representable integer.

    Args:
        signed: two's complement signed (True) or unsigned (False).
        narrow_range: unsigned only: drop the top code ``2**bits - 1``.
        bits: width in bits.

    Returns:
        ``2**(bits-1) - 1`` if signed, else ``2**bits - 1`` (``- 1`` more if unsigned narrow).

    >>> max_int(True, False, 8), max_int(True, True, 8), max_int(False, False, 8)
    (127, 127, 255)
    >>> max_int(False, True, 8)
    254
    """
    _check_bits(bits)
    if signed:
        return 2 ** (bits - 1) - 1
    return 2**bits - 1 - (1 if narrow_range else 0)


def min_int(signed: bool, narrow_range: bool, bits: int) -> int:
    """Smallest representable integer.

    >>> min_int(True, False, 8), min_int(True, True, 8), min_int(False, False, 8)
    (-128, -127, 0)
    >>> min_int(True, True, 2)   # ternary-capable 2-bit narrow range: {-1, 0, 1}
    -1
    """
    _check_bits(bits)
    if signed:
        return -(2 ** (bits - 1)) + (1 if narrow_range else 0)
    return 0


def round_half_even(x):
    """Round floats to the nearest integer, ties to even (IEEE / ONNX ``Round``).

    Returns float values (like ``np.rint``); cast afterwards.

    >>> round_half_even(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1.4999])).tolist()
    [0.0, 2.0, 2.0, -0.0, -2.0, 1.0]
    """
    return np.rint(x)


def round_floor(x):
    """Round floats toward minus infinity (hls4ml ``TRN``).

    >>> round_floor(np.array([0.5, 1.99, -0.5, -1.0])).tolist()
    [0.0, 1.0, -1.0, -1.0]
    """
    return np.floor(x)


def round_to_int(t, rounding: str, u24=None):
    """Round real values ``t`` (float64) to integers with a rounding mode; float64 out.

    ``"stochastic"`` rounds up iff ``u24 < (t - floor(t)) * 2**24`` where ``u24`` are uniform
    integers in ``[0, 2**24)`` (:func:`quant.rng.uniform_u24`); the comparison is exact, so
    ``P(up) = ceil(frac * 2**24) / 2**24``: unbiased when ``frac`` is a multiple of ``2**-24``
    and biased by less than ``2**-24`` otherwise.

    >>> round_to_int(np.array([0.5, 1.5, -2.5]), "nearest_even").tolist()
    [0.0, 2.0, -2.0]
    >>> round_to_int(np.array([0.25, 0.25]), "stochastic", u24=np.array([2**22 - 1, 2**22])).tolist()
    [1.0, 0.0]
    """
    t = np.asarray(t, dtype=np.float64)
    if rounding == "nearest_even":
        return np.rint(t)
    if rounding == "floor":
        return np.floor(t)
    if rounding == "stochastic":
        if u24 is None:
            raise ValueError("u24 is None; allowed: uniform ints in [0, 2**24) for rounding='stochastic'")
        fl = np.floor(t)
        up = np.asarray(u24, dtype=np.float64) < np.ldexp(t - fl, U24_BITS)
        return fl + up
    raise ValueError(f"rounding={rounding!r} is invalid; allowed: {ROUNDING_MODES}")


def saturate(x, bits: int, signed: bool, narrow_range: bool = False):
    """Clamp integers to the representable range (hls4ml ``SAT``).

    >>> saturate(np.array([-200, -128, 5, 127, 300]), 8, True).tolist()
    [-128, -128, 5, 127, 127]
    >>> saturate(300, 8, False)
    255
    """
    lo, hi = min_int(signed, narrow_range, bits), max_int(signed, narrow_range, bits)
    if isinstance(x, (int, np.integer)):
        return min(max(int(x), lo), hi)
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def wrap(x, bits: int, signed: bool):
    """Keep the low ``bits`` bits, two's complement (hls4ml ``WRAP``).

    Equals ``x mod 2**bits`` mapped into the signed or unsigned range. Wrapping is a ring
    homomorphism, so wrapping every partial sum equals wrapping the final sum.

    >>> wrap(np.array([127, 128, 255, 256, -129]), 8, True).tolist()
    [127, -128, -1, 0, 127]
    >>> wrap(-1, 8, False)
    255
    """
    _check_bits(bits, hi=62)
    mask = (1 << bits) - 1
    if isinstance(x, (int, np.integer)):
        u = int(x) & mask
        return u - (1 << bits) if signed and u >= (1 << (bits - 1)) else u
    u = np.asarray(x, dtype=np.int64) & mask
    if signed:
        u = np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)
    return u


def overflow(x, bits: int, signed: bool, mode: str):
    """Apply an overflow mode (``"saturate"`` or ``"wrap"``) at width ``bits``.

    >>> overflow(np.array([130]), 8, True, "wrap").tolist(), overflow(np.array([130]), 8, True, "saturate").tolist()
    ([-126], [127])
    """
    if mode == "saturate":
        return saturate(x, bits, signed)
    if mode == "wrap":
        return wrap(x, bits, signed)
    raise ValueError(f"mode={mode!r} is invalid; allowed: {OVERFLOW_MODES}")


def shift_round(x, shift: int, rounding: str, u24=None):
    """Exact ``round(x / 2**shift)`` for int64 ``x`` and ``shift >= 0``.

    Args:
        x: int or int64 array.
        shift: non-negative right shift.
        rounding: one of :data:`ROUNDING_MODES`.
        u24: for ``"stochastic"`` only: uniform integers in ``[0, 2**24)`` broadcastable to
            ``x`` (from :func:`quant.rng.uniform_u24`). Let ``r = x - (x >> shift << shift)``
            be the remainder in ``[0, 2**shift)``. The result is ``(x >> shift) + up`` with

            * ``shift <= 24``: ``up = (u24 >> (24 - shift)) < r``; the left side is uniform on
              ``[0, 2**shift)``, so ``P(up) = r / 2**shift`` exactly (unbiased);
            * ``shift > 24``: ``up = u24 < (r >> (shift - 24))``; bias below ``2**-24`` LSB.

    Returns:
        int64 array (or int for int input).

    >>> shift_round(np.array([5, 6, 7, -5, -6]), 1, "nearest_even").tolist()   # 2.5 3 3.5 -2.5 -3
    [2, 3, 4, -2, -3]
    >>> shift_round(np.array([5, -5]), 1, "floor").tolist()
    [2, -3]
    >>> shift_round(np.array([5, 5]), 1, "stochastic", u24=np.array([0, 2**23])).tolist()
    [3, 2]
    """
    if not isinstance(shift, (int, np.integer)) or shift < 0:
        raise ValueError(f"shift={shift!r} is invalid; allowed: an int >= 0")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding={rounding!r} is invalid; allowed: {ROUNDING_MODES}")
    scalar = isinstance(x, (int, np.integer))
    if not _is_tensor(x):  # torch int64 tensors run the same operator-only code below
        x = np.asarray(x, dtype=np.int64)
    if shift == 0:
        out = x + 0
    else:
        q = x >> shift
        r = x - (q << shift)  # in [0, 2**shift)
        if rounding == "floor":
            out = q
        elif rounding == "nearest_even":
            half = 1 << (shift - 1)
            up = (r > half) | ((r == half) & ((q & 1) == 1))
            out = q + up * 1
        else:
            if u24 is None:
                raise ValueError("u24 is None; allowed: uniform ints in [0, 2**24) for rounding='stochastic'")
            u = u24 if _is_tensor(u24) else np.asarray(u24, dtype=np.int64)
            if shift <= U24_BITS:
                up = (u >> (U24_BITS - shift)) < r
            else:
                up = u < (r >> (shift - U24_BITS))
            out = q + up * 1
    return int(out) if scalar and out.ndim == 0 else out


def requantize(acc, multiplier: int, shift: int, rounding: str, u24=None):
    """Exact integer rescale ``round(acc * multiplier / 2**shift)`` in int64.

    This is how a fixed-point chip applies a real scale ``M ~= multiplier * 2**-shift``
    (gemmlowp / TFLite style): one integer multiply, one rounding right shift. A negative
    ``shift`` is a left shift (exact, no rounding). Saturate/wrap the result yourself with
    :func:`overflow` at the output width.

    Exactness: ``acc * multiplier`` must fit in int64. With ``|acc| < 2**32`` and a multiplier
    below ``2**31`` (the defaults of :func:`quantize_multiplier`) it always does; this
    function raises ``ValueError`` if the bound ``max|acc| * |multiplier| < 2**62`` fails.

    Args:
        acc: int or int64 array (e.g. an accumulator).
        multiplier: integer multiplier (any sign).
        shift: right shift; negative means left shift.
        rounding: one of :data:`ROUNDING_MODES`.
        u24: uniforms for ``"stochastic"``, see :func:`shift_round`.

    >>> requantize(np.array([100, -100, 3]), 3, 2, "nearest_even").tolist()   # 75, -75, 2.25
    [75, -75, 2]
    >>> requantize(7, 1, -3, "floor")
    56
    """
    if not isinstance(multiplier, (int, np.integer)) or isinstance(multiplier, bool):
        raise ValueError(f"multiplier={multiplier!r} is invalid; allowed: an int")
    scalar = isinstance(acc, (int, np.integer))
    a = acc if _is_tensor(acc) else np.asarray(acc, dtype=np.int64)
    n = a.numel() if _is_tensor(a) else a.size
    amax = int(abs(a).max()) if n else 0
    if amax * abs(int(multiplier)) >= 2**62:
        raise ValueError(
            f"multiplier={multiplier} with max|acc|={amax} overflows int64; allowed: "
            "max|acc| * |multiplier| < 2**62"
        )
    prod = a * int(multiplier)
    if shift < 0:
        if amax * abs(int(multiplier)) * 2 ** (-shift) >= 2**62:
            raise ValueError(f"shift={shift} overflows int64; allowed: a smaller left shift")
        out = prod << int(-shift)
    else:
        out = shift_round(prod, int(shift), rounding, u24)
    return int(out) if scalar else out


def quantize_multiplier(real_scale: float, multiplier_bits: int = 31) -> tuple[int, int]:
    """Integer ``(multiplier, shift)`` with ``real_scale ~= multiplier * 2**-shift``.

    gemmlowp/TFLite convention: ``multiplier`` is normalised into
    ``[2**(multiplier_bits-1), 2**multiplier_bits)`` (31 bits by default, i.e. a Q0.31
    fraction in ``[0.5, 1)`` stored in a signed int32), so the relative error of the pair is at
    most ``2**-multiplier_bits``. If ``real_scale`` is an exact power of two the pair is exact;
    for power-of-two scales prefer ``multiplier=1`` and a shift (see
    :func:`quant.quantizers.scale_to_shift`). ``shift`` is negative (a left shift) only when
    ``real_scale >= 2**multiplier_bits``.

    Args:
        real_scale: positive finite scale.
        multiplier_bits: width of the multiplier, 2..31.

    Returns:
        ``(multiplier, shift)``.

    >>> quantize_multiplier(0.5)
    (1073741824, 31)
    >>> m, s = quantize_multiplier(0.1); abs(m * 2.0**-s - 0.1) < 0.1 * 2**-31
    True
    >>> quantize_multiplier(0.75, multiplier_bits=8)
    (192, 8)
    """
    _check_bits(multiplier_bits, "multiplier_bits", 2, 31)
    if not (isinstance(real_scale, (float, int, np.floating)) and math.isfinite(real_scale) and real_scale > 0):
        raise ValueError(f"real_scale={real_scale!r} is invalid; allowed: a finite float > 0")
    mant, exp = math.frexp(float(real_scale))  # real = mant * 2**exp, mant in [0.5, 1)
    m = round(mant * 2**multiplier_bits)  # Python round: half to even; exact (mant has 53 bits)
    if m == 2**multiplier_bits:  # mantissa rounded up to 1.0
        m //= 2
        exp += 1
    shift = multiplier_bits - exp
    return int(m), int(shift)
