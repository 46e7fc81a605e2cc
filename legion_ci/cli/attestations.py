"""`legion-ci attestations IMAGE`: the SBOM and provenance the docker-rest packager pushed
beside an image (tags `sha256-<hex>.sbom` / `.att`), fetched from its registry, summarised or
printed raw. The password comes on stdin (--password-stdin), never on the command line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def summary(found: dict[str, Any]) -> list[str]:
    """What a person wants to know first: how many packages, built how, from what."""
    sbom, statement = found["sbom"], found["provenance"]
    components = sbom.get("components") or []
    packages = [c for c in components if str(c.get("purl", "")).startswith("pkg:pypi/")]
    predicate = statement.get("predicate") or {}
    definition = predicate.get("buildDefinition") or {}
    external = definition.get("externalParameters") or {}
    builder = (predicate.get("runDetails") or {}).get("builder") or {}
    metadata = (predicate.get("runDetails") or {}).get("metadata") or {}
    base = next(
        (d for d in definition.get("resolvedDependencies") or [] if d.get("name") == "base-image"),
        {},
    )
    pipeline = external.get("pipeline") or {}
    subjects = ", ".join(
        f"{s.get('name')}@sha256:{(s.get('digest') or {}).get('sha256')}"
        for s in statement.get("subject") or []
    )
    versions = ", ".join(f"{k} {v}" for k, v in sorted((builder.get("version") or {}).items()))
    return [
        f"image:      {found['image']}",
        f"packages:   {len(packages)} Python packages (CycloneDX {sbom.get('specVersion')})",
        f"builder:    {builder.get('id')} ({versions})",
        f"commit:     {external.get('gitCommit') or 'unknown'}",
        f"pipeline:   {pipeline.get('path', 'unknown')} sha256 {pipeline.get('sha256', '-')}",
        f"base image: {base.get('uri')} {(base.get('digest') or {}).get('sha256') or ''}".rstrip(),
        f"run:        {metadata.get('invocationId')}",
        f"subject:    {subjects}",
    ]


@click.command("attestations")
@click.argument("image")
@click.option("--username", envvar="LEGION_REGISTRY_USERNAME", help="Registry user name.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the registry password from standard input."
)
@click.option("--json", "as_json", is_flag=True, help="Print both documents as one JSON object.")
def attestations(image: str, username: str | None, password_stdin: bool, as_json: bool) -> None:
    """Show the SBOM and provenance pushed beside IMAGE (registry/name:tag or @sha256:...)."""
    from legion_ci.packaging.oci_artifacts import Reference, Registry, fetch_attestations

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    reference = Reference.parse(image)
    found = fetch_attestations(Registry(reference.registry, username, password), reference)
    if as_json:
        click.echo(json.dumps(found, indent=1, sort_keys=True))
        return
    for line in summary(found):
        click.echo(line)
