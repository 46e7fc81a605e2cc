"""Create or update rendered jobs on a Jenkins controller through python-jenkins. Idempotent:
a job whose configuration already matches is left alone, a different one is reconfigured,
a missing one is created. Credentials come only from the environment."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from legion_ci.errors import EXIT_STAGE_FAILED, InputError, LegionError
from legion_ci.jenkins.jobs import Job

USER_ENV = "JENKINS_USER"
TOKEN_ENV = "JENKINS_API_TOKEN"


class SyncError(LegionError):
    """The Jenkins controller refused or could not be reached (exit 1, like a failed stage)."""

    exit_code = EXIT_STAGE_FAILED


@dataclass(frozen=True)
class SyncResult:
    name: str
    action: str  # created | updated | unchanged


def _canonical(xml: str) -> str:
    """The XML without formatting differences, so an unchanged job compares equal."""
    try:
        root = ET.fromstring(xml.encode("utf-8"))
    except ET.ParseError:
        return xml
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        element.tail = None
    return ET.canonicalize(ET.tostring(root, encoding="unicode"))


def sync_jobs(jobs: list[Job], url: str, timeout: float = 30) -> list[SyncResult]:
    """Create or reconfigure each job on the controller at `url`."""
    from urllib.parse import urlsplit

    import requests

    import jenkins

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--url must be an http(s) URL, got {url!r}")
    if parts.username or parts.password:
        raise InputError(f"--url must not hold credentials: set {USER_ENV} and {TOKEN_ENV}")
    user, token = os.environ.get(USER_ENV), os.environ.get(TOKEN_ENV)
    if bool(user) != bool(token):
        missing = TOKEN_ENV if user else USER_ENV
        raise InputError(f"{missing} is not set ({USER_ENV} and {TOKEN_ENV} go together)")
    server = jenkins.Jenkins(url, username=user or None, password=token or None, timeout=timeout)
    results = []
    for job in jobs:
        try:
            if not server.job_exists(job.name):
                server.create_job(job.name, job.xml)
                results.append(SyncResult(job.name, "created"))
            elif _canonical(server.get_job_config(job.name)) == _canonical(job.xml):
                results.append(SyncResult(job.name, "unchanged"))
            else:
                server.reconfig_job(job.name, job.xml)
                results.append(SyncResult(job.name, "updated"))
        except (jenkins.JenkinsException, requests.RequestException) as exc:
            # python-jenkins' messages hold the URL and the HTTP reason, never the token.
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SyncError(f"jenkins sync: job {job.name} at {url}: {reason}") from None
    return results
