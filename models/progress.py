"""One progress helper for every long loop: a bar on a terminal, a short line now and then in a log.

On a terminal (the stream is a TTY) it is a :mod:`tqdm` bar. When the output is not a terminal (a
log file, a cluster job) a bar would write every frame into one line of carriage returns; instead a
short line ``desc: 120/600 (20 %), 35 s, ~2.3 min left`` is written at most every ``interval_s``
seconds (default 30, environment ``EQPROP_PROGRESS_INTERVAL``) and once at the end. The caller
controls it: ``enabled=False`` shows nothing; the environment variable ``EQPROP_PROGRESS`` forces
``bar``, ``lines`` or ``off`` (default ``auto``).

Lowest layer that tracks/, hwsim/ and exports/ may import (``quant`` imports nothing of ours).

>>> import io
>>> buf = io.StringIO()  # not a TTY: periodic lines
>>> total = 0
>>> for i in progress(range(3), desc="demo", stream=buf, interval_s=0):
...     total += i
>>> buf.getvalue().splitlines()[-1].startswith("demo: 3/3 (100 %)")
True
>>> with progress(total=2, enabled=False) as bar:
...     bar.update(2)
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

MODES = ("auto", "bar", "lines", "off")
DEFAULT_INTERVAL_S = 30.0


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")


class Progress:
    """Iterable wrapper and counter; use :func:`progress` to make one."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, enabled: bool, stream: TextIO,
                 interval_s: float, leave: bool):
        self.iterable, self.desc, self.n = iterable, desc, 0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        mode = os.environ.get("EQPROP_PROGRESS", "auto").strip().lower()
        if mode not in MODES:
            mode = "auto"
        if not enabled or mode == "off":
            mode = "off"
        elif mode == "auto":
            mode = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
        self.mode, self.stream, self.interval_s = mode, stream, interval_s
        self._t0 = self._last = time.monotonic()
        self._bar = None
        self._closed = False
        self._printed_n = 0
        if mode == "bar":
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, leave=leave, file=stream)

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("progress(total=...) without an iterable is not iterable; call update(n)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished items."""
        self.n += n
        if self.mode == "bar":
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.interval_s:
                self._last = now
                self._line()

    def _line(self, final: bool = False) -> None:
        el = time.monotonic() - self._t0
        if self.total:
            pct = 100.0 * self.n / self.total
            left = (f", ~{_fmt_s(el / self.n * (self.total - self.n))} left"
                    if 0 < self.n < self.total else "")
            msg = f"{self.desc}: {self.n}/{self.total} ({pct:.0f} %), {_fmt_s(el)}{left}"
        else:
            msg = f"{self.desc}: {self.n}, {_fmt_s(el)}"
        self.stream.write(msg + (" done" if final else "") + "\n")
        self.stream.flush()
        self._printed_n = self.n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.mode == "bar":
            self._bar.close()
        elif self.mode == "lines" and self.n and self.n != self._printed_n:
            self._line(final=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", enabled: bool = True,
             stream: TextIO | None = None, interval_s: float | None = None, leave: bool = False) -> Progress:
    """Progress over ``iterable`` (iterate it) or over ``total`` items (call ``update(n)``; use as a
    context manager). ``stream`` defaults to ``sys.stderr``; ``interval_s`` (lines mode) to
    ``EQPROP_PROGRESS_INTERVAL`` or 30 s."""
    if interval_s is None:
        try:
            interval_s = float(os.environ.get("EQPROP_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S))
        except ValueError:
            interval_s = DEFAULT_INTERVAL_S
    return Progress(iterable, total, desc, enabled, sys.stderr if stream is None else stream, interval_s, leave)


__all__ = ["progress", "Progress"]
