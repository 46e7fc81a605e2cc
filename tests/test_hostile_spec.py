"""Issue 21, hostile pipeline specs: each finding ends in one located line per problem and exit
2 (never exit 3, a hang, a traceback or a write outside the workspace)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, SH_PIPELINE, run_cli, write

from legion_ci.errors import InputError

LOCATED = re.compile(r"^.+:\d+:\d+: ")


def located_lines(outcome) -> list[str]:
    """The problem lines of a failed validate; every line of stderr must be one of them or
    the `validation failed` header."""
    lines = outcome.err.splitlines()
    assert lines and ": validation failed: " in lines[0], outcome.err
    problems = lines[1:]
    assert problems and all(LOCATED.match(line) for line in problems), outcome.err
    assert "Traceback" not in outcome.err and "internal error" not in outcome.err
    return problems


def password_pipeline(project: Path, target: str) -> Path:
    return write(
        project / "p.yaml",
        SH_PIPELINE
        + "connections:\n"
        + "  tracker: {type: mlflow, uri: 'http://127.0.0.1:1',"
        + f" password: '${{file:{target}}}'}}\n",
    )


# -- 1. ${file:} secrets: regular files only, at most 64 KiB, never a hang ------------------


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_secret_file_device_is_refused_unread(sh_project: Path, target: str) -> None:
    started = time.monotonic()
    outcome = run_cli("validate", str(password_pipeline(sh_project, target)), timeout=60)
    outcome.assert_failed(2)
    (line,) = located_lines(outcome)
    assert line.endswith(f"connections.tracker.password: secret file {target}: not a regular file")
    assert time.monotonic() - started < 30


def test_secret_file_fifo_without_writer_does_not_hang(sh_project: Path) -> None:
    os.mkfifo(sh_project / "pw-fifo")
    # Without O_NONBLOCK the open itself blocks for ever: the timeout would raise here.
    outcome = run_cli("validate", str(password_pipeline(sh_project, "pw-fifo")), timeout=60)
    outcome.assert_failed(2)
    (line,) = located_lines(outcome)
    assert line.endswith("secret file pw-fifo: not a regular file")


def test_secret_file_over_the_cap_is_refused(sh_project: Path) -> None:
    from legion_ci.spec.secrets import MAX_SECRET_BYTES

    (sh_project / "big").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    (sh_project / "fits").write_bytes(b"x" * (MAX_SECRET_BYTES - 1) + b"\n")
    outcome = run_cli("validate", str(password_pipeline(sh_project, "big")))
    outcome.assert_failed(2)
    (line,) = located_lines(outcome)
    assert f"secret file big: file is {MAX_SECRET_BYTES + 1} bytes; refusing files over" in line
    run_cli("validate", str(password_pipeline(sh_project, "fits"))).assert_success()


def test_secret_file_directory_and_missing(sh_project: Path) -> None:
    (sh_project / "adir").mkdir()
    for target, reason in (("adir", "is a directory"), ("nope", "no such file")):
        outcome = run_cli("validate", str(password_pipeline(sh_project, target)))
        outcome.assert_failed(2)
        (line,) = located_lines(outcome)
        assert line.endswith(f"secret file {target}: {reason}"), line


# -- 2. names and versions that become paths ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "1/../../../../../outside/ESCAPED"),
        ("version", "../x"),
        ("version", ".."),
        ("version", "1 0"),
        ("version", "v" * 129),
        ("name", "../wine"),
        ("name", "a/b"),
    ],
)
def test_model_names_that_would_be_paths_are_refused(
    sh_project: Path, field: str, value: str
) -> None:
    text = SH_PIPELINE.replace('version: "1.0"', 'version: "2.0"').replace(
        f"{field}: {'linear' if field == 'name' else chr(34) + '2.0' + chr(34)}",
        f"{field}: '{value}'",
    )
    assert value in text
    outcome = run_cli("validate", str(write(sh_project / "p.yaml", text))).assert_failed(2)
    lines = located_lines(outcome)
    assert any(f": model.{field}: " in line for line in lines), lines


def test_paths_from_model_values_stay_under_their_root(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from legion_ci.fs import inside
    from legion_ci.records import load_record
    from legion_ci.runner.stages.train import artifact_path

    assert inside(tmp_path, "wine-1.0.zip") == tmp_path / "wine-1.0.zip"
    forged = SimpleNamespace(model_name="wine", model_version="1/../../../../../outside/ESCAPED")
    with pytest.raises(InputError, match="would leave"):
        artifact_path(tmp_path / "runs" / "r1", forged)  # type: ignore[arg-type]
    for bad in ("../x", "/etc/passwd", "", "a/../../b"):
        with pytest.raises(InputError, match="would leave"):
            inside(tmp_path, bad)
    # A run id given on the command line is a path part too.
    with pytest.raises(InputError, match="would leave"):
        load_record(tmp_path, "../../etc")
    assert not (tmp_path.parent / "outside").exists()


def test_run_id_option_cannot_leave_the_workspace(sh_pipeline: Path) -> None:
    outcome = run_cli("runs", "show", str(sh_pipeline), "../../../etc")
    outcome.assert_failed(2)
    assert "would leave" in outcome.err


# -- 3. NaN and infinite bounds ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "field", "message"),
    [
        ("    gates: {rmse: {max: .nan}}\n", "stages.train.gates.rmse.max", "NaN is not allowed"),
        ("    gates: {rmse: {min: .NaN}}\n", "stages.train.gates.rmse.min", "NaN is not allowed"),
        ("    gates: {rmse: {max: .inf}}\n", "stages.train.gates.rmse.max", "infinite"),
        ("    gates: {r2: {min: -.inf}}\n", "stages.train.gates.r2.min", "infinite"),
        (
            "    cluster: {connection: k, image: i, storage: s, credentialsSecret: c,"
            " timeout: .nan}\n",
            "stages.train.cluster.timeout",
            "NaN is not allowed",
        ),
        (
            "    cluster: {connection: k, image: i, storage: s, credentialsSecret: c,"
            " timeout: .inf}\n",
            "stages.train.cluster.timeout",
            "infinite",
        ),
    ],
)
def test_nan_and_infinite_bounds_are_refused(
    sh_project: Path, yaml_text: str, field: str, message: str
) -> None:
    path = write(sh_project / "p.yaml", SH_PIPELINE + yaml_text)
    outcome = run_cli("validate", str(path)).assert_failed(2)
    lines = located_lines(outcome)
    assert any(f": {field}: " in line and message in line for line in lines), lines


# -- 4. tags the loader does not know, on collections too -------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("!!python/object/apply:os.system\n- touch {marker}\n", ":1:1: the tag !!python"),
        ("!!python/object/apply:os.system [touch {marker}]\n", ":1:1: the tag !!python"),
        ("a: !!set {{x, y}}\n", ":1:4: a: the tag !!set is not allowed"),
        ("a: !!omap [{{x: 1}}]\n", ":1:4: a: the tag !!omap is not allowed"),
        ("a: !custom {{x: 1}}\n", ":1:4: a: the tag !custom is not allowed"),
        ("a: !!python/tuple [1, 2]\n", ":1:4: a: the tag !!python/tuple is not allowed"),
    ],
)
def test_unknown_tags_on_collections_are_refused(tmp_path: Path, text: str, where: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "p.yaml"
    path.write_text(text.format(marker=marker))
    outcome = run_cli("validate", str(path)).assert_failed(2)
    (line,) = located_lines(outcome)
    assert where in line, line
    assert not marker.exists()


# -- 5. every message one located line ---------------------------------------------------------


@pytest.mark.parametrize("character", ["\x01", "\x1b", "\x7f", "\x85"])
def test_raw_control_character_is_one_located_line(tmp_path: Path, character: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"apiVersion: legion-ci/v1\nkind: Pi{character}peline\n", encoding="utf-8")
    outcome = run_cli("validate", str(path)).assert_failed(2)
    lines = located_lines(outcome)
    assert "<unicode string>" not in outcome.err
    if character != "\x85":  # NEL is a YAML line break: a syntax error, located by PyYAML
        (line,) = lines
        assert line.startswith(f"{path}:2:9: not valid YAML: character #x"), line


@pytest.mark.parametrize("key", ['"a\\nb"', '"a\\rb"', '"x\\u2028y"', '"\\e[31mred"'])
def test_keys_and_values_with_newlines_stay_one_line(sh_project: Path, key: str) -> None:
    path = write(
        sh_project / "p.yaml",
        SH_PIPELINE.replace("hyperParameters: {alpha: 1}", "hyperParameters: {alpha: 1}\n")
        + f"    {key}: 1\n"
        + f"workspace: {key}\n",
    )
    outcome = run_cli("validate", str(path)).assert_failed(2)
    lines = located_lines(outcome)
    assert any(
        "stages.train.a" in line or "stages.train.x" in line or "stages.train.\\x1b" in line
        for line in lines
    ), lines
    assert any(": workspace: control character" in line for line in lines), lines


def test_control_characters_in_path_fields_are_refused(sh_project: Path) -> None:
    path = write(
        sh_project / "p.yaml",
        SH_PIPELINE.replace("workDir: src", 'workDir: "src\\n"') + 'workspace: "ws\\nrun-id=x"\n',
    )
    outcome = run_cli("validate", str(path)).assert_failed(2)
    lines = located_lines(outcome)
    assert any(": stages.train.workDir: control character \\n" in line for line in lines), lines
    assert any(": workspace: control character \\n" in line for line in lines), lines


def test_integration_arguments_are_not_free_form(sh_project: Path) -> None:
    """A newline in docker-rest's baseImage would be a Dockerfile line of its own; `$` in
    Python lets a pattern-checked deployment name `web\\n` through; an infinite timeout
    never ends. Hyper-parameters alone stay the training code's to judge."""
    shutil.copytree(FIXTURES / "sh-deployer", sh_project / "deployers")
    text = (
        SH_PIPELINE.replace(
            "hyperParameters: {alpha: 1}", 'hyperParameters: {alpha: .inf, b: "x\\ny"}'
        )
        + "  package:\n    integration: docker-rest\n"
        + '    arguments: {baseImage: "python:3.11\\nRUN touch /pwned", smokeTestTimeout: .inf}\n'
        + "  deploy:\n    target: process\n"
        + '    arguments: {name: "web\\n"}\n'
    )
    outcome = run_cli("validate", str(write(sh_project / "p.yaml", text))).assert_failed(2)
    lines = located_lines(outcome)
    expected = {
        "stages.package.arguments.baseImage: control character \\n",
        "stages.package.arguments.smokeTestTimeout: an infinite number",
        "stages.deploy.arguments.name: control character \\n",
    }
    for part in expected:
        assert any(part in line for line in lines), (part, lines)
    assert not any("hyperParameters" in line for line in lines), lines


