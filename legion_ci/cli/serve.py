"""`legion-ci serve ARTIFACT`: serve a trained model binary over HTTP."""

from __future__ import annotations

import click

from legion_ci.server.config import HTTP_FRONTS, ServeSettings

_D = ServeSettings("")  # the defaults live in one place: ServeSettings


@click.command("serve")
@click.argument("artifact", type=click.Path(exists=True))
@click.option(
    "--host",
    default=_D.host,
    show_default=True,
    envvar="LEGION_SERVE_HOST",
    help="Address to bind; 0.0.0.0 only inside a container.",
)
@click.option(
    "--port",
    default=_D.port,
    show_default=True,
    type=int,
    envvar="LEGION_SERVE_PORT",
    help="Port to bind (0 picks a free one and logs it).",
)
@click.option(
    "--workers",
    default=_D.workers,
    show_default=True,
    type=int,
    envvar="LEGION_SERVE_WORKERS",
    help="Worker processes sharing the port.",
)
@click.option(
    "--max-batch-rows",
    default=_D.max_batch_rows,
    show_default=True,
    type=int,
    envvar="LEGION_SERVE_MAX_BATCH_ROWS",
    help="Most rows merged into one predict() call.",
)
@click.option(
    "--max-batch-wait-ms",
    default=_D.max_batch_wait_ms,
    show_default=True,
    type=float,
    envvar="LEGION_SERVE_MAX_BATCH_WAIT_MS",
    help="Extra wait for a batch to fill; 0 never delays an idle server.",
)
@click.option(
    "--max-body-bytes",
    default=_D.max_body_bytes,
    show_default=True,
    type=int,
    envvar="LEGION_SERVE_MAX_BODY_BYTES",
    help="Larger request bodies get 413.",
)
@click.option(
    "--body-timeout-s",
    default=_D.body_timeout_s,
    show_default=True,
    type=float,
    envvar="LEGION_SERVE_BODY_TIMEOUT_S",
    help="A body not received within this time gets 408.",
)
@click.option(
    "--drain-timeout-s",
    default=_D.drain_timeout_s,
    show_default=True,
    type=float,
    envvar="LEGION_SERVE_DRAIN_TIMEOUT_S",
    help="On SIGTERM, how long in-flight requests may take to finish.",
)
@click.option(
    "--log-requests/--no-log-requests",
    default=_D.log_requests,
    show_default=True,
    envvar="LEGION_SERVE_LOG_REQUESTS",
    help="Store each prediction's request and response for feedback export.",
)
@click.option(
    "--feedback-db",
    default=_D.feedback_db,
    show_default=True,
    type=click.Path(dir_okay=False),
    envvar="LEGION_FEEDBACK_DB",
    help="sqlite file holding feedback and logged predictions.",
)
@click.option(
    "--http",
    default=_D.http,
    show_default=True,
    type=click.Choice(HTTP_FRONTS),
    envvar="LEGION_SERVE_HTTP",
    help="HTTP front end: native (httptools on uvloop) or uvicorn (ASGI).",
)
@click.option(
    "--log-level",
    default=_D.log_level,
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(artifact: str, **options: object) -> None:
    """Serve the trained model binary ARTIFACT (a GPPI .zip or folder) over HTTP.

    Legion's API (/api/model/invoke, /api/model/info, /api/model/feedback, /healthcheck),
    MLflow's scoring protocol (/invocations, /ping, /health, /version) and /metrics.
    """
    from legion_ci.server.process import serve as run

    settings = ServeSettings(artifact=artifact, **options).check()  # type: ignore[arg-type]
    code = run(settings)
    if code:
        raise SystemExit(code)
