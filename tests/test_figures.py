"""README figures generated from one run's results.json (tracks.harness.figures)."""
from __future__ import annotations

import json

import pytest

from tracks.harness import figures

RES = {"suite": {"argv": ["run_suite.py", "--all"], "commit": "abc123", "started": "t0", "finished": "t1",
                 "seeds": [0, 1, 2], "quick": False,
                 "machine": {"cpu": "AMD EPYC", "logical_cores": 2, "memory_gib": 23.5, "os": "Linux",
                             "python": "3.11", "versions": {"torch": "2.13.0+cpu"}, "gpu": None}},
       "tracks": [{"id": 25, "name": "MNIST", "variant": "full", "passed": False, "seconds": 600.0,
                   "criteria": [{"metric": "m_margin", "op": ">=", "threshold": 0.0, "value": -0.0024,
                                 "passed": False}],
                   "metrics": {"mnist_test_acc_eqprop": 0.9826, "m_margin": -0.0024}}]}


def test_render_names_run_machine_criteria_and_key_metrics(monkeypatch):
    monkeypatch.setitem(figures.KEY_METRICS, 25, ("mnist_test_acc_eqprop", "renamed_metric"))
    missing: list[str] = []
    block = figures.render(RES, "docs/results/x/report.md", missing)
    assert "commit abc123" in block and "0/1 tracks passed" in block and "AMD EPYC (2 logical cores)" in block
    row = block.splitlines()[-1]
    assert row.startswith("| [25](docs/results/x/report.md#track-25) MNIST | full | **FAIL** | 10.0 min |")
    assert "0/1 criteria met: m_margin = -0.0024 (need >= 0, **failed**)" in row and "mnist_test_acc_eqprop = 0.9826" in row
    assert missing == ["track 25: renamed_metric"]  # a renamed metric is reported, not silently dropped


def test_write_replaces_only_the_marked_block(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(RES))
    md = tmp_path / "README.md"
    md.write_text(f"before\n{figures.START}\nold\n{figures.END}\nafter\n")
    assert figures.main([str(run), "--write", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text and "commit abc123" in text
    md.write_text("no markers\n")
    assert figures.main([str(run), "--write", str(md)]) == 2
    assert "no <!-- run-figures:start -->" in capsys.readouterr().err and md.read_text() == "no markers\n"


@pytest.mark.parametrize("content", [None, "{not json"])
def test_bad_run_folder_is_a_clear_error(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    assert figures.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert ("not found" in err) if content is None else ("not valid JSON" in err)
