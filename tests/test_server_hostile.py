"""Hostile input to the model server (issue 21), against a real server process on 127.0.0.1
through both HTTP front ends: each gets a 4xx that says what was wrong, never a 500."""

from __future__ import annotations

import select
import socket
import time
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


SILENT = 64  # connections that send nothing


@pytest.mark.parametrize("front", ["native", "uvicorn"])
def test_silent_connections_get_the_header_timeout(tmp_path: Path, front: str) -> None:
    """A connection that sends nothing is closed after the header timeout (1 s here), not kept
    for the keep-alive time (60 s here); a kept-alive connection that has served a request is
    left open."""
    srv = Server(
        make_tiny_model(tmp_path / "model"),
        "--header-timeout-s",
        "1",
        "--keep-alive-s",
        "60",
        "--http",
        front,
    )
    silent: list[socket.socket] = []
    try:
        srv.wait_ready()
        kept = srv.conn()
        kept.request("GET", "/livez")
        assert kept.getresponse().read() == b'{"status":true}'
        opened = time.monotonic()
        silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(SILENT)]
        left = set(silent)
        deadline = opened + 20  # far below the keep-alive time
        while left and time.monotonic() < deadline:
            readable, _, _ = select.select(list(left), [], [], 0.5)
            for sock in readable:
                try:
                    data = sock.recv(1024)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data  # closed without an answer: there was no request
                left.discard(sock)
        assert not left, f"{len(left)} of {SILENT} silent connections still open after 20 s"
        assert time.monotonic() - opened >= 0.9  # the timeout, not at once
        # The kept-alive connection waited as long and still serves.
        kept.request("GET", "/livez")
        assert kept.getresponse().status == 200
        kept.close()
    finally:
        for sock in silent:
            sock.close()
        assert srv.stop() == 0, srv.log
