"""Tiny Shakespeare for character-level language modelling (Track 37).

``load_tiny_shakespeare(data_dir)`` reads ``<root>/tinyshakespeare/input.txt`` (``<root>`` the
``data_dir`` argument, else ``$EQPROP_DATA``; the file is never downloaded), checks its size and
MD5 against the canonical copy (karpathy/char-rnn, 1,115,394 bytes) and returns the text.
:func:`char_split` builds the character vocabulary (sorted characters of the whole text, 65 for Tiny
Shakespeare) and splits the *encoded* text by position: the first 90 % for training, the last 10 %
for validation (no shuffling across the boundary).

>>> v = CharVocab.from_text("abca")
>>> v.chars, v.encode("cab").tolist(), v.decode([2, 0])
('abc', [2, 0, 1], 'ca')
>>> tr, va, voc = char_split("abcdefghij", val_fraction=0.1)
>>> len(tr), len(va), voc.decode(va)
(9, 1, 'j')
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ENV_DATA, DataError

SHAKESPEARE_SIZE = 1115394
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
SHAKESPEARE_REL = Path("tinyshakespeare") / "input.txt"


def shakespeare_path(data_dir: str | os.PathLike | None = None) -> Path:
    """The path of ``input.txt`` under ``data_dir`` or ``$EQPROP_DATA``; :class:`DataError` if absent."""
    roots = []
    if data_dir is not None:
        roots.append(("data_dir argument / --data-dir", Path(data_dir)))
    if os.environ.get(ENV_DATA):
        roots.append((f"${ENV_DATA}", Path(os.environ[ENV_DATA])))
    for _, root in roots:
        for cand in (root / SHAKESPEARE_REL, root / "input.txt"):
            if cand.is_file():
                return cand
    tried = "; ".join(f"{o}: {r / SHAKESPEARE_REL}" for o, r in roots) or "(no data_dir and $EQPROP_DATA unset)"
    raise DataError(f"Tiny Shakespeare not found (tried {tried}). Fix: put karpathy/char-rnn's "
                    f"data/tinyshakespeare/input.txt ({SHAKESPEARE_SIZE} bytes) at <root>/{SHAKESPEARE_REL} and "
                    f"set {ENV_DATA}=<root> or pass --data-dir <root>.")


def load_tiny_shakespeare(data_dir: str | os.PathLike | None = None, *, verify: bool = True) -> str:
    """The Tiny Shakespeare text, checked for size and MD5 (``verify``)."""
    path = shakespeare_path(data_dir)
    raw = path.read_bytes()
    if verify:
        if len(raw) != SHAKESPEARE_SIZE or hashlib.md5(raw).hexdigest() != SHAKESPEARE_MD5:
            raise DataError(f"{path}: {len(raw)} bytes, md5 {hashlib.md5(raw).hexdigest()}; expected the canonical "
                            f"Tiny Shakespeare ({SHAKESPEARE_SIZE} bytes, md5 {SHAKESPEARE_MD5}). Fix: replace it with "
                            "karpathy/char-rnn's data/tinyshakespeare/input.txt, unmodified.")
    return raw.decode("ascii")


@dataclass(frozen=True)
class CharVocab:
    """Character vocabulary: ``chars`` sorted; ids are positions in it."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        table = {c: i for i, c in enumerate(self.chars)}
        bad = sorted(set(text) - set(table))
        if bad:
            raise ValueError(f"characters {bad!r} are not in the vocabulary ({self.size} characters); "
                             "build the vocabulary from a text that contains them")
        return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def char_split(text: str, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, CharVocab]:
    """``(train_ids, val_ids, vocab)``: the first ``1 - val_fraction`` of the text (by position) for
    training, the rest for validation; the vocabulary covers the whole text."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    cut = int(round(len(ids) * (1.0 - val_fraction)))
    return ids[:cut], ids[cut:], vocab


def unigram_bits(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy (bits per character) of the unigram distribution of ``ids`` (add-one smoothed)."""
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def sample_windows(ids: np.ndarray, n: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random windows: inputs ``ids[i:i+length]`` and next-character targets ``ids[i+1:i+length+1]``."""
    if len(ids) < length + 2:
        raise ValueError(f"text of {len(ids)} characters is too short for windows of {length}")
    start = rng.integers(0, len(ids) - length - 1, size=n)
    idx = start[:, None] + np.arange(length)[None, :]
    return ids[idx], ids[idx + 1]
