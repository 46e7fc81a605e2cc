"""Hostile input to the model server (issue 21), against a real server process on 127.0.0.1
through both HTTP front ends: each gets a 4xx that says what was wrong, never a 500."""

from __future__ import annotations

import json
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


def _answer(sock: socket.socket) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response off a raw socket, framed by Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        part = sock.recv(65536)
        assert part, f"closed without an answer; got {buf[:200]!r}"
        buf += part
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower()] = value.strip()
    while len(body) < int(headers[b"content-length"]):
        part = sock.recv(65536)
        assert part, "closed inside the answer's body"
        body += part
    return int(lines[0].split()[1]), headers, body


def _send_all(sock: socket.socket, head: bytes, body_bytes: int) -> None:
    """Send the head, then the whole body in 1 MiB pieces before reading, as http.client,
    requests and curl do: a server that answers early must read (and drop) the rest, or the
    client's send is reset and the answer lost."""
    sock.sendall(head)
    piece = b"x" * (1 << 20)
    for _ in range(body_bytes // len(piece)):
        sock.sendall(piece)


HOSTILE_FRAMING = {
    # request line and headers far over the limit (64 KiB)
    "1MB-header": (
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
        0,
        431,
        "over 65536 bytes",
    ),
    # absolute-form target: RFC 9112 3.2.2, a server MUST accept it; routed by its path
    "absolute-form": (b"GET http://evil/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n", 0, 200, ""),
    # a declared body far over --max-body-bytes, sent anyway
    "100MB-body": (
        b"POST /api/model/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (100 << 20),
        100 << 20,
        413,
        "104857600 bytes, over this server's limit",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_FRAMING))
def test_both_front_ends_answer_hostile_framing_alike(server: Server, case: str) -> None:
    head, body_bytes, expected, message = HOSTILE_FRAMING[case]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        _send_all(sock, head, body_bytes)
        status, headers, body = _answer(sock)
    assert status == expected, (server.front, body[:300])
    answer = json.loads(body)
    if expected == 200:
        assert answer == {"status": True}
    else:
        assert message in answer["message"], answer
        assert headers[b"connection"] == b"close"
    assert headers[b"model-name"] == b"tiny" and headers[b"request-id"]
