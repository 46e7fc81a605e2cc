"""Legion's routes, headers, health, metrics and every bad-input case, against a real server
process on 127.0.0.1 serving a hand-written GPPI model."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import pytest
from procs import wait_for

from tests.server_support import Server, make_tiny_model

NUMBER_MODEL_COLUMNS = ["a", "b", "note"]


# Every test here runs against both HTTP front ends: they share the routes, and each must
# carry them over HTTP the same way.
@pytest.fixture(scope="module", params=["native", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("api")
    srv = Server(
        make_tiny_model(tmp / "model"),
        "--feedback-db",
        str(tmp / "fb.sqlite3"),
        "--max-body-bytes",
        "4096",
        "--body-timeout-s",
        "1",
        "--http",
        request.param,
    )
    srv.front = request.param
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0


def invoke(server: Server, body, **kw):
    return server.request("POST", "/api/model/invoke", body, **kw)


def test_invoke_answers_rows_in_model_column_order(server: Server) -> None:
    status, headers, body = invoke(server, {"columns": ["a", "b"], "data": [[1, 2], [3.5, 4]]})
    assert status == 200, body
    assert body == {"prediction": [[3, -1], [7.5, -0.5]], "columns": ["sum", "diff"]}
    assert headers["model-name"] == "tiny"
    assert headers["model-version"] == "2.1"
    assert len(headers["request-id"]) == 32
    # Columns in another order, and no columns at all (the model's own order).
    assert invoke(server, {"columns": ["b", "a"], "data": [[2, 1]]})[2]["prediction"] == [[3, -1]]
    assert invoke(server, {"data": [[1, 2, "x"]]})[2]["prediction"] == [[3, -1]]


def test_request_id_is_echoed_from_either_header(server: Server) -> None:
    for header in ("Request-ID", "X-Request-ID"):
        _, headers, _ = invoke(server, {"data": [[1, 2, None]]}, headers={header: "abc-123"})
        assert headers["request-id"] == "abc-123"
        assert headers["x-request-id"] == "abc-123"
    status, headers, body = invoke(
        server, {"data": [[1, 2, None]]}, headers={"X-Request-ID": "a b"}
    )
    assert status == 400 and "Request-ID" in body["message"]


def test_every_response_carries_model_headers(server: Server) -> None:
    for method, path in [("GET", "/healthcheck"), ("GET", "/nope"), ("GET", "/metrics")]:
        _, headers, _ = server.request(method, path)
        assert headers["model-name"] == "tiny" and headers["model-version"] == "2.1"
        assert headers["request-id"]


def test_health_routes(server: Server) -> None:
    assert server.request("GET", "/healthcheck")[:3:2] == (200, {"status": True})
    assert server.request("GET", "/livez")[0] == 200
    assert server.request("GET", "/readyz")[0] == 200
    assert server.request("GET", "/ping")[0] == 200
    assert server.request("GET", "/health")[0] == 200


def test_version_is_the_toolchain_version_whatever_the_toolchain_is_called(server: Server) -> None:
    # tiny's manifest says `toolchain: {name: handmade, version: '0'}`: its version is answered
    # as an MLflow binary's is, not legion-ci's own.
    status, _, body = server.request("GET", "/version")
    assert (status, body) == (200, 0)  # the text "0", read as JSON


def test_info_is_an_openapi_document_with_examples(server: Server) -> None:
    status, _, doc = server.request("GET", "/api/model/info")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert doc["info"] == {
        "title": "tiny model",
        "version": "2.1",
        "description": "Legion model REST API of tiny 2.1.",
    }
    invoke_op = doc["paths"]["/api/model/invoke"]["post"]
    example = invoke_op["requestBody"]["content"]["application/json"]["example"]
    assert example == {"columns": NUMBER_MODEL_COLUMNS, "data": [[1.0, 2.0, "x"]]}
    response_example = invoke_op["responses"]["200"]["content"]["application/json"]["example"]
    assert response_example == {"prediction": [[3.0, -1.0]], "columns": ["sum", "diff"]}
    assert "/invocations" in doc["paths"]
    # Feedback is stored only with --log-requests; this server does not offer it.
    assert "/api/model/feedback" not in doc["paths"]
    # The response example is the model's real answer on the example row, typed as it is.
    output_row = doc["components"]["schemas"]["OutputRow"]
    assert output_row["prefixItems"] == [{"type": ["number", "null"]}] * 2
    # The documented example really works.
    assert invoke(server, example)[2]["prediction"] == [[3.0, -1.0]]


def test_metrics_in_prometheus_text(server: Server) -> None:
    invoke(server, {"data": [[1, 2, None]]})
    invoke(server, {"data": "nope"})
    status, headers, text = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'legion_model_requests_total{route="invoke",status="200"}' in text
    assert 'legion_model_requests_total{route="invoke",status="400"}' in text
    assert 'legion_model_request_duration_seconds_bucket{route="invoke",le="+Inf"}' in text
    assert "legion_model_batch_rows_count" in text and "legion_model_batch_requests_sum" in text
    assert 'legion_model_info{model_name="tiny",model_version="2.1"} 1' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


BAD_BODIES = [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"", "application/json", 400, "empty"),
    (b"[1, 2]", "application/json", 400, "JSON object"),
    (b'{"columns": ["a", "b"]}', "application/json", 400, 'no "data"'),
    (b'{"data": [[1, 2, null]], "extra": 1}', "application/json", 400, "unexpected keys"),
    (b'{"columns": ["a", "zz"], "data": [[1, 2]]}', "application/json", 400, "unknown columns: zz"),
    (b'{"columns": ["a"], "data": [[1]]}', "application/json", 400, "missing columns: b"),
    (b'{"columns": ["a", "a"], "data": [[1, 1]]}', "application/json", 400, "duplicate columns"),
    (b'{"columns": ["a", "b"], "data": [[1, 2, 3]]}', "application/json", 400, "row 0 has 3"),
    (b'{"columns": ["a", "b"], "data": [[1, 2], [1]]}', "application/json", 400, "row 1 has 1"),
    (
        b'{"columns": ["a", "b"], "data": [[1, "two"]]}',
        "application/json",
        400,
        "expected a number",
    ),
    (b'{"columns": ["a", "b"], "data": [[true, 2]]}', "application/json", 400, "expected a number"),
    (b'{"columns": ["a", "b"], "data": [[null, 2]]}', "application/json", 400, "value is required"),
    (b'{"columns": ["a", "b"], "data": []}', "application/json", 400, "no rows"),
    (b'{"columns": ["a", "b"], "data": [5]}', "application/json", 400, "not a list of values"),
    (b'{"columns": "a", "data": [[1]]}', "application/json", 400, "list of column names"),
    (b'{"data": [[1, 2, null]]}', "text/plain", 415, "send application/json"),
    (b'{"data": "\xc3\x28"}', "application/json", 400, "UTF-8"),
]


@pytest.mark.parametrize(("raw", "ctype", "status", "message"), BAD_BODIES)
def test_bad_input_gets_4xx_saying_what_was_wrong(
    server: Server, raw: bytes, ctype: str, status: int, message: str
) -> None:
    got, headers, body = invoke(server, None, raw=raw, headers={"Content-Type": ctype})
    assert got == status, body
    assert message in body["message"]
    assert body["request_id"] == headers["request-id"]
    assert "Traceback" not in json.dumps(body)
    # ... and the server keeps serving.
    assert invoke(server, {"data": [[1, 2, None]]})[0] == 200


def test_body_over_the_limit_is_413(server: Server) -> None:
    rows = [[1, 2]] * 2000
    status, headers, body = invoke(server, {"columns": ["a", "b"], "data": rows})
    assert status == 413 and "limit of 4096 bytes" in body["message"]
    assert headers.get("connection") == "close"
    # Chunked upload with no Content-Length: counted while it arrives.
    conn = server.conn()
    conn.putrequest("POST", "/api/model/invoke")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b" " * 3000
    for _ in range(2):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413 and b"over this server's limit" in resp.read()
    conn.close()
    assert invoke(server, {"data": [[1, 2, None]]})[0] == 200


def test_slow_body_times_out_with_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/model/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"data": '
        )
        began = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            part = sock.recv(4096)
            if not part:
                break
            reply += part
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"did not arrive within 1 s" in reply
    assert time.monotonic() - began < 9  # answered by the server, not by our socket timeout
    assert invoke(server, {"data": [[1, 2, None]]})[0] == 200


def test_model_exception_is_500_with_its_type_and_message(server: Server) -> None:
    status, headers, body = invoke(
        server, {"data": [[666, 1, None]]}, headers={"Request-ID": "boom-1"}
    )
    assert status == 500 and headers["request-id"] == "boom-1"
    # Like Legion's server: the client sees why (type and message), never the traceback.
    assert body["message"] == (
        "Exception during prediction: ValueError: secret internal detail: the model cannot"
        " handle 666"
    )
    assert body["exception"] == {
        "type": "ValueError",
        "message": "secret internal detail: the model cannot handle 666",
    }
    assert body["request_id"] == "boom-1" and body["error_code"] == "INTERNAL_ERROR"
    assert "Traceback" not in json.dumps(body)
    server.wait_log("request boom-1 on /api/model/invoke: the model raised")
    server.wait_log("Traceback")
    assert invoke(server, {"data": [[1, 2, None]]})[0] == 200


def test_unknown_route_and_wrong_method(server: Server) -> None:
    status, _, body = server.request("GET", "/api/model/nothing")
    assert status == 404 and "no route" in body["message"]
    status, _, body = server.request("GET", "/api/model/invoke")
    assert status == 405 and "use POST" in body["message"]


def test_keep_alive_connection_serves_many_requests(server: Server) -> None:
    conn = server.conn()
    for i in range(20):
        conn.request(
            "POST",
            "/api/model/invoke",
            body=json.dumps({"data": [[i, 1, None]]}),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert json.loads(resp.read())["prediction"] == [[i + 1, i - 1]]
    conn.close()


def test_readiness_false_while_loading_liveness_true(tmp_path: Path) -> None:
    srv = Server(
        make_tiny_model(tmp_path / "m"),
        "--feedback-db",
        str(tmp_path / "fb.sqlite3"),
        env={"TINY_INIT_SLEEP": "2"},
    )
    try:
        assert srv.request("GET", "/livez")[0] == 200
        status, _, body = srv.request("GET", "/healthcheck")
        assert status == 503 and body["status"] is False
        assert srv.request("GET", "/ping")[0] == 503
        # A prediction sent while loading waits for the model instead of failing.
        assert invoke(srv, {"data": [[1, 2, None]]})[2]["prediction"] == [[3, -1]]
        assert srv.request("GET", "/healthcheck")[0] == 200
    finally:
        assert srv.stop() == 0


def test_bad_model_fails_start_with_a_message(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m")
    (model / "legion_model" / "entrypoint.py").write_text("def init():\n    return 'dict'\n")
    srv = Server(model, "--feedback-db", str(tmp_path / "fb.sqlite3"))
    assert srv.proc.wait(30) == 1
    srv.wait_log("init() returned 'dict'; GPPI requires 'matrix'")
    assert "Traceback" not in srv.log


def test_http_client_disconnect_mid_request_does_not_hurt(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest("POST", "/api/model/invoke")
    conn.putheader("Content-Length", "50")
    conn.endheaders()
    conn.send(b'{"data"')
    conn.close()
    assert invoke(server, {"data": [[1, 2, None]]})[0] == 200
    # The server notices the disconnect on its own time: polled, not slept for.
    wait_for(
        lambda: 'status="499"' in server.request("GET", "/metrics")[2], 30, "a 499 in /metrics"
    )
    assert "Exception in ASGI application" not in server.log


def _read_responses(
    sock: socket.socket, count: int
) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Read `count` HTTP responses (Content-Length bodies) from a raw socket."""
    buf = b""
    out = []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head, rest = buf[:end], buf[end + 4 :]
            lines = head.split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if lines[0].split()[1] == b"100":
                buf = rest
                out.append((lines[0], headers, b""))
                continue
            if len(rest) >= length:
                out.append((lines[0], headers, rest[:length]))
                buf = rest[length:]
                continue
        part = sock.recv(65536)
        if not part:
            break
        buf += part
    return out


