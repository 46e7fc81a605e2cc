"""Run this repository's GitHub Actions workflows for real with `act`, offline, without Docker.

`act -P ubuntu-latest=-self-hosted` runs each step as a process on this machine. It skips
`actions/checkout` of the repository itself (it copies the work tree instead), but every other
action from GitHub would be cloned from the internet, which is not reachable here. Those are
replaced with `--local-repository` by stand-ins written here, at the exact commits our actions
pin:
- actions/upload-artifact: a node action built on `@actions/artifact`, the library the real
  action wraps, uploading to act's own artifact server on 127.0.0.1 (so the artifact is real);
- actions/setup-python: reports this machine's Python 3.11, as setup-python does on a
  self-hosted runner whose tool cache already holds it;
- actions/cache/restore and /save: no-ops reporting a cache miss; the environment still
  persists between runs in act's tool cache, as on a self-hosted runner.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from procs import free_port

from legion_ci.runner.process import terminate_group

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(sys.executable).parent

# Each pinned action -> the stand-in folder that replaces it (names as in the action files).
PINS = {
    "actions/setup-python": "a26af69be951a213d495a4c3e4e4022e16d87065",
    "actions/cache": "0400d5f644dc74513175e3cd8d07132dd4860809",
    "actions/upload-artifact": "ea165f8d65b6e75b540449e92b4886f43607fa02",
}
# What the temporary repository needs to install legion-ci from its checkout and run the wine
# example; .legion/ run folders and caches are left behind.
COPIED = [
    ".github",
    "github-actions",
    "legion_ci",
    "toolchains",
    "pipelines",
    "examples",
    "setup.py",
    "pyproject.toml",
    "README.md",
]
IGNORED = shutil.ignore_patterns(".legion", "__pycache__", "*.egg-info", "mlruns", "node_modules")


def ci_cache() -> Path:
    return Path(os.environ.get("LEGION_CI_CI_CACHE") or Path.home() / ".cache" / "legion-ci-ci")


def node_modules() -> Path:
    """Where scripts/setup.d/40-github-actions.sh installs `@actions/artifact`."""
    return ci_cache() / "github-actions" / "node_modules"


def make_repo(target: Path) -> Path:
    """A git repository holding a copy of what the self-test workflow needs, committed."""
    target.mkdir(parents=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, target / name)
    git = ["git", "-C", str(target), "-c", "user.name=act", "-c", "user.email=act@127.0.0.1"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "self-test"], check=True)
    return target


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def make_stand_ins(folder: Path) -> dict[str, Path]:
    """The stand-in action folders, by pinned repository."""
    python = Path(getattr(sys, "_base_executable", sys.executable))
    _write(
        folder / "setup-python" / "action.yml",
        f"""
        name: setup-python stand-in
        description: This machine's Python, as on a self-hosted runner that already has it.
        inputs:
          python-version: {{description: Ignored; the stand-in offers one Python., default: ""}}
          update-environment: {{description: Put it on PATH., default: "true"}}
        outputs:
          python-version: {{description: Its version., value: "${{{{ steps.py.outputs.v }}}}"}}
          python-path: {{description: Its interpreter., value: "{python}"}}
        runs:
          using: composite
          steps:
            - id: py
              shell: bash
              run: echo "v={platform.python_version()}" >> "$GITHUB_OUTPUT"
        """,
    )
    for part in ("restore", "save"):
        _write(
            folder / "cache" / part / "action.yml",
            f"""
            name: cache {part} stand-in
            description: No cache service here; reports a miss.
            inputs:
              path: {{description: Paths., required: true}}
              key: {{description: Key., required: true}}
            outputs:
              cache-hit: {{description: Always false., value: "false"}}
            runs:
              using: composite
              steps:
                - shell: bash
                  run: echo "cache {part} stand-in"
            """,
        )
    _write(
        folder / "upload-artifact" / "action.yml",
        """
        name: upload-artifact stand-in
        description: Uploads with @actions/artifact, the library actions/upload-artifact wraps.
        inputs:
          name: {description: Artifact name., default: artifact}
          path: {description: Paths, one a line., required: true}
          if-no-files-found: {description: warn, error or ignore., default: warn}
          include-hidden-files: {description: Ignored; all is uploaded., default: "false"}
        outputs:
          artifact-id: {description: The artifact's id.}
        runs:
          using: node20
          main: index.js
        """,
    )
    _write(
        folder / "upload-artifact" / "index.js",
        f"""
        const fs = require('fs');
        const path = require('path');
        const modules = {str(node_modules())!r};
        const core = require(path.join(modules, '@actions/core'));
        const {{DefaultArtifactClient}} = require(path.join(modules, '@actions/artifact'));

        function walk(p, out) {{
          if (fs.statSync(p).isDirectory()) {{
            for (const entry of fs.readdirSync(p)) walk(path.join(p, entry), out);
          }} else {{
            out.push(p);
          }}
        }}

        async function main() {{
          const paths = core.getInput('path').split('\\n').map(s => s.trim()).filter(Boolean)
            .map(p => path.resolve(p));
          const files = [];
          for (const p of paths) if (fs.existsSync(p)) walk(p, files);
          if (files.length === 0) {{
            const message = `no files found in ${{paths.join(', ')}}`;
            if (core.getInput('if-no-files-found') === 'error') throw new Error(message);
            core.warning(message);
            return;
          }}
          // The least common ancestor of the given paths is the artifact's root, as upstream.
          let root = paths.length === 1 && fs.statSync(paths[0]).isDirectory()
            ? paths[0] : path.dirname(paths[0]);
          for (const p of paths) while (!(p + path.sep).startsWith(root + path.sep)) {{
            root = path.dirname(root);
          }}
          const result = await new DefaultArtifactClient().uploadArtifact(
            core.getInput('name'), files, root);
          core.setOutput('artifact-id', String(result.id));
          console.log(`uploaded ${{files.length}} files as ${{core.getInput('name')}}`);
        }}

        main().catch(err => core.setFailed(err.message));
        """,
    )
    return {repo: folder / repo.split("/")[1] for repo in PINS}


@dataclass
class ActRun:
    code: int
    log: str
    artifacts: Path

    def outputs(self) -> dict[str, str]:
        """Step outputs act reports (`::set-output:: name=value`), last value wins."""
        found: dict[str, str] = {}
        for match in re.finditer(r"::set-output:: ([\w-]+)=(.*)", self.log):
            found[match.group(1)] = match.group(2).strip()
        return found

    def summary(self) -> str:
        """What the steps appended to the job summary (act logs it as `Summary - ...`)."""
        parts = re.findall(r"⚙\s+Summary - (.*?)(?=\n\[[^\]]+\] |\Z)", self.log, flags=re.S)
        return "\n".join(parts)

    def artifact_zips(self) -> list[Path]:
        return sorted(self.artifacts.rglob("*.zip"))


def run_act(
    repo: Path,
    work: Path,
    *,
    event: str = "push",
    inputs: dict[str, str] | None = None,
    timeout: float = 600,
) -> ActRun:
    """Run the repository's workflows for `event` with act; `work` keeps act's action cache
    (and so its tool cache) between runs."""
    stand_ins = make_stand_ins(work / "stand-ins")
    artifacts = work / f"artifacts-{event}-{len(list(work.glob('artifacts-*')))}"
    argv = [
        str(TOOLS / "act"),
        event,
        "-P",
        "ubuntu-latest=-self-hosted",
        "--no-cache-server",
        "--cache-server-addr",
        "127.0.0.1",
        "--artifact-server-addr",
        "127.0.0.1",
        "--artifact-server-port",
        str(free_port()),
        "--artifact-server-path",
        str(artifacts),
        "--action-cache-path",
        str(work / "act-cache"),
        "--action-offline-mode",
    ]
    for name, folder in stand_ins.items():
        argv += ["--local-repository", f"{name}@{PINS[name]}={folder}"]
    for key, value in (inputs or {}).items():
        argv += ["--input", f"{key}={value}"]
    # The steps run as processes on this machine with this environment: keep the test's own
    # CI variables out of them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.pop("LEGION_CI_PIPELINE", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    proc = subprocess.Popen(
        argv,
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        terminate_group(proc, grace=10)
    return ActRun(proc.returncode, out, artifacts)
