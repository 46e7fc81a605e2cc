"""The image's environment without the packages' own test suites (slim_venv, run inside the
image build): only `tests` folders inside an installed package go; the rest stays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from legion_ci.packaging.dockerfile import ImageSpec, render


def _file(path: Path, size: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def _slim(lib: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-m", "legion_ci.packaging.slim_venv", str(lib)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_only_test_suites_inside_packages_are_left_out(tmp_path):
    lib = tmp_path / "lib"
    site = lib / "python3.11" / "site-packages"
    _file(site / "numpy" / "tests" / "test_a.py", 2_000_000)
    _file(site / "numpy" / "_core" / "tests" / "data" / "x.csv", 1_000_000)
    _file(site / "numpy" / "testing" / "__init__.py")  # imported by libraries: stays
    _file(site / "numpy" / "_core" / "multiarray.py")
    _file(site / "sklearn" / "tree" / "tests" / "test_tree.py", 500_000)
    _file(site / "tests" / "__init__.py")  # a top-level package that a wheel named tests
    _file(site / "numpy-2.4.6.dist-info" / "tests" / "RECORD")
    outside = tmp_path / "outside"
    _file(outside / "tests" / "keep.py")
    (site / "linked").symlink_to(outside, target_is_directory=True)
    _file(site / "pkg" / "module.py")
    (site / "pkg" / "shared").symlink_to(outside, target_is_directory=True)

    done = _slim(lib)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "image: left out the packages' own test suites, 3.5 MB (numpy 3.0 MB, sklearn 0.5 MB):"
        " never imported by the server (arguments.keepTestSuites: true keeps them)"
    ]
    assert not (site / "numpy" / "tests").exists()
    assert not (site / "numpy" / "_core" / "tests").exists()
    assert not (site / "sklearn" / "tree" / "tests").exists()
    for kept in (
        "numpy/testing/__init__.py",
        "numpy/_core/multiarray.py",
        "tests/__init__.py",
        "numpy-2.4.6.dist-info/tests/RECORD",
        "pkg/module.py",
    ):
        assert (site / kept).is_file(), kept
    assert (outside / "tests" / "keep.py").is_file()  # never through a symlink

    again = _slim(lib)
    assert again.returncode == 0
    assert again.stdout.strip() == "image: no package test suites to leave out"


def test_a_missing_folder_is_a_usage_error(tmp_path):
    done = _slim(tmp_path / "nope")
    assert done.returncode == 2 and "usage:" in done.stderr


def test_the_dockerfile_slims_unless_asked_to_keep_the_suites():
    spec = ImageSpec("m", "1", "m:1", "base", "legion_ci.whl")
    step = "-m legion_ci.packaging.slim_venv /opt/legion/venv/lib"
    slim = render(spec)
    # Before compileall, so the suites are not compiled only to be deleted.
    assert step in slim and slim.index(step) < slim.index("compileall")
    spec.keep_test_suites = True
    assert step not in render(spec)
