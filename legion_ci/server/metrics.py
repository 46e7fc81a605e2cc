"""Legion's Model Prediction Metrics in Prometheus text format, hand-written to stay off the hot
path: recording a request is a dict increment and a bisect.

Several worker processes share one port, so a scrape lands on any one of them. Each worker
writes a snapshot of its counters to a shared folder every second; /metrics adds the other
workers' latest snapshots to its own live counters (their figures lag by up to a second).
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

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

    def _others(self) -> list[dict[str, Any]]:
        if self.metrics_dir is None:
            return []
        own = f"worker-{os.getpid()}.json"
        found = []
        for path in sorted(self.metrics_dir.glob("worker-*.json")):
            if path.name == own or not _alive(path):
                continue
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a worker's snapshot being replaced; the next scrape gets it
        return found

    def render(self) -> str:
        requests = dict(self.requests)
        latency = {r: _copy(h) for r, h in self.latency.items()}
        batch_rows, batch_requests = _copy(self.batch_rows), _copy(self.batch_requests)
        predict_seconds = _copy(self.predict_seconds)
        workers, ready_workers, unbatched = 1, int(self.ready), int(self.unbatched)
        for snap in self._others():
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


def _copy(hist: Histogram) -> Histogram:
    new = Histogram(hist.bounds)
    new.add(hist.to_dict())
    return new


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
