"""Track 39 (algorithmic reasoning): the real path learns copying and its generators pass the
independent reference check; a generator that leaks the answer into the input fails the check."""
import numpy as np
import pytest

import tracks.t39_reasoning as t39
from tracks.data.algorithmic import TASKS, check_batch, generate, inversions, longest_carry_chain
from tracks.harness.base import TrackContext, evaluate

TINY = {"tasks": ["copying", "addition"], "n_train": [6, 3], "n_test": [[6, 9], [3, 5]], "d_model": 16,
        "steps": 80, "n_eval": 64, "n_seeds": 1, "test_steps": 30, "max_settle": 40}


def _run(tmp_path, **over):
    res = t39.run(TrackContext(out_dir=tmp_path, quick=True, progress=False, overrides={**TINY, **over}))
    return res, {r["metric"]: r for r in evaluate(t39.SPEC, res)[1]}


def test_t39_real_path_passes_and_a_leaking_generator_fails(tmp_path):
    res, crit = _run(tmp_path / "real")
    m = res.metrics
    assert crit["generator_check_failures"]["passed"] and crit["eqprop_copying_acc_train_len"]["passed"], m
    assert 0.0 <= m["baseline_addition_acc_n5_mean"] <= 1.0 and m["target_copying_met"] in (0.0, 1.0)
    assert np.isfinite(m["settle_addition_spearman_r_mean"]) and m["plan_success"] in (0.0, 1.0)
    assert (tmp_path / "real" / res.artifacts[0]).stat().st_size > 0
    res_l, crit_l = _run(tmp_path / "leak", leak=True, tasks=["copying"], n_train=[6], n_test=[[6]], steps=5,
                         baseline=False)
    assert res_l.metrics["generator_check_failures"] > 0 and not crit_l["generator_check_failures"]["passed"]


@pytest.mark.parametrize("task", TASKS)
def test_generators_are_seeded_and_sound(task):
    a = generate(task, 50, 6, np.random.default_rng(3))
    b = generate(task, 50, 6, np.random.default_rng(3))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and check_batch(task, a) == 0
    wrong = generate(task, 50, 6, np.random.default_rng(3))
    wrong.y[0] = (wrong.y[0] + 1) % 2 if task == "parity" else wrong.y[0]
    if task != "parity":
        wrong.y[0, -1] = (wrong.y[0, -1] + 1) % 10
    assert check_batch(task, wrong) == 1  # a wrong answer is caught


def test_difficulty_measures():
    assert longest_carry_chain(np.array([9, 9, 9, 0]), np.array([1, 0, 0, 0])) == 3
    assert longest_carry_chain(np.array([1, 2]), np.array([1, 2])) == 0
    assert inversions(np.array([3, 1, 2])) == 2
    with pytest.raises(ValueError, match="task="):
        generate("division", 2, 3, np.random.default_rng(0))
