"""`legion-ci serve ARTIFACT`: serve a trained model binary over HTTP.

The options are generated from the settings declaration (legion_ci.server.config), so each has
exactly one default, one help text and one LEGION_SERVE_<NAME> environment variable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from legion_ci.server.config import ServeSettings, Setting, settings


def _option(setting: Setting) -> Callable[[Any], Any]:
    envvar = [setting.env, *setting.aliases]
    if setting.type is bool:
        flag = setting.option[2:]
        return click.option(
            f"--{flag}/--no-{flag}",
            setting.name,
            default=setting.default,
            show_default=True,
            show_envvar=True,
            envvar=envvar,
            help=setting.help,
        )
    if setting.choices:
        kind: Any = click.Choice(setting.choices)
    elif setting.path:
        kind = click.Path(dir_okay=False)
    else:
        kind = setting.type
    return click.option(
        setting.option,
        setting.name,
        default=setting.default,
        show_default=True,
        show_envvar=True,
        envvar=envvar,
        type=kind,
        help=setting.help,
    )


def _with_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    declared = settings()
    for setting in reversed(declared[1:]):  # click applies decorators bottom-up
        func = _option(setting)(func)
    artifact = declared[0]
    return click.argument(artifact.name, envvar=artifact.env, type=click.Path(exists=True))(func)


@click.command(
    "serve",
    epilog="ARTIFACT may also come from LEGION_SERVE_ARTIFACT. Every option above can be set by"
    " its environment variable (shown with it); the command line wins.",
)
@_with_settings
def serve(artifact: str, **options: object) -> None:
    """Serve the trained model binary ARTIFACT (a GPPI .zip or folder) over HTTP.

    Legion's API (/api/model/invoke, /api/model/info, /api/model/feedback, /healthcheck),
    MLflow's scoring protocol (/invocations, /ping, /health, /version) and /metrics.
    """
    from legion_ci.server.process import serve as run

    settings_ = ServeSettings(artifact=artifact, **options).check()  # type: ignore[arg-type]
    code = run(settings_)
    if code:
        raise SystemExit(code)