# -- 6. registrations: python targets and patterns ---------------------------------------------


def _registration(project: Path, body: str) -> Path:
    return write(
        project / "integrations" / "registration.yaml",
        "apiVersion: legion-ci/v1\nkind: ToolchainIntegration\nname: sh-trainer\n" + body,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("subprocess:Popen", "subprocess:Popen is not a ToolchainIntegration class"),
        ("os:system", "the builtin_function_or_method has no train(ctx)"),
        ("os:getcwd", "has no train(ctx)"),
        ("legion_ci_no_such_module:X", "cannot import legion_ci_no_such_module"),
        ("os:NoSuchThing", "os:NoSuchThing not found"),
    ],
)
def test_python_target_that_is_not_an_integration_is_located(
    sh_project: Path, target: str, message: str
) -> None:
    reg = _registration(sh_project, f"python: {target}\n")
    path = write(sh_project / "p.yaml", SH_PIPELINE)
    outcome = run_cli("validate", str(path)).assert_failed(2)
    (line,) = located_lines(outcome)
    assert line.startswith(f"{reg}:4:9: python: "), line
    assert message in line, line


def test_python_target_that_cannot_be_created_is_located(sh_project: Path) -> None:
    module = sh_project / "needs_args_plugin.py"
    module.write_text(
        "class Trainer:\n    def __init__(self, required):\n        pass\n"
        "    def train(self, ctx):\n        pass\n"
    )
    reg = _registration(sh_project, "python: needs_args_plugin:Trainer\n")
    path = write(sh_project / "p.yaml", SH_PIPELINE)
    outcome = run_cli("validate", str(path), env={"PYTHONPATH": str(sh_project)})
    outcome.assert_failed(2)
    (line,) = located_lines(outcome)
    assert line.startswith(f"{reg}:4:9: python: needs_args_plugin:Trainer cannot be created")


