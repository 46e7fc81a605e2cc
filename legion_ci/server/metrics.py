"""Legion's Model Prediction Metrics in Prometheus text format, hand-written to stay off the hot
path: recording a request is a dict increment and a bisect.

Several worker processes share one port, so a scrape lands on any one of them. /metrics adds
the other workers' counters to its own, asking each for them at the scrape through its unix
socket in the shared folder (`worker-<pid>.sock`), so every request answered before the scrape
is counted, whichever worker answers it. Reading only the snapshots the workers wrote every
second made a total lag by up to a second, so two scrapes answered by different workers could
go down (40, then 22: a counter reset to Prometheus). The snapshot files (`worker-<pid>.json`,
written every second) remain for a worker that does not answer in time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

log = logging.getLogger("legion_ci.server")

# A scrape waits at most this long, in all, for the other workers' answers.
ASK_TIMEOUT_S = 2.0

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.sum, "count": self.count}

    def add(self, data: dict[str, Any]) -> None:
        for i, n in enumerate(data["counts"][: len(self.counts)]):
            self.counts[i] += n
        self.sum += data["sum"]
        self.count += data["count"]


class Metrics:
    def __init__(self, model_name: str, model_version: str, metrics_dir: str | None = None):
        self.model_name = model_name
        self.model_version = model_version
        self.metrics_dir = Path(metrics_dir) if metrics_dir else None
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_rows = Histogram(SIZE_BUCKETS)
        self.batch_requests = Histogram(SIZE_BUCKETS)
        self.predict_seconds = Histogram(LATENCY_BUCKETS)
        self.started = time.time()
        self.ready = False
        # The model's output was seen not to be one row per input row: requests are no
        # longer merged (batching.py).
        self.unbatched = False

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = Histogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def observe_batch(self, requests: int, rows: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)
        self.predict_seconds.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": [[r, s, n] for (r, s), n in self.requests.items()],
            "latency": {r: h.to_dict() for r, h in self.latency.items()},
            "batch_rows": self.batch_rows.to_dict(),
            "batch_requests": self.batch_requests.to_dict(),
            "predict_seconds": self.predict_seconds.to_dict(),
            "ready": self.ready,
            "unbatched": self.unbatched,
        }

    def write_snapshot(self) -> None:
        if self.metrics_dir is None:
            return
        path = self.metrics_dir / f"worker-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(tmp, path)

    async def answer_scrapes(self) -> asyncio.AbstractServer | None:
        """Serve this worker's live counters on its unix socket, for the other workers'
        scrapes (with several workers only). Unavailable (e.g. a path too long for a unix
        socket): the others read this worker's snapshot file instead."""
        if self.metrics_dir is None:
            return None

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(json.dumps(self.snapshot()).encode())
                await writer.drain()
            except OSError:
                pass  # the asking worker gave up
            finally:
                writer.close()

        path = self.metrics_dir / f"worker-{os.getpid()}.sock"
        try:
            return await asyncio.start_unix_server(answer, path=str(path))
        except OSError as exc:
            log.warning(
                "metrics: cannot listen on %s (%s); other workers read snapshots", path, exc
            )
            return None

    def forget_socket(self) -> None:
        if self.metrics_dir is not None:
            (self.metrics_dir / f"worker-{os.getpid()}.sock").unlink(missing_ok=True)

    def _others(self) -> list[dict[str, Any]]:
        if self.metrics_dir is None:
            return []
        # Workers are found by their socket (made at start) or snapshot file (written every
        # second): finding them by snapshot files alone missed a worker for its first second.
        names = {p.stem for p in self.metrics_dir.glob("worker-*.sock")}
        names |= {p.stem for p in self.metrics_dir.glob("worker-*.json")}
        names.discard(f"worker-{os.getpid()}")
        deadline = time.monotonic() + ASK_TIMEOUT_S
        found = []
        for name in sorted(names):
            path = self.metrics_dir / f"{name}.json"
            if not _alive(path):
                continue
            snap = _ask(path.with_suffix(".sock"), deadline)
            if snap is None:  # not answering in time: its last snapshot (up to 1 s old)
                try:
                    snap = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
            found.append(snap)
        return found

    def render(self, own: dict[str, Any] | None = None) -> str:
        """The Prometheus text: `own` (this worker's snapshot(), taken on the event loop so
        no counter changes while it is copied; taken here when None) plus the others'."""
        own = own if own is not None else self.snapshot()
        requests: dict[tuple[str, int], int] = {}
        latency: dict[str, Histogram] = {}
        batch_rows, batch_requests = Histogram(SIZE_BUCKETS), Histogram(SIZE_BUCKETS)
        predict_seconds = Histogram(LATENCY_BUCKETS)
        workers, ready_workers, unbatched = 0, 0, 0
        for snap in [own, *self._others()]:
            workers += 1
            ready_workers += int(bool(snap.get("ready")))
            unbatched += int(bool(snap.get("unbatched")))
            for route, status, n in snap.get("requests", []):
                requests[(route, status)] = requests.get((route, status), 0) + n
            for route, data in snap.get("latency", {}).items():
                latency.setdefault(route, Histogram(LATENCY_BUCKETS)).add(data)
            batch_rows.add(snap["batch_rows"])
            batch_requests.add(snap["batch_requests"])
            predict_seconds.add(snap["predict_seconds"])

        model = f'model_name="{_esc(self.model_name)}",model_version="{_esc(self.model_version)}"'
        out = [
            "# HELP legion_model_info The model this server serves.",
            "# TYPE legion_model_info gauge",
            f"legion_model_info{{{model}}} 1",
            "# HELP legion_model_workers Worker processes reporting.",
            "# TYPE legion_model_workers gauge",
            f"legion_model_workers {workers}",
            "# HELP legion_model_ready_workers Workers whose model is loaded.",
            "# TYPE legion_model_ready_workers gauge",
            f"legion_model_ready_workers {ready_workers}",
            "# HELP legion_model_unbatched_workers Workers that stopped merging requests because"
            " the model's output is not one row per input row.",
            "# TYPE legion_model_unbatched_workers gauge",
            f"legion_model_unbatched_workers {unbatched}",
            "# HELP legion_model_requests_total HTTP requests answered, by route and status.",
            "# TYPE legion_model_requests_total counter",
        ]
        for (route, status), n in sorted(requests.items()):
            out.append(
                f'legion_model_requests_total{{route="{_esc(route)}",status="{status}"}} {n}'
            )
        out += [
            "# HELP legion_model_request_duration_seconds Time from request to answer.",
            "# TYPE legion_model_request_duration_seconds histogram",
        ]
        for route, hist in sorted(latency.items()):
            out += _histogram("legion_model_request_duration_seconds", hist, f'route="{route}"')
        for name, hist, help_text in (
            ("legion_model_batch_rows", batch_rows, "Rows per predict() call."),
            ("legion_model_batch_requests", batch_requests, "Requests merged per predict() call."),
            ("legion_model_predict_duration_seconds", predict_seconds, "Time in predict()."),
        ):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
            out += _histogram(name, hist, "")
        return "\n".join(out) + "\n"


def _ask(path: Path, deadline: float) -> dict[str, Any] | None:
    """A worker's live counters through its unix socket; None when it cannot answer before
    `deadline`."""
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(left)
            sock.connect(str(path))
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                sock.settimeout(max(0.001, deadline - time.monotonic()))
        return json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None


def _alive(path: Path) -> bool:
    """Whether the worker that wrote a snapshot still runs: a dead worker's figures must not
    keep counting beside its replacement's (the supervisor also deletes them)."""
    try:
        pid = int(path.stem.rpartition("-")[2])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name: str, hist: Histogram, labels: str) -> list[str]:
    sep = "," if labels else ""
    lines, cumulative = [], 0
    for bound, n in zip(hist.bounds, hist.counts, strict=False):
        cumulative += n
        lines.append(f'{name}_bucket{{{labels}{sep}le="{_fmt(bound)}"}} {cumulative}')
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {hist.count}')
    braces = f"{{{labels}}}" if labels else ""
    lines.append(f"{name}_sum{braces} {hist.sum!r}")
    lines.append(f"{name}_count{braces} {hist.count}")
    return lines


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and bound >= 1 else repr(float(bound))
