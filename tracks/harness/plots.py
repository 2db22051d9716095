"""The one figure helper of the tracks: a headless matplotlib figure saved atomically and closed.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "plots", "demo.png")
>>> with figure(path, figsize=(3, 2)) as (fig, axes):
...     _ = axes[0][0].plot([0, 1], [1, 0])
>>> os.path.getsize(path) > 0
True
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def figure(path: str | os.PathLike, *, nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.5, 3.8),
           dpi: int = 120, tight: bool = True, **subplots_kw: Any) -> Iterator[tuple[Any, Any]]:
    """Yield ``(fig, axes)`` (``axes`` a 2-D array, ``squeeze=False``); on a clean exit the figure is
    laid out, written to a temporary name next to ``path`` and renamed; it is always closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **subplots_kw)
    try:
        yield fig, axes
        if tight:
            fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
