"""`legion-ci`: parses and dispatches; every verb lives in its own module, imported lazily."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from legion_ci.cli import state
from legion_ci.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    EXIT_STAGE_FAILED,
    LegionError,
    SpecError,
)
from legion_ci.version import __version__

# verb -> (module, attribute, one-line help). Modules are imported only when their verb runs,
# which keeps `legion-ci --help` fast.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "validate": ("legion_ci.cli.validate", "validate", "Check a pipeline file; list every error."),
    "run": ("legion_ci.cli.run", "run", "Run every stage of a pipeline in order."),
    "stage": ("legion_ci.cli.stage", "stage", "Run one stage, chaining the last run's outputs."),
    "schema": ("legion_ci.cli.schema", "schema", "Print the pipeline JSON Schema."),
    "runs": ("legion_ci.cli.runs", "runs", "List and show run records."),
    "integrations": (
        "legion_ci.cli.integrations",
        "integrations",
        "List registered toolchain, packaging and deploy integrations.",
    ),
    "model": (
        "legion_ci.cli.model",
        "model",
        "Self-check, inspect and run a trained model binary.",
    ),
    "attestations": (
        "legion_ci.cli.attestations",
        "attestations",
        "Show the SBOM and provenance pushed beside an image.",
    ),
    "serve": ("legion_ci.cli.serve", "serve", "Serve a trained model binary over HTTP."),
    "feedback": ("legion_ci.cli.feedback", "feedback", "Export predictions joined with feedback."),
    "jenkins": ("legion_ci.cli.jenkins", "jenkins", "Render or sync Jenkins jobs for pipelines."),
    "deployments": ("legion_ci.cli.deployments", "deployments", "Deployed models: list, delete."),
    "report": ("legion_ci.cli.report", "report", "Render a run's pull request comment."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, helptext) for name, (_, _, helptext) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="legion-ci")
def cli() -> None:
    """legion-ci: train, package and deploy ML models from a validated pipeline YAML.

    \b
    Exit codes: 0 success, 1 a stage failed, 2 invalid input,
    3 internal error (see the crash log), 130 interrupted.
    """


def _wants_json(argv: list[str]) -> bool:
    """Whether `run`/`stage` was asked for --output json, read before click parses the
    arguments, so that a usage error too answers with the JSON document."""
    verbs = [arg for arg in argv if not arg.startswith("-")][:1]
    if verbs not in (["run"], ["stage"]):
        return False
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    return any(
        arg in ("--output=json", "-ojson") or (arg in ("--output", "-o") and nxt == "json")
        for arg, nxt in pairs
    )


def _crash_log(exc: BaseException) -> str:
    import datetime
    import platform
    import traceback
    from importlib import metadata

    from legion_ci.cache import cache_root

    versions = []
    for dist in ("legion-ci", "mlflow", "click", "PyYAML", "jsonschema", "docker", "kubernetes"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    folder = cache_root()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"crash-{stamp}-{os.getpid()}.log"
    from legion_ci.redact import redact

    path.write_text(
        redact(
            "\n".join(
                [
                    f"legion-ci crash at {stamp}",
                    f"command: {' '.join(sys.argv)}",
                    f"python: {sys.version.split()[0]} ({sys.executable})",
                    f"platform: {platform.platform()}",
                    *versions,
                    "",
                    "".join(traceback.format_exception(exc)),
                ]
            )
        ),
        encoding="utf-8",
    )
    return str(path)


def _internal_error(exc: BaseException) -> tuple[int, str]:
    log = _crash_log(exc)
    message = f"internal error: {type(exc).__name__}: {exc}"
    click.echo(f"legion-ci: {message}\nlegion-ci: details (versions, traceback) in {log}", err=True)
    return EXIT_INTERNAL, f"{message} (details in {log})"


def _report_error(exc: LegionError) -> dict[str, Any]:
    """Print the error for people and hand it to the CI host; the `error` object of the
    JSON document."""
    from legion_ci import ci

    problems: list[Any] = []
    if isinstance(exc, SpecError):
        count = len(exc.problems)
        files = sorted({p.file for p in exc.problems})
        headline = (
            f"{', '.join(files)}: validation failed: {count} error{'s' if count != 1 else ''}"
        )
        click.echo(headline, err=True)
        for line in exc.lines():
            click.echo(line, err=True)
        problems = exc.shown
        message = f"{headline}: {exc.problems[0]}" if exc.problems else headline
    else:
        click.echo(f"legion-ci: error: {exc}", err=True)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    ci.detect().annotate(problems, str(exc), sys.stderr)
    return {
        "message": message,
        "problems": [
            {"file": p.file, "line": p.line, "column": p.col, "field": p.path, "message": p.message}
            for p in problems
        ],
    }


# exit code -> the `kind` of the JSON document's error
ERROR_KINDS = {
    EXIT_STAGE_FAILED: "stage-failed",
    EXIT_INVALID_INPUT: "invalid-input",
    EXIT_INTERNAL: "internal",
    EXIT_INTERRUPTED: "interrupted",
}


def _print_document(code: int, error: dict[str, Any] | None) -> None:
    """The one JSON document of `run`/`stage --output json`, whatever the exit code."""
    import json

    document = dict(state.document or {"run_id": None, "status": "error", "outputs": {}})
    if code != 0:
        error = error or {"message": f"exited with code {code}", "problems": []}
        document["error"] = {"kind": ERROR_KINDS.get(code, "internal"), **error}
    click.echo(json.dumps(document, indent=2))


def main(argv: list[str] | None = None) -> None:
    from legion_ci.redact import install_streams

    # Everything printed from here on (results, errors, plans, echoed logs) is redacted.
    install_streams()
    args = sys.argv[1:] if argv is None else argv
    state.json_output = _wants_json(args)
    code = 0
    error: dict[str, Any] | None = None
    try:
        result: Any = cli.main(args=args, prog_name="legion-ci", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = EXIT_INVALID_INPUT
        error = {"message": exc.format_message(), "problems": []}
    except click.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("legion-ci: interrupted", err=True)
        code = EXIT_INTERRUPTED
        error = {"message": "interrupted", "problems": []}
    except LegionError as exc:
        error = _report_error(exc)
        code = exc.exit_code
    except OSError as exc:
        from legion_ci.errors import storage_error

        full = storage_error(exc)
        if full is None:
            code, message = _internal_error(exc)
            error = {"message": message, "problems": []}
        else:
            error = _report_error(full)
            code = full.exit_code
    except Exception as exc:
        code, message = _internal_error(exc)
        error = {"message": message, "problems": []}
    if state.json_output:
        _print_document(code, error)
    if code not in (0, EXIT_INVALID_INPUT) and state.reproduce:
        from legion_ci import ci

        if ci.detect().SHOWS_REPRODUCE:
            import shlex

            line = shlex.join(state.reproduce)
            click.echo(f"legion-ci: reproduce locally with: {line}", err=True)
    if argv is None:
        # The program itself (console script, python -m): skip the interpreter's teardown.
        from legion_ci.cli.leave import leave

        leave(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
