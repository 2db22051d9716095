"""The wheel holds every module of the source tree (a non-editable install must not lose a subpackage).

The wheel is built from a clean copy of the sources (no stale ``build/`` folder can hide an omission),
with the build backend already in the venv (``--no-build-isolation``: no index needed, about 2 s).
"""
import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("quant", "models", "hwsim", "exports", "tracks")
TOP_FILES = ("pyproject.toml", "README.md", "run_suite.py")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def _source_modules(root: Path) -> set[str]:
    """Every ``.py`` file under the package roots, plus ``run_suite.py``, as wheel member names."""
    out = {"run_suite.py"}
    for pkg in PACKAGE_ROOTS:
        for p in (root / pkg).rglob("*.py"):
            if "__pycache__" not in p.parts:
                out.add(p.relative_to(root).as_posix())
    return out


def _source_packages(root: Path) -> set[str]:
    """Every folder with an ``__init__.py`` under the package roots, dotted."""
    return {".".join(p.parent.relative_to(root).parts)
            for pkg in PACKAGE_ROOTS for p in (root / pkg).rglob("__init__.py")
            if "__pycache__" not in p.parts}


def _copy_sources(dst: Path) -> Path:
    dst.mkdir()
    for name in TOP_FILES:
        shutil.copy2(ROOT / name, dst / name)
    for pkg in PACKAGE_ROOTS:
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=_IGNORE)
    return dst


def _build_wheel(src: Path, out: Path) -> zipfile.ZipFile:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"pip wheel failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    wheels = list(out.glob("eqprop_hwsim-*.whl"))
    assert len(wheels) == 1, wheels
    return zipfile.ZipFile(wheels[0])


def _missing(src: Path, whl: zipfile.ZipFile) -> tuple[set[str], set[str]]:
    names = set(whl.namelist())
    missing_pkgs = {p for p in _source_packages(src) if p.replace(".", "/") + "/__init__.py" not in names}
    return missing_pkgs, _source_modules(src) - names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = _copy_sources(tmp_path_factory.mktemp("pkg") / "src")
    return src, _build_wheel(src, tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_every_package_and_module(wheel):
    src, whl = wheel
    assert "hwsim.spiking" in _source_packages(src)  # the subpackage a fixed list once lost
    missing_pkgs, missing_mods = _missing(src, whl)
    assert not missing_pkgs, f"packages missing from the wheel: {sorted(missing_pkgs)}"
    assert not missing_mods, f"modules missing from the wheel: {sorted(missing_mods)}"
    assert not [n for n in whl.namelist() if n.startswith("tests/")]


def test_wheel_holds_the_data_files_the_code_reads(wheel):
    # the tuned recipes: without them a non-editable install fails Tracks 25 and 41 ("unknown recipe")
    src, whl = wheel
    studies = {p.relative_to(src).as_posix() for p in (src / "tracks/shared/tuning").glob("*.json")}
    assert studies, "no tuned recipes in the source tree"
    assert not studies - set(whl.namelist()), f"data files missing from the wheel: {sorted(studies - set(whl.namelist()))}"


def test_wheel_metadata_entry_point_and_license(wheel):
    _, whl = wheel
    entry = next(n for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "eqprop-hwsim = run_suite:main" in whl.read(entry).decode()
    meta = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta
    assert "Requires-Dist: torch==2.13.0" in meta


def test_check_catches_an_omitted_subpackage(tmp_path):
    """The check above fails when the package list is fixed by hand (as it once was)."""
    src = _copy_sources(tmp_path / "src")
    pyproject = (src / "pyproject.toml").read_text()
    start = pyproject.index("[tool.setuptools.packages.find]")
    end = pyproject.index("\n[", start + 1)
    fixed = 'packages = ["quant", "models", "hwsim", "exports", "tracks"]\n'
    pyproject = pyproject[:start] + pyproject[end + 1:]
    pyproject = pyproject.replace("[tool.setuptools]\n", "[tool.setuptools]\n" + fixed)
    (src / "pyproject.toml").write_text(pyproject)
    missing_pkgs, missing_mods = _missing(src, _build_wheel(src, tmp_path / "wheel"))
    assert "hwsim.spiking" in missing_pkgs
    assert any(m.startswith("hwsim/spiking/") for m in missing_mods)


def test_run_suite_defines_the_entry_point():
    tree = ast.parse((ROOT / "run_suite.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
