"""The README's track table is the registry's (regenerate: python run_suite.py --list --markdown)."""
from pathlib import Path

from tracks.harness.report import track_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_track_table_matches_registry():
    text = README.read_text()
    start, end = text.index("<!-- tracks:start -->"), text.index("<!-- tracks:end -->")
    assert text[start + len("<!-- tracks:start -->"):end].strip() == track_table_markdown().strip()


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    assert "make suite" in text and "make test" in text


def test_readme_run_figures_are_generated_from_the_kept_run():
    """The README's end-to-end figures equal what tracks.harness.figures renders from docs/results/full_run."""
    from tracks.harness import figures

    root = README.parent
    run = root / "docs" / "results" / "full_run"
    expected = figures.replace_block(README.read_text(),
                                     figures.render(figures.load_results(run), "docs/results/full_run/report.md"))
    assert README.read_text() == expected, \
        "README run figures are stale: python -m tracks.harness.figures docs/results/full_run --write README.md"
