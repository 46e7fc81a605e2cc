"""Benchmark the model REST server against `mlflow models serve` and MLServer, in one run.

    .venv/bin/python benchmarks/bench_server.py [--seconds 10] [--models rf,wine]

Sets up what it needs: wrk (apt-get, if missing), MLServer in a cached venv
(~/.cache/legion-ci-bench/mlserver-venv), the two models logged with MLflow. Each server is
started, loaded with the same wrk scenarios on 127.0.0.1, and stopped (on failure too), one
after the other. Prints requests/s and p99 per server and scenario, the ratios legion/mlflow
and legion/mlserver, start-to-ready time and resident memory per process. `legion-uvicorn` is
the same server through `--http uvicorn`: the native front end earns its place only by the
native/uvicorn ratio printed from the same run (`--servers legion,legion-uvicorn` for that
alone). `--starts N` measures only start-to-ready: each server started N times, the servers
taking turns (so a burst of load on a shared machine hits them alike), medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from benchmarks.server_support.load import LoadResult, run_wrk  # noqa: E402
from benchmarks.server_support.models import build  # noqa: E402
from benchmarks.server_support.servers import (  # noqa: E402
    CACHE,
    Running,
    ensure_mlserver,
    ensure_wrk,
    start,
)

SCENARIOS = [(1, 64), (1, 16), (100, 16)]  # (rows per request, connections)
SERVERS = ["mlflow", "mlserver", "legion", "legion-uvicorn"]


def _predictions(run: Running, model, rows: int = 3) -> list[float]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{run.port}{run.path}",
        data=run.body(model, rows).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc = json.loads(resp.read())
    if run.kind == "legion":
        return [r[0] for r in doc["prediction"]]
    if run.kind == "mlflow":
        return list(doc["predictions"])
    return list(doc["outputs"][0]["data"])


def _start(kind: str, model, args, workdir: Path) -> Running:
    # legion-uvicorn: the same server and model through the uvicorn front end.
    base, http = ("legion", "uvicorn") if kind == "legion-uvicorn" else (kind, args.legion_http)
    return start(base, model, workdir, legion_workers=args.legion_workers, legion_http=http)


def bench_server(kind, model, args, workdir, wrk) -> dict:
    run = _start(kind, model, args, workdir)
    try:
        result = {"start_to_ready_s": round(run.start_to_ready_s, 2), "scenarios": {}}
        result["check"] = _predictions(run, model)
        for rows, conns in args.scenario_list:
            body = run.body(model, rows)
            run_wrk(wrk, run.port, run.path, body, conns=conns, seconds=args.warmup,
                    script_dir=workdir)  # fmt: skip
            res: LoadResult = run_wrk(
                wrk, run.port, run.path, body, conns=conns, seconds=args.seconds, script_dir=workdir
            )
            result["scenarios"][f"{rows}x{conns}"] = res.__dict__
            print(
                f"  {model.key:5} {kind:14} {rows:>3} rows {conns:>2} conns: {res.rps:9.1f} req/s"
                f"  p99 {res.p99_ms:8.1f} ms  errors {res.errors}",
                flush=True,
            )
        run.measure_memory()
        result["rss_mib"] = run.rss_mib
        return result
    finally:
        run.stop()


def report(results: dict, models: list[str], servers: list[str], scenarios: list) -> None:
    print("\n== results (same run, same machine, wrk on 127.0.0.1) ==")
    for key in models:
        per = results[key]
        print(f"\nmodel {key}")
        print(
            "  scenario    " + "".join(f"{k:>22}" for k in servers) + "   legion/mlflow"
            "  legion/mlserver  p99 mlflow/legion  p99 mlserver/legion"
        )
        for rows, conns in scenarios:
            sc = f"{rows}x{conns}"
            cells = "".join(
                f"{per[k]['scenarios'][sc]['rps']:>10.1f}/s"
                f" {per[k]['scenarios'][sc]['p99_ms']:>7.1f}ms"
                for k in servers
            )
            ratios = ""
            if {"legion", "mlflow", "mlserver"} <= set(servers):
                lg = per["legion"]["scenarios"][sc]
                mf = per["mlflow"]["scenarios"][sc]
                ms = per["mlserver"]["scenarios"][sc]
                ratios = (
                    f"   {lg['rps'] / mf['rps']:>11.1f}x"
                    f"  {lg['rps'] / ms['rps']:>14.2f}x  {mf['p99_ms'] / lg['p99_ms']:>16.1f}x"
                    f"  {ms['p99_ms'] / lg['p99_ms']:>18.2f}x"
                )
            if {"legion", "legion-uvicorn"} <= set(servers):
                native = per["legion"]["scenarios"][sc]
                uv = per["legion-uvicorn"]["scenarios"][sc]
                ratios += (
                    f"   native/uvicorn {native['rps'] / uv['rps']:.2f}x req/s,"
                    f" p99 uvicorn/native {uv['p99_ms'] / native['p99_ms']:.2f}x"
                )
            print(f"  {rows:>3} rows/{conns:>2}c{cells}{ratios}")
        for k in servers:
            print(
                f"  {k:14} start-to-ready {per[k]['start_to_ready_s']:5.2f} s,"
                f" RSS per process (MiB): {per[k]['rss_mib']}"
            )


def bench_starts(models: list[str], servers: list[str], args, workdir: Path) -> None:
    """Start-to-ready only: every server started `args.starts` times, taking turns."""
    for key in models:
        model = build(CACHE / "models", key)
        times: dict[str, list[float]] = {k: [] for k in servers}
        for _ in range(args.starts):
            for kind in servers:
                run = _start(kind, model, args, workdir)
                run.stop()
                times[kind].append(run.start_to_ready_s)
        print(f"\nmodel {key}: start to ready, {args.starts} starts each, servers taking turns")
        median = {k: statistics.median(v) for k, v in times.items()}
        for kind in servers:
            ratios = "".join(
                f"  {median[kind] / median[peer]:.2f}x {peer}"
                for peer in ("mlflow", "mlserver")
                if peer in median and peer != kind
            )
            spread = f"{min(times[kind]):.2f}-{max(times[kind]):.2f}"
            print(f"  {kind:14} median {median[kind]:5.2f} s (range {spread}){ratios}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured time per scenario")
    parser.add_argument("--models", default="rf,wine")
    parser.add_argument("--legion-workers", type=int, default=1)
    parser.add_argument(
        "--legion-http", default="native", choices=["native", "uvicorn"], help="legion front end"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="subset of mlflow,mlserver,legion,legion-uvicorn",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(f"{r}x{c}" for r, c in SCENARIOS),
        help="subset of ROWSxCONNS, e.g. 1x64",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--starts", type=int, default=0, help="measure only start-to-ready, N starts per server"
    )
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    servers = [k for k in SERVERS if k in args.servers.split(",")]
    args.scenario_list = [(r, c) for r, c in SCENARIOS if f"{r}x{c}" in args.scenarios.split(",")]
    if not servers or not args.scenario_list:
        parser.error("no server or no scenario selected")

    if "mlserver" in servers:
        ensure_mlserver()
    if args.starts > 0:
        with tempfile.TemporaryDirectory(prefix="legion-bench-") as tmp:
            bench_starts(models, servers, args, Path(tmp))
        return 0
    wrk = ensure_wrk()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="legion-bench-") as tmp:
        workdir = Path(tmp)
        for key in models:
            model = build(CACHE / "models", key)
            print(f"model {key}: {len(model.columns)} columns", flush=True)
            results[key] = {}
            for kind in servers:
                results[key][kind] = bench_server(kind, model, args, workdir, wrk)
            checks = {k: results[key][k]["check"] for k in servers}
            ref = checks[servers[0]]
            for k in servers:
                if any(abs(a - b) > 1e-6 * max(1.0, abs(b))
                       for a, b in zip(checks[k], ref, strict=True)):  # fmt: skip
                    print(f"  WARNING: {k} predicts {checks[k]}, {servers[0]} {ref}")
    report(results, models, servers, args.scenario_list)
    results["_meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "legion_workers": args.legion_workers,
        "legion_http": args.legion_http,
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
