"""The package stage's wheel download: a summary on the console, pip's whole output (its
command with every --platform flag, each wheel it saved) only in the stage log file."""

from __future__ import annotations

import io
from pathlib import Path

from legion_ci.packaging import wheelhouse
from legion_ci.processes import StageLog


def test_pip_download_is_summarised_on_the_console_and_kept_whole_in_the_log(
    tmp_path: Path,
) -> None:
    # An air-gapped wheelhouse holding legion-ci's own wheel (no dependencies): offline.
    source = tmp_path / "wheels"
    wheelhouse.legion_ci_wheel(source)
    console = io.StringIO()
    log = StageLog(tmp_path / "package.log", echo=console)
    try:
        folder = wheelhouse.download(["legion-ci"], python_version="3.11", log=log, source=source)
    finally:
        log.close()
    assert [p.name for p in folder.glob("*.whl")] == [p.name for p in source.glob("*.whl")]
    shown = console.getvalue().splitlines()
    assert len(shown) <= 3, shown
    assert "--platform" not in console.getvalue()
    summary = [line for line in shown if "requirements ->" in line]
    assert len(summary) == 1
    assert summary[0].startswith(f"wheelhouse: 1 requirements -> 1 wheels from {source}, ")
    assert summary[0].endswith(" s") and " MB in " in summary[0]
    text = (tmp_path / "package.log").read_text()
    command = [line for line in text.splitlines() if line.startswith("$ ") and "pip" in line]
    assert len(command) == 1 and command[0].count("--platform") == len(wheelhouse.platform_tags())
    assert "Saved" in text or "legion_ci-" in text.split(command[0], 1)[1]
    assert all(line in text for line in shown)  # the log file has the summary too


def test_a_cached_wheelhouse_prints_one_line(tmp_path: Path) -> None:
    source = tmp_path / "wheels"
    wheelhouse.legion_ci_wheel(source)
    for _ in range(2):
        console = io.StringIO()
        log = StageLog(tmp_path / "package.log", echo=console)
        try:
            wheelhouse.download(["legion-ci"], python_version="3.11", log=log, source=source)
        finally:
            log.close()
    assert console.getvalue().splitlines() == [
        line
        for line in console.getvalue().splitlines()
        if "(cached for these requirements)" in line
    ]
