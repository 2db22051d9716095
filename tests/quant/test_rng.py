"""quant.rng: numpy, torch and numba (njit of the scalar source) agree bit for bit."""
import numba
import numpy as np
import pytest
import torch

from quant import rng
from quant.tolerances import RNG_NORMAL_F64

N = 100_000


@pytest.fixture
def counters():
    rs = np.random.default_rng(3)
    seed = rs.integers(0, 2**32, N)
    step = rs.integers(0, 2**20, N)
    tid = rs.integers(0, 64, N)
    idx = rs.integers(0, 2**31, N)
    return seed, step, tid, idx


@numba.njit
def _nb_hash_all(hash_fn, seed, step, tid, idx):  # pragma: no cover - compiled
    out = np.empty(seed.shape[0], np.int64)
    for i in range(seed.shape[0]):
        out[i] = hash_fn(seed[i], step[i], tid[i], idx[i])
    return out


def test_numpy_torch_numba_python_identical(counters):
    seed, step, tid, idx = counters
    a_np = rng.hash_u32(seed, step, tid, idx)
    a_t = rng.hash_u32(*(torch.as_tensor(c) for c in counters)).numpy()
    hash_nb = numba.njit(rng.hash_u32_scalar)
    a_nb = _nb_hash_all(hash_nb, seed, step, tid, idx)
    assert a_np.dtype == np.int64
    assert np.array_equal(a_np, a_t)
    assert np.array_equal(a_np, a_nb)
    py = [rng.hash_u32_scalar(int(s), int(t), int(d), int(i)) for s, t, d, i in zip(*(c[:2000] for c in counters))]
    assert a_np[:2000].tolist() == py
    assert a_np.min() >= 0 and a_np.max() < 2**32


def test_uniform_u24_range_mean_and_chi_square():
    u = rng.uniform_u24(11, 5, 2, np.arange(N))
    assert u.min() >= 0 and u.max() < 2**24
    # mean of U[0,1): std of the mean is 1/sqrt(12 N) ~ 9.1e-4; 5 sigma
    assert abs(u.mean() / 2**24 - 0.5) < 4.6e-3
    # chi-square over 64 bins (63 dof: mean 63, std 11.2); 63 + 6 sigma
    counts = np.bincount(u >> 18, minlength=64)
    chi2 = ((counts - N / 64) ** 2 / (N / 64)).sum()
    assert chi2 < 130
    # low bits too (the shift must not keep a weak byte)
    chi2_low = ((np.bincount(u & 63, minlength=64) - N / 64) ** 2 / (N / 64)).sum()
    assert chi2_low < 130


def test_counters_decorrelate():
    """Neighbouring steps / tensor ids / seeds give different, uncorrelated streams."""
    base = rng.uniform_u24(0, 0, 0, np.arange(N)).astype(np.float64)
    for other in (rng.uniform_u24(0, 1, 0, np.arange(N)), rng.uniform_u24(0, 0, 1, np.arange(N)),
                  rng.uniform_u24(1, 0, 0, np.arange(N))):
        assert np.mean(base == other) < 1e-3
        assert abs(np.corrcoef(base, other.astype(np.float64))[0, 1]) < 0.02  # 1/sqrt(N)=3e-3
    assert abs(np.corrcoef(base[:-1], base[1:])[0, 1]) < 0.02


def test_normal_f64_paths_agree_and_are_standard():
    idx = np.arange(N)
    z_np = rng.normal_f64(4, 2, 9, idx)
    z_t = rng.normal_f64(4, 2, 9, torch.as_tensor(idx)).numpy()
    np.testing.assert_allclose(z_t, z_np, **RNG_NORMAL_F64)
    z_py = [rng.normal_f64_scalar(4, 2, 9, i) for i in range(1000)]
    np.testing.assert_allclose(z_py, z_np[:1000], **RNG_NORMAL_F64)
    assert abs(z_np.mean()) < 0.02 and abs(z_np.std() - 1.0) < 0.02
    assert abs((np.abs(z_np) < 1.0).mean() - 0.6827) < 0.01


def test_normal_scalar_compiles_in_numba():
    # hwsim's route: jit the hash, jit a normal on top of the jitted hash
    h = numba.njit(rng.hash_u32_scalar)
    import math

    @numba.njit
    def normal_nb(seed, step, tid, i):
        h0 = h(seed, step, tid, 2 * i)
        h1 = h(seed, step, tid, 2 * i + 1)
        return math.sqrt(-2.0 * math.log((h0 + 0.5) / 4294967296.0)) * math.cos(2.0 * math.pi * (h1 / 4294967296.0))

    got = np.array([normal_nb(4, 2, 9, i) for i in range(500)])
    np.testing.assert_allclose(got, rng.normal_f64(4, 2, 9, np.arange(500)), **RNG_NORMAL_F64)
