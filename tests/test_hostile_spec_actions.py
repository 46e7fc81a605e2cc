"""Issue 21, hostile inputs of the GitHub actions' scripts: a control character in an input or
in the pipeline's workspace never becomes an extra line of $GITHUB_OUTPUT, and an input that
looks like an option (`--help`, `--dry-run`) is passed as an operand. The scripts run directly
with bash, as the composite actions run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SH_PIPELINE, run_cli, write

RUN = REPO / "github-actions" / "run"
SETUP = REPO / "github-actions" / "setup"


def fake_legion_ci(folder: Path) -> tuple[Path, Path]:
    """A `legion-ci` that records its arguments (one per line, escaped) and, for `report
    workspace`, prints $FAKE_WORKSPACE; its folder also holds a `python`, as a venv does."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    calls = folder / "calls"
    script = bin_dir / "legion-ci"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'for a in "$@"; do printf "%q\\n" "$a"; done >>"{calls}"\n'
        f'echo "---" >>"{calls}"\n'
        'if [ "$1" = report ]; then printf "%s\\n" "$FAKE_WORKSPACE"; fi\n'
    )
    script.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir, calls


def run_script(script: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script)],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def calls_of(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    out: list[list[str]] = [[]]
    for line in calls.read_text().splitlines():
        if line == "---":
            out.append([])
        else:
            out[-1].append(line)
    return [c for c in out if c]


# -- run.sh ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "pipeline", "run_id", "expected"),
    [
        ("", "--help", "", ["run", "--output", "json", "--", "--help"]),
        ("--dry-run", "p.yaml", "", ["stage", "--output", "json", "--", "--dry-run", "p.yaml"]),
        (
            "package",
            "--version",
            "--help",
            ["stage", "--output", "json", "--run-id=--help", "--", "package", "--version"],
        ),
    ],
)
def test_run_passes_inputs_as_operands(
    tmp_path: Path, stage: str, pipeline: str, run_id: str, expected: list[str]
) -> None:
    bin_dir, calls = fake_legion_ci(tmp_path)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PIPELINE_FILE": pipeline}
    env.update({"STAGE": stage, "RUN_ID": run_id})
    proc = run_script(RUN / "run.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls_of(calls) == [expected]


@pytest.mark.parametrize("name", ["PIPELINE_FILE", "STAGE", "RUN_ID"])
def test_run_refuses_control_characters_in_inputs(tmp_path: Path, name: str) -> None:
    bin_dir, calls = fake_legion_ci(tmp_path)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PIPELINE_FILE": "p.yaml"}
    env.update({"STAGE": "train", "RUN_ID": ""})
    env[name] = "x\nstatus=succeeded"
    proc = run_script(RUN / "run.sh", env, tmp_path)
    assert proc.returncode == 2
    assert f"the {name} input holds a control character" in proc.stdout
    assert "status=succeeded" not in proc.stdout + proc.stderr
    assert calls_of(calls) == []


def test_the_cli_takes_operands_after_a_double_dash(sh_pipeline: Path) -> None:
    """What run.sh, history.sh and pr-comment.sh now rely on, with the real legion-ci."""
    stage = run_cli("stage", "--output", "json", "--dry-run", "--", "train", str(sh_pipeline))
    assert '"stage": "train"' in stage.assert_success().out
    run_cli("run", "--output", "json", "--dry-run", "--", str(sh_pipeline)).assert_success()
    workspace = run_cli("report", "workspace", "--", str(sh_pipeline)).assert_success()
    assert workspace.out.strip() == str(sh_pipeline.parent / ".legion")
    run_cli("run", "--output", "json", "--", "--help").assert_failed(2)


# -- history.sh --------------------------------------------------------------------------------


def test_history_writes_one_records_line(tmp_path: Path) -> None:
    bin_dir, calls = fake_legion_ci(tmp_path)
    output = tmp_path / "github_output"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PIPELINE_FILE": "--help",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_WORKSPACE": str(tmp_path),
        "FAKE_WORKSPACE": str(tmp_path / "ws"),
    }
    proc = run_script(RUN / "history.sh", env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert output.read_text() == "records=ws/runs/*/record.json\n"
    assert calls_of(calls) == [["report", "workspace", "--", "--help"]]


def test_history_refuses_a_workspace_with_a_newline(sh_project: Path) -> None:
    """`report workspace` does not validate the file, so the script itself must refuse."""
    pipeline = write(sh_project / "p.yaml", SH_PIPELINE + 'workspace: "ws\\nstatus=succeeded"\n')
    output = sh_project / "github_output"
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PIPELINE_FILE": str(pipeline),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_WORKSPACE": str(sh_project),
    }
    proc = run_script(RUN / "history.sh", env, sh_project)
    assert proc.returncode == 0, proc.stderr
    assert "the workspace path holds a control character" in proc.stdout
    assert not output.exists() or output.read_text() == ""
    # The pipeline itself is refused by validation, at the field.
    outcome = run_cli("validate", str(pipeline)).assert_failed(2)
    assert ":12:12: workspace: control character \\n is not allowed" in outcome.err


def test_history_refuses_a_pipeline_path_with_a_newline(tmp_path: Path) -> None:
    bin_dir, calls = fake_legion_ci(tmp_path)
    output = tmp_path / "github_output"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PIPELINE_FILE": "p.yaml\nrecords=/etc",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_WORKSPACE": str(tmp_path),
        "FAKE_WORKSPACE": str(tmp_path / "ws"),
    }
    proc = run_script(RUN / "history.sh", env, tmp_path)
    assert proc.returncode == 0
    assert not output.exists()
    assert calls_of(calls) == []


# -- setup: venv_key.py and install.sh ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEGION_CI_SPEC", "legion-ci==0.1.0\nvenv=/victim"),
        ("LEGION_CI_SPEC", "legion-ci==0.1.0\rvenv=/victim"),
        ("LEGION_CI_VERSION", "0.1.0\nvenv=/victim"),
        ("RUNNER_TOOL_CACHE", "/tmp/cache\nvenv=/victim"),
    ],
)
def test_venv_key_refuses_control_characters(tmp_path: Path, name: str, value: str) -> None:
    output = tmp_path / "github_output"
    env = {
        "PATH": os.environ["PATH"],
        "GITHUB_OUTPUT": str(output),
        "LEGION_CI_VERSION": "0.1.0",
        name: value,
    }
    proc = subprocess.run(
        [sys.executable, str(SETUP / "venv_key.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "holds a control character" in proc.stdout
    assert not output.exists() or "/victim" not in output.read_text()


def test_venv_key_writes_one_line_per_output(tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    env = {"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), "LEGION_CI_VERSION": "0.1.0"}
    env["RUNNER_TOOL_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, str(SETUP / "venv_key.py")], env=env, text=True, check=False
    )
    assert proc.returncode == 0
    lines = output.read_text().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["venv", "requirement", "local", "key"]


def test_install_refuses_a_forged_venv_and_removes_nothing(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    env = {
        "PYTHON": sys.executable,
        "VENV": f"{tmp_path}/cache/abc\n{victim}",
        "REQUIREMENT": "legion-ci==0.1.0",
        "LOCAL": "false",
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_PATH": str(tmp_path / "path"),
    }
    proc = run_script(SETUP / "install.sh", env, tmp_path)
    assert proc.returncode == 2
    assert "VENV holds a control character" in proc.stdout
    assert (victim / "keep").read_text() == "precious"
