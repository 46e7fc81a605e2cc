"""The OpenAPI document and the server agree: schemathesis (`--checks all`: schema-valid
requests accepted, schema-violating ones refused, answers as documented, 405 with Allow, ...)
against the real server process on 127.0.0.1, through both HTTP front ends, with a bounded
number of generated requests per route. Also what the document promises beyond the shapes:
real output types and a real prediction as the response example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server_support import Server, make_tiny_model

EXAMPLES_PER_ROUTE = os.environ.get("LEGION_TEST_SCHEMATHESIS_EXAMPLES", "40")


@pytest.mark.parametrize("front", ["native", "uvicorn"])
def test_schemathesis_finds_no_disagreement(tmp_path: Path, front: str) -> None:
    srv = Server(
        make_tiny_model(tmp_path / "model"),
        "--log-requests",  # so the feedback route is offered and checked too
        "--feedback-db",
        str(tmp_path / "feedback.sqlite3"),
        "--http",
        front,
    )
    try:
        srv.wait_ready()
        base = f"http://127.0.0.1:{srv.port}"
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{base}/api/model/info",
                "--url",
                base,
                "--checks",
                "all",
                "--max-examples",
                EXAMPLES_PER_ROUTE,
                "--seed",
                "20261126",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,  # about 15 s on an idle machine; generous for a loaded one
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        report = run.stdout + run.stderr
        assert run.returncode == 0, report[-6000:]
        assert "Open API 3.1" in report and "7 selected / 7 total" in report, report[-3000:]
    finally:
        assert srv.stop() == 0, srv.log
