"""models.progress: a bar on a terminal, short periodic lines in a log, nothing when disabled."""
import io

from models.progress import progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.delenv("EQPROP_PROGRESS", raising=False)
    buf = io.StringIO()
    with progress(total=1000, desc="train", stream=buf, interval_s=3600) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = buf.getvalue().splitlines()
    assert lines == ["train: 1000/1000 (100 %), 0 s done"]  # one short line, no carriage returns
    assert "\r" not in buf.getvalue()


def test_bar_on_a_terminal_and_off_switches(monkeypatch):
    monkeypatch.delenv("EQPROP_PROGRESS", raising=False)
    tty = _Tty()
    assert sum(progress(range(5), desc="x", stream=tty)) == 10
    assert "\r" in tty.getvalue() and "x:" in tty.getvalue()  # tqdm frames (cleared at the end: leave=False)
    quiet = io.StringIO()
    assert list(progress(range(3), stream=quiet, enabled=False)) == [0, 1, 2] and quiet.getvalue() == ""
    monkeypatch.setenv("EQPROP_PROGRESS", "off")
    assert list(progress(range(3), stream=tty, interval_s=0)) == [0, 1, 2]
    monkeypatch.setenv("EQPROP_PROGRESS", "lines")
    forced = _Tty()
    list(progress(range(2), desc="y", stream=forced, interval_s=0))
    assert forced.getvalue().splitlines()[-1].startswith("y: 2/2 (100 %)")
