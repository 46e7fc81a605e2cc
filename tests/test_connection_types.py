"""A connection type is one entry of a table (legion_ci.connection_types): a plugin's
`kind: ConnectionType` registration, listed in the pipeline's `integrations:`, validates in a
pipeline, is accepted in the stage fields it names, keeps its credentials to secret references
and has its client made by its own factory, with no edit to legion_ci/spec or the stage table."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SH_PIPELINE, run_cli, write

from legion_ci.errors import SpecError

PLUGIN = """
CALLS = []


def client(connection):
    CALLS.append(connection.name)
    return {"vault": connection.options["address"], "secret": connection.options["secretID"]}
"""

REGISTRATION = """
apiVersion: legion-ci/v1
kind: ConnectionType
name: vault
description: A secrets store the deploy target reads from.
properties:
  address: {type: string, pattern: "^https://"}
  secretID: {type: string}
secrets: [secretID]
acceptedBy: [deploy.connection]
client: legion_vault_plugin:client
"""


def vault_pipeline(project: Path, connection: str, deploy: str = "connection: store") -> Path:
    text = SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        "integrations: [integrations/registration.yaml, connections/vault.yaml]",
    )
    text += f"  deploy:\n    target: process\n    {deploy}\nconnections:\n  store:\n{connection}"
    return write(project / "pipeline.yaml", text)


@pytest.fixture
def vault(sh_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    write(site / "legion_vault_plugin.py", PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    write(sh_project / "connections" / "vault.yaml", REGISTRATION)
    return sh_project


GOOD = "    type: vault\n    address: https://vault.example\n    secretID: ${env:VAULT_ID}\n"


def test_a_plugin_connection_type_validates_and_its_client_factory_is_used(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import legion_vault_plugin  # type: ignore[import-not-found]

    from legion_ci import validate_pipeline

    monkeypatch.setenv("VAULT_ID", "s3cr3t-id")
    pipeline = validate_pipeline(vault_pipeline(vault, GOOD))
    store = pipeline.connections["store"]
    assert (store.type, store.options["address"]) == ("vault", "https://vault.example")
    clients = pipeline.clients()
    made = clients.connection(store)
    assert made == {"vault": "https://vault.example", "secret": "s3cr3t-id"}
    assert clients.connection(store) is made  # made once per stage's clients
    assert legion_vault_plugin.CALLS == ["store"]
    # Its secret field is redacted like a built-in credential.
    assert "s3cr3t-id" not in pipeline.redactor("id s3cr3t-id")


def test_a_plugin_connection_types_schema_secrets_and_stage_fields_are_enforced(
    vault: Path,
) -> None:
    from legion_ci import validate_pipeline

    cases = {
        # Its own keys' schema, and keys no type declares.
        "    type: vault\n    address: http://plain\n": "does not match",
        "    type: vault\n    address: https://v\n    bogus: 1\n": "unknown key 'bogus'",
        # A credential only as a secret reference, never echoed.
        "    type: vault\n    address: https://v\n    secretID: plain-id\n": "secret reference",
    }
    for connection, expected in cases.items():
        with pytest.raises(SpecError) as raised:
            validate_pipeline(vault_pipeline(vault, connection))
        assert expected in str(raised.value), (connection, str(raised.value))
        assert "plain-id" not in str(raised.value)
    # Accepted where it says (deploy.connection), refused elsewhere (tracking wants mlflow).
    path = vault_pipeline(vault, "    type: vault\n    address: https://v\n")
    text = path.read_text().replace("hyperParameters: {alpha: 1}", "tracking: store")
    path.write_text(text)
    with pytest.raises(SpecError, match="'store' is of type 'vault'; need mlflow"):
        validate_pipeline(path)


def test_a_connection_type_registration_is_checked(vault: Path) -> None:
    registration = vault / "connections" / "vault.yaml"
    path = vault_pipeline(vault, "    type: vault\n    address: https://v\n")
    bad = {
        ("acceptedBy: [deploy.connection]", "acceptedBy: [deploy.nowhere]"): (
            "vault.yaml:9:14: acceptedBy[0]: 'deploy.nowhere' names no connection field"
        ),
        ("secrets: [secretID]", "secrets: [missing]"): (
            "vault.yaml:8:11: secrets[0]: 'missing' is not in its properties"
        ),
        ("name: vault", "name: s3"): "connection type 's3' is already registered (built-in)",
    }
    for (old, new), expected in bad.items():
        write(registration, REGISTRATION.replace(old, new))
        outcome = run_cli("validate", str(path)).assert_failed(2)
        assert expected in outcome.err, outcome.err
    # A key the built-ins already mean otherwise (docker's `host`) is refused, not merged.
    write(
        registration,
        REGISTRATION.replace(
            'address: {type: string, pattern: "^https://"}', "host: {type: integer}"
        ),
    )
    outcome = run_cli("validate", str(path)).assert_failed(2)
    assert "'host' is already declared with another schema" in outcome.err, outcome.err
