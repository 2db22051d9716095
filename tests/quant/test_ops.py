"""quant.ops against independent straightforward Python-int / Fraction implementations."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import ops

WIDTHS = range(2, 9)


def ref_range(bits, signed, narrow):
    """All representable ints, by enumeration of bit patterns (two's complement decode)."""
    vals = []
    for pattern in range(2**bits):
        v = pattern - 2**bits if signed and pattern >= 2 ** (bits - 1) else pattern
        vals.append(v)
    vals = sorted(vals)
    if narrow:
        vals = vals[1:] if signed else vals[:-1]
    return vals


def ref_round(fr: Fraction, mode: str) -> int:
    fl = fr.numerator // fr.denominator
    rem = fr - fl
    if mode == "floor":
        return fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1):
        return fl + 1
    return fl


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("narrow", [True, False])
def test_every_representable_code(bits, signed, narrow):
    codes = ref_range(bits, signed, narrow)
    assert ops.min_int(signed, narrow, bits) == codes[0]
    assert ops.max_int(signed, narrow, bits) == codes[-1]
    assert len(codes) == 2**bits - (1 if narrow else 0)
    # saturate is identity on the range and clamps just outside
    arr = np.array(codes)
    if not narrow:
        assert np.array_equal(ops.saturate(arr, bits, signed), arr)
        assert np.array_equal(ops.wrap(arr, bits, signed), arr)
    assert ops.saturate(codes[0] - 1, bits, signed, narrow) == codes[0]
    assert ops.saturate(codes[-1] + 1, bits, signed, narrow) == codes[-1]


@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("signed", [True, False])
def test_wrap_and_saturate_match_python_ints(bits, signed):
    lo, hi = ops.min_int(signed, False, bits), ops.max_int(signed, False, bits)
    xs = np.arange(-3 * 2**bits, 3 * 2**bits)
    want_wrap = [((x - lo) % 2**bits) + lo for x in xs.tolist()]
    want_sat = [min(max(x, lo), hi) for x in xs.tolist()]
    assert ops.wrap(xs, bits, signed).tolist() == want_wrap
    assert ops.saturate(xs, bits, signed).tolist() == want_sat
    assert ops.overflow(xs, bits, signed, "wrap").tolist() == want_wrap
    assert ops.overflow(xs, bits, signed, "saturate").tolist() == want_sat


@pytest.mark.parametrize("mode", ["nearest_even", "floor"])
@pytest.mark.parametrize("shift", [0, 1, 2, 3, 7])
def test_shift_round_matches_fraction(mode, shift):
    xs = np.arange(-300, 301)
    want = [ref_round(Fraction(x, 2**shift), mode) for x in xs.tolist()]
    assert ops.shift_round(xs, shift, mode).tolist() == want


@pytest.mark.parametrize("mode", ["nearest_even", "floor"])
def test_requantize_matches_fraction(mode):
    rs = np.random.default_rng(1)
    acc = rs.integers(-(2**31), 2**31, size=2000)
    for multiplier, shift in [(1, 0), (3, 2), (1_518_500_250, 31), (-7, 5), (5, -3), (2**30 + 1, 40)]:
        got = ops.requantize(acc, multiplier, shift, mode)
        if shift < 0:
            want = [a * multiplier * 2 ** (-shift) for a in acc.tolist()]
        else:
            want = [ref_round(Fraction(a * multiplier, 2**shift), mode) for a in acc.tolist()]
        assert got.tolist() == want, (multiplier, shift)


def test_round_to_int_modes():
    t = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.25, -2.75])
    assert ops.round_to_int(t, "nearest_even").tolist() == [-2, -2, -0.0, 0, 2, 2, 2, -3]
    assert ops.round_to_int(t, "floor").tolist() == [-3, -2, -1, 0, 1, 2, 2, -3]


@pytest.mark.parametrize("shift", [1, 3, 10, 24, 30])
def test_stochastic_shift_round_is_unbiased(shift):
    """Over all 2**24 uniforms the round-up count is exactly r * 2**(24-shift) (shift <= 24)."""
    from quant import rng

    u24 = rng.uniform_u24(0, 0, 0, np.arange(200_000))
    x = np.full(u24.shape, 5 * 2**shift + (2**shift) // 3, dtype=np.int64)
    frac = ((2**shift) // 3) / 2**shift
    got = ops.shift_round(x, shift, "stochastic", u24=u24)
    assert set(np.unique(got).tolist()) <= {5, 6}
    mean_up = float((got - 5).mean())
    # binomial std of the mean over 2e5 draws <= 1.2e-3; 5 sigma
    assert abs(mean_up - frac) < 5.6e-3
    # exact unbiasedness by enumeration for small shifts
    if shift <= 10:
        all_u = np.arange(0, 2**24, 2 ** (24 - shift), dtype=np.int64)  # one u per bucket
        r = (2**shift) // 3
        ups = (ops.shift_round(np.full(all_u.shape, r), shift, "stochastic", u24=all_u)).sum()
        assert ups == r  # one u per bucket of width 2**(24-shift): exactly r of 2**shift round up


def test_quantize_multiplier_error_bound_and_power_of_two():
    for real in [1e-6, 0.001, 0.1, 0.3333, 0.5, 0.75, 1.0, 3.7, 1234.5]:
        for mb in (8, 16, 31):
            m, s = ops.quantize_multiplier(real, mb)
            assert 2 ** (mb - 1) <= m < 2**mb
            assert abs(Fraction(m, 1) * Fraction(2) ** -s - Fraction(real)) <= Fraction(real) * Fraction(1, 2**mb)
    assert ops.quantize_multiplier(2.0**-10) == (2**30, 40)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ops.max_int(True, False, 0),
        lambda: ops.shift_round(np.array([1]), -1, "floor"),
        lambda: ops.shift_round(np.array([1]), 1, "up"),
        lambda: ops.shift_round(np.array([1]), 1, "stochastic"),
        lambda: ops.quantize_multiplier(0.0),
        lambda: ops.quantize_multiplier(float("nan")),
        lambda: ops.requantize(np.array([2**40]), 2**30, 0, "floor"),
        lambda: ops.overflow(np.array([1]), 8, True, "clip"),
    ],
)
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(2, 32), st.booleans())
def test_wrap_is_modular_and_saturate_bounded(x, bits, signed):
    w = ops.wrap(x, bits, signed)
    assert (w - x) % 2**bits == 0
    s = ops.saturate(x, bits, signed)
    assert ops.min_int(signed, False, bits) <= s <= ops.max_int(signed, False, bits)
    assert ops.min_int(signed, False, bits) <= w <= ops.max_int(signed, False, bits)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**20), 2**20), min_size=2, max_size=20), st.integers(4, 16))
def test_wrap_of_sum_equals_sum_of_wraps(xs, bits):
    assert ops.wrap(sum(xs), bits, True) == ops.wrap(sum(ops.wrap(x, bits, True) for x in xs), bits, True)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40), st.integers(0, 20),
       st.sampled_from(["nearest_even", "floor"]))
def test_shift_round_monotone(a, b, shift, mode):
    lo, hi = min(a, b), max(a, b)
    assert ops.shift_round(lo, shift, mode) <= ops.shift_round(hi, shift, mode)
