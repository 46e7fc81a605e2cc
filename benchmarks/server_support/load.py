"""Drive a server with wrk and read back requests/s, p99 latency and errors."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class LoadResult:
    rps: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers plus socket errors


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not found:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def run_wrk(
    wrk: str, port: int, path: str, body: str, *, conns: int, seconds: float, script_dir: Path
) -> LoadResult:
    script = script_dir / f"post-{port}-{abs(hash(body))}.lua"
    script.write_text(
        "wrk.method = 'POST'\n"
        f"wrk.body = {json.dumps(body)}\n"
        "wrk.headers['Content-Type'] = 'application/json'\n"
    )
    threads = min(2, conns)
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(rps, p99, total, errors)
