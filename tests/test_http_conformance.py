"""One HTTP/1.1 conformance suite, run against both front ends (`--http native` and
`--http uvicorn`) of a real server process on 127.0.0.1, so the two cannot drift: framing,
HEAD, pipelining order, 100-continue, chunked bodies, limits, keep-alive for HTTP/1.0 and 1.1,
flow control. Raw sockets, because http.client hides exactly what is checked here."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.server_support import Server, make_tiny_model

Answer = tuple[int, dict[bytes, bytes], bytes]


@pytest.fixture(scope="module", params=["native", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("conformance")
    srv = Server(
        make_tiny_model(tmp / "model"),
        "--max-body-bytes",
        "4096",
        "--header-timeout-s",
        "1",
        "--http",
        request.param,
        env={"TINY_SLOW_S": "0.5"},
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.stop() == 0, srv.log


class Reader:
    """Reads HTTP responses off a raw socket, framing them by Content-Length (or none, for
    HEAD and 1xx answers) exactly as a client on a kept-alive connection must."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        part = self.sock.recv(65536)
        self.buf += part
        return bool(part)

    def answer(self, head_only: bool = False) -> Answer:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; unparsed: {self.buf[:200]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        status = int(lines[0].split()[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            headers[key.strip().lower()] = value.strip()
        if head_only or status < 200:
            return status, headers, b""
        length = int(headers[b"content-length"])
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (no further bytes) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            return not self._fill() and not self.buf
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def connect(server: Server, timeout: float = 20) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return sock, Reader(sock)


def post(body: bytes, *, extra: bytes = b"", version: bytes = b"1.1", length: bool = True) -> bytes:
    head = b"POST /api/model/invoke HTTP/" + version + b"\r\nHost: x\r\n"
    head += b"Content-Type: application/json\r\n" + extra
    if length:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def row(a: int) -> bytes:
    return b'{"data": [[%d, 1, null]]}' % a


def prediction(body: bytes) -> list:
    return json.loads(body)["prediction"]


def test_framing_two_requests_one_connection(server: Server) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(post(row(1)))
        status, headers, body = reader.answer()
        assert status == 200 and int(headers[b"content-length"]) == len(body)
        assert prediction(body) == [[2, 0]]
        sock.sendall(post(row(2)))
        assert prediction(reader.answer()[2]) == [[3, 1]]


def test_head_has_the_get_headers_and_no_body(server: Server) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        get = reader.answer()
        # HEAD, then GET on the same connection: a body after the HEAD answer would be read
        # as the start of the next answer.
        sock.sendall(b"HEAD /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        head = reader.answer(head_only=True)
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        after = reader.answer()
    assert head[0] == get[0] == 200
    assert head[1][b"content-length"] == get[1][b"content-length"]
    assert head[1][b"content-type"] == get[1][b"content-type"]
    assert after[0] == 200 and json.loads(after[2]) == {"status": True}


def test_wrong_method_is_405_with_allow(server: Server) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"GET /api/model/invoke HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = reader.answer()
        assert status == 405 and headers[b"allow"] == b"POST"
        assert "use POST" in json.loads(body)["message"]
        sock.sendall(b"DELETE /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = reader.answer()
        assert status == 405 and headers[b"allow"] == b"GET"


def test_pipelined_answers_keep_request_order(server: Server) -> None:
    # One send: a slow request first (a == -1), a HEAD, a 405, then quick ones.
    sock, reader = connect(server)
    with sock:
        sock.sendall(
            post(row(-1))
            + b"HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"GET /api/model/invoke HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"".join(post(row(i), extra=b"Request-ID: q%d\r\n" % i) for i in range(5))
        )
        first = reader.answer()
        assert first[0] == 200 and prediction(first[2]) == [[0, -2]]
        head = reader.answer(head_only=True)
        assert head[0] == 200
        assert reader.answer()[0] == 405
        for i in range(5):
            status, headers, body = reader.answer()
            assert status == 200 and headers[b"request-id"] == b"q%d" % i
            assert prediction(body) == [[i + 1, i - 1]]


def test_100_continue_never_overtakes_an_earlier_answer(server: Server) -> None:
    body = row(4)
    sock, reader = connect(server)
    with sock:
        # A slow request, and right behind it (pipelined) one that waits for 100 Continue.
        waiting = b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(body)
        sock.sendall(post(row(-1)) + post(b"", extra=waiting, length=False))
        first = reader.answer()
        assert first[0] == 200 and prediction(first[2]) == [[0, -2]]
        interim = reader.answer()
        assert interim[0] == 100
        sock.sendall(body)
        status, _, answer = reader.answer()
        assert status == 200 and prediction(answer) == [[5, 3]]


def test_chunked_request_body(server: Server) -> None:
    body = row(7)
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:]))
        + b"0\r\n\r\n"
    )
    sock, reader = connect(server)
    with sock:
        sock.sendall(post(chunked, extra=b"Transfer-Encoding: chunked\r\n", length=False))
        status, _, answer = reader.answer()
        assert status == 200 and prediction(answer) == [[8, 6]]
        # Over the limit in chunks: 413, and the connection closes.
        big = b"x" * 3000
        sock.sendall(
            post(b"", extra=b"Transfer-Encoding: chunked\r\n", length=False)
            + b"".join(b"%x\r\n%s\r\n" % (len(big), big) for _ in range(2))
        )
        status, headers, answer = reader.answer()
        assert status == 413 and headers[b"connection"] == b"close"
        assert "limit of 4096 bytes" in json.loads(answer)["message"]


def test_declared_body_over_the_limit_is_413_and_closes(server: Server) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(post(b"", extra=b"Content-Length: 10000\r\n", length=False))
        status, headers, answer = reader.answer()
        assert status == 413 and headers[b"connection"] == b"close"
        assert "10000 bytes" in json.loads(answer)["message"]
        assert reader.closed()


def test_slow_headers_get_408_within_the_header_timeout(server: Server) -> None:
    # Slowloris: a header byte now and then keeps the connection busy, never complete.
    sock, reader = connect(server)
    with sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        status = None
        for byte in b"X-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.25)
            try:
                if reader._fill():
                    sock.settimeout(10)
                    status = reader.answer()[0]
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
    # The header timeout is 1 s (the native front end checks once a second); the bytes
    # trickle for about 10 s, so a server without the limit never answers.
    assert status == 408, "no 408 while headers trickled in"


@pytest.mark.parametrize("connection", [b"", b"Connection: close\r\n"])
def test_http_1_1_keep_alive_and_close(server: Server, connection: bytes) -> None:
    sock, reader = connect(server)
    with sock:
        sock.sendall(post(row(1), extra=connection))
        status, headers, _ = reader.answer()
        assert status == 200
        if connection:
            assert headers[b"connection"] == b"close" and reader.closed()
        else:
            assert headers.get(b"connection", b"keep-alive") == b"keep-alive"
            sock.sendall(post(row(2)))
            assert reader.answer()[0] == 200


@pytest.mark.parametrize("keep_alive", [False, True])
def test_http_1_0_keep_alive_is_said_when_kept(server: Server, keep_alive: bool) -> None:
    extra = b"Connection: keep-alive\r\n" if keep_alive else b""
    sock, reader = connect(server)
    with sock:
        sock.sendall(post(row(1), version=b"1.0", extra=extra))
        status, headers, body = reader.answer()
        assert status == 200 and prediction(body) == [[2, 0]]
        said = headers.get(b"connection", b"").lower()
        if not keep_alive:
            assert said != b"keep-alive" and reader.closed()
            return
        # A 1.0 client closes unless told `Connection: keep-alive`; a server that keeps the
        # connection must say so, one that closes it must say close.
        assert said in (b"keep-alive", b"close")
        if said == b"keep-alive":
            sock.sendall(post(row(2), version=b"1.0", extra=extra))
            assert prediction(reader.answer()[2]) == [[3, 1]]
        else:
            assert reader.closed()


def _count(server: Server, route: str) -> int:
    text = server.request("GET", "/metrics")[2]
    found = re.search(rf'legion_model_requests_total{{route="{route}",status="200"}} (\d+)', text)
    return int(found.group(1)) if found else 0


def test_a_client_that_does_not_read_stops_the_answers(server: Server) -> None:
    """Flow control: pipelined requests from a client that reads nothing are answered only
    as far as the transport's buffers allow; the rest wait, none is lost, order holds."""
    status, _, doc = server.request("GET", "/api/model/info")
    assert status == 200
    doc_size = len(json.dumps(doc))
    count = max(2000, (12 * 1024 * 1024) // max(doc_size, 1))
    before = _count(server, "info")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", server.port))
    request = b"GET /api/model/info HTTP/1.1\r\nHost: x\r\n\r\n"
    sender = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
    sender.start()
    with sock:
        # Wait until the server stops answering (the count holds still for a while).
        last, still_since = 0, time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _count(server, "info") - before
            if now != last or now == 0:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since > 1.5:
                break
            time.sleep(0.1)
        # Without flow control every answer would be queued in memory at once.
        assert 0 < last < count // 2, f"{last} of {count} answered while the client read nothing"
        reader = Reader(sock)
        for _ in range(count):
            assert reader.answer()[0] == 200
        sender.join(30)
    assert _count(server, "info") - before == count


@pytest.mark.parametrize("front", ["native", "uvicorn"])
def test_connection_cap_holds_new_clients_in_the_backlog(tmp_path: Path, front: str) -> None:
    srv = Server(make_tiny_model(tmp_path / "m"), "--max-connections", "2", "--http", front)
    try:
        srv.wait_ready()
        open_socks = []
        for _ in range(2):
            sock, reader = connect(srv, timeout=10)
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.answer()[0] == 200
            open_socks.append(sock)
        third, reader = connect(srv, timeout=10)  # the kernel completes the handshake
        third.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        third.settimeout(1.0)
        with pytest.raises(TimeoutError):
            third.recv(1)  # not accepted: no answer while two connections are open
        open_socks.pop().close()
        third.settimeout(10)
        assert reader.answer()[0] == 200
        third.close()
        for sock in open_socks:
            sock.close()
    finally:
        assert srv.stop() == 0, srv.log