def _post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /api/model/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    # One send holding ten requests, the slow one (a == -1) first: answers keep their order.
    bodies = [b'{"data": [[%d, 1, null]]}' % i for i in [-1, *range(9)]]
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"".join(_post(b, b"Request-ID: p%d\r\n" % i) for i, b in enumerate(bodies)))
        answers = _read_responses(sock, len(bodies))
    assert len(answers) == len(bodies)
    for i, (status, headers, body) in enumerate(answers):
        assert status.startswith(b"HTTP/1.1 200"), body
        assert headers[b"request-id"] == b"p%d" % i
        a = [-1, *range(9)][i]
        assert json.loads(body)["prediction"] == [[a + 1, a - 1]]


def test_expect_100_continue_and_http_1_0(server: Server) -> None:
    body = b'{"data": [[2, 1, null]]}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            _post(b"", b"Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: %d" % len(body))
        )
        first = _read_responses(sock, 1)
        assert first[0][0].startswith(b"HTTP/1.1 100")
        sock.sendall(body)
        ((status, _, answer),) = _read_responses(sock, 1)
        assert status.startswith(b"HTTP/1.1 200") and json.loads(answer)["prediction"] == [[3, 1]]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_post(body).replace(b"HTTP/1.1", b"HTTP/1.0"))
        reply = b""
        while part := sock.recv(65536):  # HTTP/1.0 without keep-alive: the server closes
            reply += part
    assert b" 200 " in reply.split(b"\r\n", 1)[0] and b"[[3,1]]" in reply


