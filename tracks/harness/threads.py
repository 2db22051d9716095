"""The one torch thread limiter of the tracks and the sweep.

On a shared, oversubscribed CPU the small matmuls of these nets run up to 50x faster on one thread
than on two spinning OpenMP threads (measured on the dev machine under load 17), so tracks train
inside ``with torch_threads(1):``.

>>> import torch
>>> before = torch.get_num_threads()
>>> with torch_threads(1):
...     torch.get_num_threads()
1
>>> torch.get_num_threads() == before
True
"""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block; the caller's setting is restored after."""
    import torch

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"torch_threads(n={n!r}): allowed: an int >= 1")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
