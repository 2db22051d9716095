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
