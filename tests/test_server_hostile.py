"""Hostile input to the model server (issue 21), against a real server process on 127.0.0.1
through both HTTP front ends: each gets a 4xx that says what was wrong, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from tests.server_support import Server, make_tiny_model

DEEP = 100_000  # levels of nesting


@pytest.fixture(scope="module", params=["native", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("hostile")
    srv = Server(
        make_tiny_model(tmp / "model"),
        "--log-requests",  # so the feedback route takes JSON too
        "--feedback-db",
        str(tmp / "fb.sqlite3"),
        "--http",
        request.param,
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, srv.log


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/model/invoke", b"[" * DEEP),
        ("/invocations", b"[" * DEEP),
        ("/invocations", b'{"instances": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        # Parsed (within the parser's limit) but deeper than a value's preview can encode.
        ("/api/model/invoke", b'{"data": [[' + b"[" * 1020 + b"]" * 1020 + b", 1, null]]}"),
        ("/api/model/feedback", b"[" * 1000 + b"]" * 1000),
    ],
    ids=["invoke", "invocations", "instances", "value", "feedback"],
)
def test_deep_nesting_is_a_400_that_says_so(server: Server, path: str, body: bytes) -> None:
    status, _, answer = server.request(
        "POST",
        path,
        raw=body,
        headers={"Content-Type": "application/json", "Request-ID": "deep-1"},
    )
    assert status == 400, answer
    assert "nested too deeply" in answer["message"] or "deeply nested" in answer["message"], answer
    # The server still serves.
    status, _, answer = server.request("POST", "/api/model/invoke", {"data": [[1, 2, None]]})
    assert status == 200 and answer["prediction"] == [[3, -1]]


def test_model_predict_refuses_deep_nesting_in_one_line(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "model")
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * DEEP)
    outcome = run_cli("model", "predict", str(model), "--input", str(deep)).assert_failed(2)
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1 and str(deep) in lines[0] and "nested too deeply" in lines[0], lines
