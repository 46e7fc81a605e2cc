"""Serve settings: one declaration gives every option its LEGION_SERVE_* variable; two servers
share a port with --reuse-port; a server without --log-requests writes nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from click.testing import CliRunner

from legion_ci.cli.serve import serve as serve_cli
from legion_ci.server.config import ServeSettings, serve_env_vars, settings
from tests.procs import free_port
from tests.server_support import Server, make_tiny_model


def test_every_setting_has_one_env_var_listed_in_help() -> None:
    rows = serve_env_vars()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    assert all(name.startswith("LEGION_SERVE_") for name in names)
    declared = {f for f in ServeSettings.__dataclass_fields__ if f != "metrics_dir"}
    assert {s.name for s in settings()} == declared
    by_name = {name: (default, help_text) for name, default, help_text in rows}
    assert by_name["LEGION_SERVE_PORT"][0] == "5000"
    assert by_name["LEGION_SERVE_REUSE_PORT"][0] == "false"
    assert by_name["LEGION_SERVE_ARTIFACT"][0] == ""
    assert all(help_text for _, help_text in by_name.values())
    text = CliRunner().invoke(serve_cli, ["--help"], terminal_width=200).output
    for name in names:
        assert name in text, name


def test_settings_are_read_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}

    def fake_run(settings: ServeSettings) -> int:
        seen["settings"] = settings
        return 0

    import legion_ci.server.process as process

    monkeypatch.setattr(process, "serve", fake_run)
    model = make_tiny_model(tmp_path / "m")
    env = {
        "LEGION_SERVE_ARTIFACT": str(model),
        "LEGION_SERVE_PORT": "6123",
        "LEGION_SERVE_REUSE_PORT": "true",
        "LEGION_SERVE_HEADER_TIMEOUT_S": "3.5",
        "LEGION_SERVE_LOG_LEVEL": "warning",
        "LEGION_SERVE_MAX_CONNECTIONS": "7",
    }
    result = CliRunner().invoke(serve_cli, ["--workers", "2"], env=env)
    assert result.exit_code == 0, result.output
    got = seen["settings"]
    assert (got.artifact, got.port, got.reuse_port, got.workers) == (str(model), 6123, True, 2)
    assert (got.header_timeout_s, got.log_level, got.max_connections) == (3.5, "warning", 7)
    bad = CliRunner().invoke(serve_cli, [str(model)], env={"LEGION_SERVE_MAX_CONNECTIONS": "0"})
    assert bad.exit_code != 0 and "max connections must be at least 1" in str(bad.exception)


def test_two_servers_share_one_port_with_reuse_port(tmp_path: Path) -> None:
    port = free_port()
    old = Server(make_tiny_model(tmp_path / "old", "1.0"), "--reuse-port", port=port)
    new = None
    try:
        old.wait_ready()
        new = Server(make_tiny_model(tmp_path / "new", "2.0"), "--reuse-port", port=port)
        new.wait_ready()
        assert old.port == new.port == port
        seen = set()
        for _ in range(400):  # each request on a new connection: the kernel picks a server
            status, headers, body = old.request(
                "POST", "/api/model/invoke", {"data": [[1, 2, None]]}
            )
            assert status == 200 and body["prediction"] == [[3, -1]]
            seen.add(headers["model-version"])
            if len(seen) == 2:
                break
        assert seen == {"1.0", "2.0"}
    finally:
        if new is not None:
            assert new.stop() == 0, new.log
        assert old.stop() == 0, old.log


def test_without_log_requests_nothing_is_written(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m")
    cwd = tmp_path / "readonly"
    cwd.mkdir()
    cwd.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    srv = Server(model, cwd=cwd)
    try:
        srv.wait_ready()
        assert srv.request("POST", "/api/model/invoke", {"data": [[1, 2, None]]})[0] == 200
        status, _, body = srv.request(
            "POST", "/api/model/feedback", {"truth": 1}, headers={"Request-ID": "r1"}
        )
        assert status == 404 and "--log-requests" in body["message"]
    finally:
        assert srv.stop() == 0, srv.log
    cwd.chmod(0o755)
    # As root the mode above does not stop writes, so check that nothing was created.
    assert os.listdir(cwd) == []
