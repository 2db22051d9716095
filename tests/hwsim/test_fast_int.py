"""hwsim.fast_int: the int8 GEMM products equal the numba simulator's exact products, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import quant
from hwsim import fast_int
from hwsim.fast_int import Int8Operand, drive_accumulator, int_mm_exact
from hwsim.fixed_point import FixedPointMLP, exact_matmul
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.train import TrainConfig, train
from tracks.data import load_dataset

N_IMAGES = 64


def _setup():
    """A 784-64-10 EqPropMLP trained briefly on 500 real MNIST images, its int8 copy and 64 test images."""
    x, y = load_dataset("mnist", "train")
    net = EqPropMLP(EqPropConfig(sizes=(784, 64, 10)), seed=0).float()
    train(net, torch.from_numpy(x[:500]), torch.from_numpy(y[:500]),
          TrainConfig(epochs=1, batch_size=100, n_free_steps=15, n_nudge_steps=5), progress=False)
    fp = FixedPointMLP.from_model(net, quant.get_preset("int8"))
    xt, _ = load_dataset("mnist", "test")
    return fp, fp.quantize_input(xt[:N_IMAGES])


@pytest.fixture(scope="module")
def setup():
    return _setup()


def test_drive_matches_simulator(setup):
    fp, codes = setup
    ref = exact_matmul(codes, fp._fwd_t[0], np.float64)  # the simulator's drive product (exact by its bound)
    got = drive_accumulator(fp, codes)
    assert got.dtype == np.int64 and np.array_equal(got, ref.astype(np.int64))
    assert np.array_equal(got, codes @ fp.w_codes[0].T)
    assert np.array_equal(drive_accumulator(fp, codes[:5]), ref[:5].astype(np.int64))  # padded small batch


def test_hidden_and_feedback_products_match_simulator(setup):
    fp, codes = setup
    s, _ = fp.relax(codes, n_steps=20)
    st = fp.spec.state
    assert s[0].max() > 0 and s[1].max() > 0  # real, non-trivial state codes
    h = int_mm_exact(s[0], Int8Operand(fp.w_codes[1]), st.qmin, st.qmax)
    assert np.array_equal(h, exact_matmul(s[0], fp._fwd_t[1], np.float64).astype(np.int64))
    fb = int_mm_exact(s[1], Int8Operand(fp.fb_codes[0]), st.qmin, st.qmax)
    assert np.array_equal(fb, exact_matmul(s[1], fp._fb_t[0], np.float64).astype(np.int64))


def test_extreme_codes_exact():
    w = np.array([[127] * 784, [-127] * 784, list(range(-127, 128)) * 3 + [0] * 19])
    a = np.array([[255] * 784, [0] * 784, [0, 255] * 392] + [[128] * 784] * 20)
    assert np.array_equal(int_mm_exact(a, Int8Operand(w), 0, 255), a @ w.T)


def test_dropping_the_offset_correction_is_caught(setup, monkeypatch):
    fp, codes = setup
    op = Int8Operand(fp.w_codes[0])
    monkeypatch.setattr(op, "rowsum", torch.zeros_like(op.rowsum))  # the "+ o * rowsum(W)" term lost
    assert not np.array_equal(drive_accumulator(fp, codes, op), codes @ fp.w_codes[0].T)
    monkeypatch.setattr(fast_int.torch, "_int_mm", lambda a, b: (a.float() @ b.float()).round().to(torch.int32) + 1)
    assert not np.array_equal(drive_accumulator(fp, codes), codes @ fp.w_codes[0].T)  # a wrong GEMM is caught


def test_bad_input_raises():
    with pytest.raises(ValueError, match="outside int8"):
        Int8Operand(np.array([[200, 0]]))
    op = Int8Operand(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="outside the stated range"):
        int_mm_exact(np.array([[300, 0]]), op, 0, 255)
    with pytest.raises(ValueError, match="more than 256 codes"):
        int_mm_exact(np.array([[3, 0]]), op, 0, 511)
    with pytest.raises(ValueError, match="shape"):
        int_mm_exact(np.array([[1, 2, 3]]), op, 0, 255)
