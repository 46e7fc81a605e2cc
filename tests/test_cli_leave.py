"""The console script's exit without the interpreter's teardown (legion_ci/cli/leave.py): what
a normal exit does that can be observed still happens (threads finished, atexit handlers and
finalizers run, every byte written), the exit code stands, and an in-process caller still gets
SystemExit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from legion_ci.cli.main import main

# The program as the console script runs it (argv from sys.argv), with work a normal exit
# would finish: a non-daemon thread still writing, a thread pool's worker, an atexit handler,
# a weakref.finalize (what cleans a TemporaryDirectory nobody closed).
PROGRAM = textwrap.dedent(
    """
    import atexit, concurrent.futures, sys, tempfile, threading, time
    from pathlib import Path

    out = Path(sys.argv.pop(1))
    gate = threading.Event()

    def late_writer():
        gate.wait()
        time.sleep(0.2)  # still running when main() decides to leave
        (out / "thread").write_text("done")

    threading.Thread(target=late_writer).start()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    pool.submit(lambda: (out / "pool").write_text("done"))
    atexit.register(lambda: (out / "atexit").write_text("done"))
    kept = tempfile.TemporaryDirectory(dir=out)
    (out / "tempdir").write_text(kept.name)
    gate.set()

    from legion_ci.cli.main import main

    main()
    """
)


def _program(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_what_a_normal_exit_does_still_happens(tmp_path: Path) -> None:
    done = _program(tmp_path, "schema")
    assert done.returncode == 0, done.stderr
    # Every byte of a large output is written (the schema is tens of kilobytes).
    schema = json.loads(done.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert len(done.stdout) > 20_000
    for name in ("thread", "pool", "atexit"):
        assert (tmp_path / name).read_text() == "done", name
    assert not Path((tmp_path / "tempdir").read_text()).exists()


def test_the_exit_code_and_the_error_line_stand(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nstages: [\n", encoding="utf-8")
    done = _program(tmp_path, "validate", str(bad))
    assert done.returncode == 2, done.stderr
    assert f"{bad}:" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "atexit").read_text() == "done"


def test_an_in_process_caller_gets_system_exit(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nstages: [\n", encoding="utf-8")
    with pytest.raises(SystemExit) as raised:
        main(["validate", str(bad)])
    assert raised.value.code == 2
