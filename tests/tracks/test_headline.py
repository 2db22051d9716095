"""The headline-model helpers: one cache key for every track, parallel trainings identical to serial."""
from __future__ import annotations

import pytest
import torch

from tracks.harness.base import TrackContext
from tracks.shared import headline

SMALL = dict(n_train=300, n_val=100, n_test=200)


def _ctx(path, seeds=(0, 1)):
    return TrackContext(out_dir=path, seeds=seeds, progress=False)


def test_parallel_trainings_equal_serial_ones_bit_for_bit(tmp_path):
    jobs = [("mnist", "eqprop", 0), ("mnist", "ffbp", 1)]
    par = _ctx(tmp_path / "par")
    recs = headline.prefetch(par, jobs, 1, workers=2, **SMALL)
    assert sorted((r["method"], r["seed"]) for r in recs) == [("eqprop", 0), ("ffbp", 1)]
    assert all(r["events"]["trained"] == 1 for r in recs)
    assert headline.prefetch(par, jobs, 1, workers=2, **SMALL) == []  # all cached now: nothing to do
    ser = _ctx(tmp_path / "ser")
    for ds, method, seed in jobs:
        data = headline.load_split(ds, par, **SMALL)
        a, _, _ = headline.train_method(ds, method, seed, data, 1, par)  # loaded from the workers' entries
        b, _, _ = headline.train_method(ds, method, seed, data, 1, ser)  # trained here, in order
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert par.model_cache.stats() == {"trained": 0, "loaded": 2, "corrupt": 0}
    assert ser.model_cache.stats()["trained"] == 2


def test_prefetch_does_nothing_with_one_worker_or_one_job(tmp_path):
    ctx = _ctx(tmp_path)
    assert headline.prefetch(ctx, [("mnist", "ffbp", 0), ("mnist", "ffbp", 1)], 1, workers=1, **SMALL) == []
    assert headline.prefetch(ctx, [("mnist", "ffbp", 0)], 1, workers=2, **SMALL) == []
    assert not ctx.model_cache.root.exists()


def test_bad_inputs_name_the_problem(tmp_path):
    ctx = _ctx(tmp_path)
    with pytest.raises(ValueError, match="workers=0"):
        headline.prefetch(ctx, [("mnist", "ffbp", 0)], 1, workers=0)
    with pytest.raises(ValueError, match="dataset 'cifar10'"):
        headline.load_split("cifar10", ctx)
    with pytest.raises(ValueError, match="method 'sgd'"):
        headline.make_net("sgd", 0)