# uvicorn answers malformed HTTP with its own plain-text 400 and has no header-size limit of
# its own: these two run against the native front end only.
@pytest.mark.parametrize("server", ["native"], indirect=True)
def test_malformed_http_gets_400_json(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/model/invoke HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        ((status, headers, body),) = _read_responses(sock, 1)
    assert status.startswith(b"HTTP/1.1 400")
    assert headers[b"connection"] == b"close" and headers[b"model-name"] == b"tiny"
    doc = json.loads(body)
    assert "malformed HTTP request" in doc["message"] and "Traceback" not in doc["message"]
    assert invoke(server, {"data": [[1, 2, None]]})[0] == 200


@pytest.mark.parametrize("server", ["native"], indirect=True)
def test_oversized_headers_get_431(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        ((status, headers, body),) = _read_responses(sock, 1)
    assert status.startswith(b"HTTP/1.1 431") and headers[b"connection"] == b"close"
    assert "over 65536 bytes" in json.loads(body)["message"]
    assert server.request("GET", "/livez")[0] == 200


@pytest.mark.parametrize(
    ("ctype", "raw"),
    [
        ("text/csv", b"a,b\n1,nan\n"),
        ("text/csv", b"a,b\n1,2\ninf,2\n"),
        ("text/csv", b"a,b\n-Infinity,2\n"),
        ("application/json", b'{"inputs": [[1, NaN, null]]}'),
        ("application/json", b'{"inputs": [[1, Infinity, null]]}'),
        ("application/json", b'{"inputs": [[1, 1e400, null]]}'),
    ],
)
def test_non_finite_numbers_are_400(server: Server, ctype: str, raw: bytes) -> None:
    status, _, body = server.request(
        "POST", "/invocations", raw=raw, headers={"Content-Type": ctype}
    )
    assert status == 400, body
    assert "non-finite numbers" in body["message"] and "not accepted" in body["message"]


def test_integers_beyond_64_bits_are_json_too(server: Server) -> None:
    big = 2**70
    status, _, body = invoke(server, {"data": [[big, 1, None]]})
    # Accepted (JSON allows them), read as a number the model can add up.
    assert status == 200, body
    assert body["prediction"][0][0] == pytest.approx(big, rel=1e-12)
