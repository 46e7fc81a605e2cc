"""The shared library and the example Jenkinsfiles pass npm-groovy-lint (CodeNarc) with the
library's own configuration (jenkins/.groovylintrc.json): no error, no warning."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from jenkins_support import JAVA_HOME, REPO

CACHE = Path(os.environ.get("LEGION_CI_CI_CACHE", Path.home() / ".cache" / "legion-ci-ci"))
LINT = CACHE / "npm-groovy-lint" / "bin" / "npm-groovy-lint"  # scripts/setup.d/30-jenkins.sh


def test_library_lints_clean() -> None:
    proc = subprocess.run(
        [str(LINT), "--noserver", "--output", "json", "--failon", "warning"],
        cwd=REPO / "jenkins",
        env={**os.environ, "JAVA_HOME": JAVA_HOME},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(proc.stdout)
    problems = [
        f"{Path(name).name}:{e['line']}: {e['rule']}: {e['msg']}"
        for name, entry in report["files"].items()
        for e in entry["errors"]
        if e["severity"] in ("error", "warning")
    ]
    assert problems == []
    assert proc.returncode == 0, proc.stderr
    linted = {Path(name).relative_to(REPO / "jenkins").as_posix() for name in report["files"]}
    expected = {
        p.relative_to(REPO / "jenkins").as_posix()
        for p in (REPO / "jenkins").rglob("*")
        if p.suffix == ".groovy" or p.name == "Jenkinsfile"
    }
    assert report["summary"]["totalFilesLinted"] == len(expected) >= 11  # vars, src, examples
    assert linted <= expected
