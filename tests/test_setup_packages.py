"""The set-up's Debian packages: one declaration, installable together on this machine.

scripts/setup.d/system-packages.tsv lists every package the set-up may install; this simulates
installing all of them here (`apt-get install -s`: no root, nothing changes), whatever the
machine already has, so a package that conflicts with the machine's own (Debian's `npm` beside
NodeSource's `nodejs`) fails here instead of on the first new machine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "scripts" / "setup.d" / "system-packages.tsv"
SCRIPTS = [*sorted((ROOT / "scripts").rglob("*.sh")), ROOT / ".ci" / "run"]


def declared() -> dict[str, list[str]]:
    """tool -> its packages, in the order the set-up tries them."""
    table: dict[str, list[str]] = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tool, _check, packages, *_used_by = line.split()
        table[tool] = packages.split("|")
    return table


def simulate(*packages: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "install", "-s", "-qq", "--no-install-recommends", *packages],
        capture_output=True,
        text=True,
        check=False,
    )


def choose(packages: list[str]) -> str | None:
    """What scripts/lib/apt.sh would install: the first package apt accepts here."""
    return next((pkg for pkg in packages if simulate(pkg).returncode == 0), None)


def test_every_declared_package_installs_here_together():
    table = declared()
    assert len(table) >= 10, "the declaration lost its rows"
    # A tool with one package needs no choice: the simulation of all of them together below
    # refuses it if it cannot be installed. Only alternatives are simulated one by one.
    chosen = {
        tool: packages[0] if len(packages) == 1 else choose(packages)
        for tool, packages in table.items()
    }
    refused = {tool: table[tool] for tool, pkg in chosen.items() if pkg is None}
    assert not refused, f"none of these tools' packages can be installed on this machine: {refused}"
    together = simulate(*sorted(set(chosen.values())))
    if together.returncode != 0:
        # Name the packages that apt refuses even alone, then apt's own words.
        alone = [pkg for pkg in sorted(set(chosen.values())) if simulate(pkg).returncode != 0]
        raise AssertionError(
            f"apt-get install -s refuses {alone or 'the combination'} on this machine: "
            + (together.stdout + together.stderr).strip()[-1500:]
        )


def test_scripts_install_debian_packages_only_through_the_declaration():
    table = declared()
    for script in SCRIPTS:
        text = script.read_text(encoding="utf-8")
        rel = script.relative_to(ROOT)
        if rel.as_posix() != "scripts/lib/apt.sh":
            assert not re.search(r"apt-get\s+(-\S+\s+)*install", text), (
                f"{rel} installs with apt-get itself; use need_tools from scripts/lib/apt.sh"
            )
        for call in re.findall(r"^\s*(?:need_tools|install_tool)\s+([^\n#]+)", text, re.M):
            unknown = [tool for tool in call.split() if tool not in table]
            assert not unknown, f"{rel}: {unknown} not in {TABLE.relative_to(ROOT)}"


def test_every_pip_install_in_the_set_up_is_pinned():
    # Either constraints.txt or a requirements file of exact pins (Airflow's venv).
    for script in SCRIPTS:
        if script.name == "refresh-constraints.sh":  # it makes the pins
            continue
        for line in script.read_text(encoding="utf-8").splitlines():
            if re.search(r"(-m |bin/)pip install\b", line) and "--upgrade pip" not in line:
                assert "-c constraints.txt" in line or re.search(r"-r\s+\S*requirements", line), (
                    f"{script.relative_to(ROOT)}: unpinned pip install: {line.strip()}"
                )
