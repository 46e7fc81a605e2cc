"""Runs inside the image's build (its own Python, standard library only): the installed
packages' own test suites taken out of the image's environment.

numpy, scipy, pandas and scikit-learn ship their test suites inside the package (numpy/tests,
scipy/*/tests, pandas/tests, sklearn/*/tests): about 100 MB of source and more once compiled,
close to a third of what the image added to its base, and a model server never imports them.
Only a folder named `tests` inside an installed package goes (a top-level `tests` package,
`testing` helpers such as numpy.testing, and anything reached through a symlink stay). The
package stage's `keepTestSuites: true` leaves the environment as pip installed it.

    python -I -m legion_ci.packaging.slim_venv /opt/legion/venv/lib
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SUITE_DIR = "tests"


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def test_suites(site_packages: Path) -> list[Path]:
    """Every `tests` folder below a top-level package folder of `site_packages`, outermost
    only, never through a symlink."""
    found: list[Path] = []
    for top in sorted(site_packages.iterdir()):
        if top.is_symlink() or not top.is_dir() or top.name.endswith((".dist-info", ".data")):
            continue
        for dirpath, dirnames, _files in os.walk(top):
            dirnames.sort()
            for name in list(dirnames):
                path = Path(dirpath) / name
                if path.is_symlink():
                    dirnames.remove(name)
                elif name == SUITE_DIR:
                    found.append(path)
                    dirnames.remove(name)  # nothing below it is looked at again
    return found


def slim(lib: Path) -> dict[str, int]:
    """Remove the test suites under every site-packages in `lib`: bytes removed per package."""
    removed: dict[str, int] = {}
    for site_packages in sorted(lib.glob("python*/site-packages")):
        for suite in test_suites(site_packages):
            package = suite.relative_to(site_packages).parts[0]
            removed[package] = removed.get(package, 0) + _size(suite)
            shutil.rmtree(suite)
    return removed


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m legion_ci.packaging.slim_venv VENV_LIB_DIR", file=sys.stderr)
        return 2
    removed = slim(Path(argv[0]))
    if not removed:
        print("image: no package test suites to leave out")
        return 0
    biggest = sorted(removed, key=lambda name: (-removed[name], name))
    listed = ", ".join(f"{name} {removed[name] / 1e6:.1f} MB" for name in biggest)
    print(
        f"image: left out the packages' own test suites, {sum(removed.values()) / 1e6:.1f} MB"
        f" ({listed}): "
        "never imported by the server (arguments.keepTestSuites: true keeps them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
