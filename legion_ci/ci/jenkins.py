"""Jenkins: detected by JENKINS_URL. The shared library reads the JSON document and publishes
the reports itself, so the host adds only the reproduce line."""

from __future__ import annotations

from collections.abc import Mapping

from legion_ci.ci import terminal

NAME = "jenkins"
SHOWS_REPRODUCE = True


def detect(env: Mapping[str, str]) -> bool:
    return bool(env.get("JENKINS_URL"))


write_outputs = terminal.write_outputs
write_summary = terminal.write_summary
annotate = terminal.annotate
guard = terminal.guard
