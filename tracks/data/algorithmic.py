"""Seeded generators of the algorithmic-reasoning tasks of Track 39 (plan Exp. 3.5).

Every task is a sequence of discrete input tokens with aligned outputs (an encoder formulation: the
model sees the whole input and writes every answer token in place):

* ``parity``: ``N`` random bits; one label, the XOR of the bits. Difficulty: the number of 1s.
* ``addition``: two ``N``-digit numbers ``a``, ``b`` written least significant digit first, digit
  pairs aligned: token ``i`` is ``10 a_i + b_i`` (``i < N``), then one pad token (100); output ``i``
  is digit ``i`` of ``a + b`` (``N + 1`` digits, the last the final carry). Difficulty: the longest
  carry chain (consecutive positions that receive a carry).
* ``copying``: ``N`` symbols of an 8-letter alphabet; output ``i`` = input ``i`` (aligned copy: the
  answer must survive the loop token by token; the plan's delayed read-then-write copy is not
  implemented). Difficulty: none (NaN).
* ``sorting``: ``N`` digits 0..9; output ``i`` = the ``i``-th smallest. Difficulty: the number of
  inversions.

:func:`check_batch` recomputes the inputs and answers from the raw problem with independent
reference code (Python integers, ``sorted``) and counts instances whose input tokens or answers
differ: a generator that writes the answer into the input (``leak=True``, the broken path) or
computes a wrong answer fails it.

>>> rng = np.random.default_rng(0)
>>> b = generate("addition", 2, 3, rng)
>>> b.x.shape, b.y.shape, check_batch("addition", b)
((2, 4), (2, 4), 0)
>>> check_batch("addition", generate("addition", 4, 3, rng, leak=True)) > 0
True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("parity", "addition", "copying", "sorting")
ALPHABET = 8
PAD = 100


@dataclass(frozen=True)
class TaskInfo:
    vocab: int        # input tokens
    n_out: int        # output classes
    readout: str      # "mean" (one label) or "token" (one answer per position)


INFO = {"parity": TaskInfo(2, 2, "mean"), "addition": TaskInfo(101, 10, "token"),
        "copying": TaskInfo(ALPHABET, ALPHABET, "token"), "sorting": TaskInfo(10, 10, "token")}


@dataclass
class TaskBatch:
    """Inputs ``x`` ``(B, L)`` int64, answers ``y`` (``(B,)`` or ``(B, L)``), per-instance ``difficulty``
    ``(B,)`` float and the raw ``problem`` (bits / digits; for addition ``(B, 2, N)``)."""

    x: np.ndarray
    y: np.ndarray
    difficulty: np.ndarray
    problem: np.ndarray


def seq_len(task: str, n: int) -> int:
    """Input length of a problem of size ``n``."""
    return n + 1 if task == "addition" else n


def _check(task: str, n: int) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r}; allowed: {TASKS}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"problem size n={n!r} must be an int >= 1")


def longest_carry_chain(a: np.ndarray, b: np.ndarray) -> int:
    """Longest run of consecutive digit positions (LSD first) that receive a carry."""
    carry, run, best = 0, 0, 0
    for da, db in zip(a, b):
        run = run + 1 if carry else 0
        best = max(best, run)
        carry = int(da + db + carry >= 10)
    return max(best, run + 1 if carry else best)


def inversions(v: np.ndarray) -> int:
    return int(sum(int(v[i] > v[j]) for i in range(len(v)) for j in range(i + 1, len(v))))


def generate(task: str, batch: int, n: int, rng: np.random.Generator, *, leak: bool = False) -> TaskBatch:
    """``batch`` instances of size ``n`` drawn from ``rng``. ``leak=True`` (broken path) writes the
    (first) answer token into the last input position."""
    _check(task, n)
    if task == "parity":
        p = rng.integers(0, 2, size=(batch, n))
        x, y, diff = p.copy(), p.sum(1) % 2, p.sum(1).astype(np.float64)
    elif task == "addition":
        p = rng.integers(0, 10, size=(batch, 2, n))
        a, b = p[:, 0], p[:, 1]
        x = np.concatenate([10 * a + b, np.full((batch, 1), PAD)], axis=1)
        carry = np.zeros(batch, dtype=np.int64)
        y = np.zeros((batch, n + 1), dtype=np.int64)
        for i in range(n):
            t = a[:, i] + b[:, i] + carry
            y[:, i], carry = t % 10, t // 10
        y[:, n] = carry
        diff = np.array([longest_carry_chain(a[k], b[k]) for k in range(batch)], dtype=np.float64)
    elif task == "copying":
        p = rng.integers(0, ALPHABET, size=(batch, n))
        x, y, diff = p.copy(), p.copy(), np.full(batch, np.nan)
    else:
        p = rng.integers(0, 10, size=(batch, n))
        x, y = p.copy(), np.sort(p, axis=1)
        diff = np.array([inversions(v) for v in p], dtype=np.float64)
    if leak:
        first = y if y.ndim == 1 else y[:, 0]
        x = x.copy()
        x[:, -1] = first % INFO[task].vocab
    return TaskBatch(x.astype(np.int64), y.astype(np.int64), diff, p)


def check_batch(task: str, b: TaskBatch) -> int:
    """Instances whose input tokens or answers differ from an independent reference computed from
    ``b.problem`` (0 for a sound generator)."""
    bad = 0
    for k in range(len(b.x)):
        p = b.problem[k]
        if task == "parity":
            x_ref, y_ref = [int(v) for v in p], [sum(int(v) for v in p) % 2]
        elif task == "addition":
            a, c = p
            x_ref = [10 * int(u) + int(v) for u, v in zip(a, c)] + [PAD]
            total = int("".join(str(int(d)) for d in a[::-1])) + int("".join(str(int(d)) for d in c[::-1]))
            y_ref = [int(ch) for ch in str(total).zfill(len(a) + 1)[::-1]]
        elif task == "copying":
            x_ref = y_ref = [int(v) for v in p]
        else:
            x_ref, y_ref = [int(v) for v in p], sorted(int(v) for v in p)
        y_k = [int(b.y[k])] if b.y.ndim == 1 else [int(v) for v in b.y[k]]
        bad += int([int(v) for v in b.x[k]] != x_ref or y_k != y_ref)
    return bad
