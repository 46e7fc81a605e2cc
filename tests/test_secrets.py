"""Secrets never leak: a pipeline whose secrets hold quotes, backslashes, &, <, > and
non-ASCII characters runs through every stage, with the training printing them and tagging
them; every file written, the console and the CI outputs are searched for every form each
secret takes on the way (raw, JSON, XML, URL, shell, base64 basic-auth, workflow-command
escaping): zero hits."""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import urllib.parse
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from conftest import FIXTURES, REPO, SH_PIPELINE, Outcome, run_cli, write

TRACKING_PW = 'pa"ss\\wörd&<x>1'
TOKEN = "tök'en&<>\\\"42"
REGISTRY_PW = "R3g!stry@pw"


def forms(secret: str, username: str = "ci") -> set[str]:
    """Every form a secret can take in text legion-ci writes, computed independently of the
    redactor's own list."""
    found = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        escape(secret),
        escape(secret, {'"': "&quot;"}),
        quoteattr(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        shlex.quote(secret),
        base64.b64encode(f"{username}:{secret}".encode()).decode(),
        secret.replace("%", "%25").replace("\n", "%0A"),
    }
    return {f for f in found if len(f) >= 4}


def hits(text: str, secrets: dict[str, str]) -> list[str]:
    return [
        f"{name} as {form!r}"
        for name, secret in secrets.items()
        for form in forms(secret)
        if form in text
    ]


def test_no_form_of_any_secret_is_written_or_printed(tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "sh-trainer", root / "integrations")
    shutil.copytree(FIXTURES / "sh-packager", root / "packagers")
    shutil.copytree(FIXTURES / "sh-deployer", root / "deployers")
    (root / "src").mkdir()
    (root / "token").write_text(TOKEN + "\n", encoding="utf-8")
    registry_uri = f"ci:{urllib.parse.quote(REGISTRY_PW, safe='')}@127.0.0.1:5000"
    text = (
        SH_PIPELINE.replace(
            "integrations: [integrations/registration.yaml]",
            "integrations: [integrations/registration.yaml, packagers/registration.yaml,"
            " deployers/registration.yaml]",
        ).replace(
            "hyperParameters: {alpha: 1}", "hyperParameters: {alpha: 1, token: '${file:token}'}"
        )
        + "    tracking: tracker\n"
        + "  package:\n    integration: sh-packager\n"
        + "    targets: [{name: docker-push, connection: registry}]\n"
        + "  deploy:\n    target: sh-deployer\n"
        + "connections:\n"
        + "  tracker:\n    type: mlflow\n    uri: http://127.0.0.1:1\n    username: ci\n"
        + "    password: ${env:LEGION_TEST_PW}\n"
        + f"  registry:\n    type: docker\n    uri: 'http://{registry_uri}'\n"
    )
    pipeline = write(root / "pipeline.yaml", text)
    secrets = {"tracking password": TRACKING_PW, "file token": TOKEN, "uri password": REGISTRY_PW}
    gh_output, gh_summary = tmp_path / "gh-output", tmp_path / "gh-summary"
    env = {
        "LEGION_TEST_PW": TRACKING_PW,
        "FAKE_TRAINER_LEAK": "1",  # prints the tracking password
        "FAKE_TRAINER_ECHO": f"token={TOKEN} json={json.dumps(TOKEN)} pw={TRACKING_PW}",
        "FAKE_TRAINER_TAGS_JSON": json.dumps({"leaked": TRACKING_PW, "token": TOKEN}),
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(gh_output),
        "GITHUB_STEP_SUMMARY": str(gh_summary),
    }
    console: list[Outcome] = [
        run_cli("run", str(pipeline), env=env).assert_success(),
        run_cli("run", str(pipeline), "-o", "json", env=env).assert_success(),
        run_cli("run", str(pipeline), "--dry-run", env=env).assert_success(),
        run_cli("run", str(pipeline), "--dry-run", "-o", "json", env=env).assert_success(),
        run_cli("stage", "deploy", str(pipeline), env=env).assert_success(),
        run_cli("runs", "show", "--file", str(pipeline)).assert_success(),
        run_cli("runs", "show", "--file", str(pipeline), "-o", "json").assert_success(),
        run_cli("runs", "list", str(pipeline)).assert_success(),
        run_cli("validate", str(pipeline), env=env).assert_success(),
        # a failing run: the error, the log tail and the annotation pass the redactor too
        run_cli("run", str(pipeline), env={**env, "FAKE_TRAINER_FAIL": "3"}).assert_failed(1),
    ]
    # The trainer really did print and tag the secrets: they reached legion-ci, masked.
    run_id = json.loads(console[1].out)["run_id"]
    record_file = root / ".legion" / "runs" / run_id / "record.json"
    assert json.loads(record_file.read_text())["stages"]["train"]["tags"]["leaked"] == "***"
    assert "password=***" in console[0].err
    written = [
        path
        for path in [*root.rglob("*"), gh_output, gh_summary]
        if path.is_file() and path.name not in ("token", "pipeline.yaml")
    ]
    assert len(written) > 15, written
    found = []
    for path in written:
        for name_hit in hits(path.read_bytes().decode("utf-8", "replace"), secrets):
            found.append(f"{path.relative_to(tmp_path)}: {name_hit}")
    for i, outcome in enumerate(console):
        for name_hit in hits(outcome.out + outcome.err, secrets):
            found.append(f"console of command {i}: {name_hit}")
    from conftest import Figures

    Figures().add("secrets found", len(found))
    assert not found, "\n".join(found)
    print(f"\nsecrets: {len(written)} files and {len(console)} commands searched, 0 hits")


