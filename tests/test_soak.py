"""The model server under load, then a long run with request logging: zero failed requests,
resident memory that stops growing, every logged prediction in the feedback export.

Marked `soak` and left out of the default run (it takes 11 minutes); `scripts/test.sh` runs
it beside the rest of the suite. LEGION_SOAK_LOAD_S (default 60) and LEGION_SOAK_S (default
600) set the two phases; all traffic goes to 127.0.0.1 and every loop is bounded in time.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from procs import free_port, http_ok, service
from server_support import make_tiny_model

pytestmark = pytest.mark.soak

LOAD_S = float(os.environ.get("LEGION_SOAK_LOAD_S", "60"))
SOAK_S = float(os.environ.get("LEGION_SOAK_S", "600"))
LOAD_CONNECTIONS = 64
SOAK_RATE = 40  # requests per second in the long phase


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.failed = 0
        self.ids: list[str] = []
        self.errors: list[str] = []

    def done(self, ok: bool, request_id: str, error: str = "") -> None:
        with self.lock:
            self.sent += 1
            if ok:
                self.ids.append(request_id)
            else:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(error)


def client(port: int, tally: Tally, until: float, prefix: str, pause: float = 0.0) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    n = 0
    while time.monotonic() < until:
        n += 1
        request_id = f"{prefix}-{n}"
        body = json.dumps({"columns": ["a", "b"], "data": [[n % 97, 2]]})
        try:
            conn.request(
                "POST",
                "/api/model/invoke",
                body=body,
                headers={"Content-Type": "application/json", "Request-ID": request_id},
            )
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            ok = resp.status == 200 and answer["prediction"] == [[n % 97 + 2, n % 97 - 2]]
            tally.done(ok, request_id, f"HTTP {resp.status}: {answer}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            tally.done(False, request_id, repr(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if pause:
            time.sleep(pause)
    conn.close()


def rss_kib(pid: int) -> int:
    """Resident memory of the server and its workers (its process group)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total


def test_server_soak(tmp_path: Path, figures) -> None:
    model = make_tiny_model(tmp_path / "model")
    port = free_port()
    feedback_db = tmp_path / "feedback.sqlite3"
    argv = [sys.executable, "-m", "legion_ci.cli.main", "serve", str(model), "--port", str(port)]
    argv += ["--log-requests", "--feedback-db", str(feedback_db)]
    with service(
        argv, tmp_path / "server.log", ready=http_ok(f"http://127.0.0.1:{port}/healthcheck"),
        cwd=REPO, name="model server",
    ) as server:  # fmt: skip
        load = Tally()
        until = time.monotonic() + LOAD_S
        threads = [
            threading.Thread(target=client, args=(port, load, until, f"load{i}"))
            for i in range(LOAD_CONNECTIONS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(LOAD_S + 60)
        assert load.failed == 0, load.errors

        soak = Tally()
        curve: list[tuple[float, int]] = []
        started = time.monotonic()
        until = started + SOAK_S
        per_client = 4
        threads = [
            threading.Thread(
                target=client, args=(port, soak, until, f"soak{i}", per_client / SOAK_RATE)
            )
            for i in range(per_client)
        ]
        for thread in threads:
            thread.start()
        while time.monotonic() < until:
            curve.append((time.monotonic() - started, rss_kib(server.pid)))
            time.sleep(min(10.0, max(0.5, until - time.monotonic())))
        for thread in threads:
            thread.join(60)
        assert soak.failed == 0, soak.errors

    exported = run_cli(
        "feedback", "export", "--db", str(feedback_db), "--include-unrated", timeout=300
    ).assert_success()
    logged = {json.loads(line)["request_id"] for line in exported.out.splitlines() if line}
    answered = set(load.ids) | set(soak.ids)
    missing = answered - logged
    assert not missing, f"{len(missing)} answered predictions missing from the export"

    # Memory stops growing: the last third of the long phase stays within 10% (and 20 MiB)
    # of the first third's peak, once warm.
    third = max(1, len(curve) // 3)
    early = max(kib for _, kib in curve[:third])
    late = max(kib for _, kib in curve[-third:])
    figures.add("requests sent", load.sent + soak.sent)
    figures.add("requests failed", load.failed + soak.failed)
    print(
        f"\nsoak: {load.sent} requests in {LOAD_S:.0f}s at {LOAD_CONNECTIONS} connections"
        f" ({load.sent / LOAD_S:.0f}/s), then {soak.sent} in {SOAK_S:.0f}s with request logging;"
        f" 0 failed; {len(logged)} predictions exported; RSS {curve[0][1] / 1024:.0f} MiB at"
        f" {curve[0][0]:.0f}s -> {curve[-1][1] / 1024:.0f} MiB at {curve[-1][0]:.0f}s"
        f" (first-third peak {early / 1024:.0f}, last-third peak {late / 1024:.0f})"
    )
    assert late <= max(early * 1.10, early + 20 * 1024), curve