@pytest.mark.parametrize(
    "pattern", ["(a+)+$", "^(a|aa)*b$", "^(\\\\w+\\\\s?)*$", "^.*a.*b$", "[a-z]+!", "^(a)\\\\1$"]
)
def test_backtracking_patterns_are_refused_quickly(sh_project: Path, pattern: str) -> None:
    reg = _registration(
        sh_project,
        'command: ["./trainer.sh"]\n'
        "arguments:\n  type: object\n  properties:\n"
        f'    flavour: {{type: string, pattern: "{pattern}"}}\n',
    )
    path = write(
        sh_project / "p.yaml", SH_PIPELINE + f"    arguments: {{flavour: {'a' * 5000}!}}\n"
    )
    started = time.monotonic()
    outcome = run_cli("validate", str(path), timeout=60).assert_failed(2)
    assert time.monotonic() - started < 30
    (line,) = located_lines(outcome)
    assert line.startswith(f"{reg}:8:"), line
    assert "arguments.properties.flavour.pattern: pattern refused: " in line


def test_ordinary_patterns_are_kept(sh_project: Path) -> None:
    _registration(
        sh_project,
        'command: ["./trainer.sh"]\n'
        "arguments:\n  type: object\n  properties:\n"
        '    flavour: {type: string, pattern: "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}\n',
    )
    ok = write(sh_project / "p.yaml", SH_PIPELINE + "    arguments: {flavour: vanilla-2}\n")
    run_cli("validate", str(ok)).assert_success()
    bad = write(sh_project / "p.yaml", SH_PIPELINE + "    arguments: {flavour: Vanilla}\n")
    outcome = run_cli("validate", str(bad)).assert_failed(2)
    assert "stages.train.arguments.flavour: 'Vanilla' does not match" in outcome.err


# -- 7. values JSON cannot hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("2024-01-01", "!!timestamp"),
        ("2024-01-01T10:00:00Z", "!!timestamp"),
        ("!!binary aGVsbG8=", "!!binary"),
    ],
)
def test_values_json_cannot_hold_are_refused_before_a_dry_run(
    sh_project: Path, value: str, tag: str
) -> None:
    shutil.copytree(FIXTURES / "sh-deployer", sh_project / "deployers")
    text = (
        SH_PIPELINE.replace(
            "integrations: [integrations/registration.yaml]",
            "integrations: [integrations/registration.yaml, deployers/registration.yaml]",
        )
        + f"  deploy:\n    target: sh-deployer\n    arguments: {{since: {value}}}\n"
    )
    path = write(sh_project / "p.yaml", text)
    outcome = run_cli("run", "--dry-run", str(path)).assert_failed(2)
    (line,) = located_lines(outcome)
    assert f"stages.deploy.arguments.since: not a valid {tag} value" in line, line
    assert "JSON cannot hold it" in line
    quoted = write(sh_project / "q.yaml", text.replace(value, f"'{value}'"))
    run_cli("run", "--dry-run", str(quoted)).assert_success()
