"""`legion-ci integrations list`."""

from __future__ import annotations

import json

import click

from legion_ci.cli.options import extra_integrations_option, output_option


@click.group()
def integrations() -> None:
    """Inspect the integration registry."""


@integrations.command("list")
@extra_integrations_option
@output_option
def list_integrations(extra: tuple[str, ...], output: str) -> None:
    """List every registered integration: built-ins, entry points, YAML registrations."""
    from pathlib import Path

    from legion_ci.integrations.registry import load_registry

    registry = load_registry([Path(p) for p in extra])
    rows = [
        {
            "name": r.name,
            "kind": r.kind,
            "stage": r.stage,
            "mode": r.mode,
            "description": r.description,
            "source": r.source,
        }
        for r in registry.all()
    ]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['stage']:<8} {row['name']:<16} {row['kind']:<22} {row['mode']:<8}"
            f" {row['description']}"
        )
