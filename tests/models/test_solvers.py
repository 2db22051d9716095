import pytest
import torch

from models.solvers import relax


def test_fixed_point_reports_per_sample_steps():
    # contraction factors differ per sample -> different steps to converge
    k = torch.tensor([[0.1], [0.5], [0.9]], dtype=torch.float64)
    s, info = relax(lambda s: [k * s[0] + 1.0], [torch.zeros(3, 1, dtype=torch.float64)], max_steps=1000, tol=1e-10)
    assert info.steps[0] < info.steps[1] < info.steps[2]
    torch.testing.assert_close(s[0], 1.0 / (1.0 - k), rtol=0, atol=1e-8)
    assert bool(info.converged.all())


def test_limit_cycle_detected_and_damping_fixes_it():
    flip = lambda s: [1.0 - s[0]]  # period 2 from 0: 0 -> 1 -> 0
    s, info = relax(flip, [torch.zeros(2, 3)], max_steps=20, tol=1e-6)
    assert not bool(info.converged.any()) and bool(info.cycling.all())
    s, info = relax(flip, [torch.zeros(2, 3)], max_steps=200, tol=1e-6, damping=0.5)
    assert bool(info.converged.all())
    torch.testing.assert_close(s[0], torch.full((2, 3), 0.5))


def test_anderson_agrees_with_fixed_point_and_is_faster():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(8, 8, generator=g, dtype=torch.float64)
    A = 0.95 * A / torch.linalg.matrix_norm(A, ord=2)
    c = torch.randn(4, 8, generator=g, dtype=torch.float64)
    step = lambda s: [torch.tanh(s[0] @ A.t() + c)]
    s1, i1 = relax(step, [torch.zeros(4, 8, dtype=torch.float64)], max_steps=5000, tol=1e-12)
    s2, i2 = relax(step, [torch.zeros(4, 8, dtype=torch.float64)], max_steps=5000, tol=1e-12, method="anderson")
    torch.testing.assert_close(s1[0], s2[0], rtol=0, atol=1e-9)
    assert int(i2.steps.max()) < int(i1.steps.max())


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        relax(lambda s: s, [torch.zeros(1, 1)], max_steps=3, method="newton")
    with pytest.raises(ValueError, match="damping"):
        relax(lambda s: s, [torch.zeros(1, 1)], max_steps=3, damping=1.0)


# ------------------------------------------------------------------ the integer settling loop
def test_iterate_same_diagnostics_on_numpy_and_torch():
    import numpy as np

    from models.solvers import IntRelaxInfo, iterate

    start = np.array([[0, 5], [4, 4], [3, 0]], dtype=np.int64)

    def sweep_np(s, t):
        a = s[0].copy()
        a[0] = np.minimum(a[0] + 1, 4)
        a[2] = 3 - a[2]
        return [a], None

    def sweep_t(s, t):
        a = s[0].clone()
        a[0] = torch.clamp(a[0] + 1, max=4)
        a[2] = 3 - a[2]
        return [a], None

    out = []
    for sweep, s0 in ((sweep_np, [start]), (sweep_t, [torch.from_numpy(start)])):
        s, info = iterate(sweep, s0, max_steps=8, record_trace=True)
        assert isinstance(info, IntRelaxInfo)
        out.append((np.asarray(s[0]), info))
    (a, i), (b, j) = out
    assert np.array_equal(a, b)
    # sample 0: [0,5] -> [1,4] -> ... -> [4,4], unchanged from sweep 5 on; 1: fixed; 2: 0,3 -> 3,0 -> ... (period 2)
    assert i.steps.tolist() == j.steps.tolist() == [5, 1, -1]
    assert i.cycling.tolist() == j.cycling.tolist() == [False, False, True]
    assert i.converged.tolist() == [True, True, False] and i.residual.tolist() == j.residual.tolist() == [0, 0, 3]
    assert i.trace == j.trace and i.n_steps == j.n_steps == 8


def test_iterate_float_tolerance_and_early_exit():
    from models.solvers import iterate

    s, info = iterate(lambda s, t: ([0.5 * s[0] + 1.0], None), [torch.zeros(2, 1, dtype=torch.float64)],
                      max_steps=100, tol=1e-6)
    assert info.n_steps < 30 and bool(info.converged.all()) and info.residual.dtype.kind == "f"
    s, info = iterate(lambda s, t: ([0.5 * s[0] + 1.0], None), [torch.zeros(2, 1, dtype=torch.float64)],
                      max_steps=100, tol=1e-6, early_exit=False)
    assert info.n_steps == 100