def test_validation_messages_do_not_echo_secret_values(tmp_path: Path) -> None:
    """A hyper-parameter read from ${file:} that the toolchain rejects is not quoted back."""
    (tmp_path / "alpha").write_text("not-a-float-s3cr3t\n")
    text = (REPO / "pipelines" / "wine.yaml").read_text()
    text = text.replace("../examples/wine", str(REPO / "examples" / "wine"))
    text = text.replace(
        "baselines/wine-metrics.json", str(REPO / "pipelines" / "baselines" / "wine-metrics.json")
    )
    text = text.replace("alpha: 0.5", "alpha: ${file:alpha}")
    pipeline = write(tmp_path / "wine.yaml", text)
    outcome = run_cli("validate", str(pipeline)).assert_failed(2)
    assert "hyperParameters.alpha" in outcome.err
    assert "s3cr3t" not in outcome.err + outcome.out


def test_a_stage_needs_only_its_own_connections_secrets(tmp_path: Path) -> None:
    """Train on one agent, package on another: the training agent has no registry password."""
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "sh-trainer", root / "integrations")
    shutil.copytree(FIXTURES / "sh-packager", root / "packagers")
    (root / "src").mkdir()
    text = SH_PIPELINE.replace(
        "integrations: [integrations/registration.yaml]",
        "integrations: [integrations/registration.yaml, packagers/registration.yaml]",
    ) + (
        "  package:\n    integration: sh-packager\n"
        "    targets: [{name: docker-push, connection: registry}]\n"
        "connections:\n  registry:\n    type: docker\n    uri: 127.0.0.1:5000\n"
        "    username: ci\n    password: ${env:LEGION_TEST_REGISTRY_PW}\n"
    )
    pipeline = write(root / "pipeline.yaml", text)
    run_cli("stage", "train", str(pipeline)).assert_success()
    refused = run_cli("stage", "package", str(pipeline)).assert_failed(2)
    assert "LEGION_TEST_REGISTRY_PW is not set" in refused.err
    run_cli(
        "stage", "package", str(pipeline), env={"LEGION_TEST_REGISTRY_PW": "registry-pw-1"}
    ).assert_success()
    assert "LEGION_TEST_REGISTRY_PW is not set" in run_cli("validate", str(pipeline)).err
