"""Run this repository's GitHub Actions workflows for real with `act`, offline, without Docker.

`act -P ubuntu-latest=-self-hosted` runs each step as a process on this machine. It skips
`actions/checkout` of the repository itself (it copies the work tree instead), but every other
action from GitHub would be cloned from the internet, which is not reachable here. Those are
replaced with `--local-repository` by stand-ins written here, at the exact commits our actions
pin:
- actions/upload-artifact and download-artifact: node actions built on `@actions/artifact`,
  the library the real actions wrap, talking to act's own artifact server on 127.0.0.1 (so
  the artifacts are real);
- actions/setup-python: reports this machine's Python 3.11, as setup-python does on a
  self-hosted runner whose tool cache already holds it;
- actions/cache/restore and /save: a local folder keyed like the real cache (exact key, then
  the newest entry starting with a restore key), for paths inside the workspace; other paths
  (the setup action's environment) are left alone and persist in act's tool cache instead,
  as on a self-hosted runner. That tool cache is kept under the CI cache folder, so only the
  first test session on a machine (or one after a change to setup.py) installs legion-ci's
  dependencies; later ones reinstall only legion-ci.
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

from procs import free_port, run_group

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(sys.executable).parent

# Each pinned action -> the stand-in folder that replaces it (names as in the action files).
PINS = {
    "actions/setup-python": "a26af69be951a213d495a4c3e4e4022e16d87065",
    "actions/cache": "0400d5f644dc74513175e3cd8d07132dd4860809",
    "actions/upload-artifact": "ea165f8d65b6e75b540449e92b4886f43607fa02",
    "actions/download-artifact": "d3f86a106a0bac45b974a628896c90dbdf5c8093",
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


CACHE_STAND_IN = """
import glob, os, shutil, sys, time
from pathlib import Path

workspace = Path(os.environ["GITHUB_WORKSPACE"]).resolve()
store = Path(os.environ["CACHE_STORE"])
key = os.environ["CACHE_KEY"]
patterns = [p.strip() for p in os.environ["CACHE_PATHS"].splitlines() if p.strip()]
inside = [p for p in patterns if not os.path.isabs(os.path.expanduser(p))]
hit = "false"
if not inside:
    print(f"cache stand-in: {patterns} is outside the workspace, left alone")
elif sys.argv[1] == "save":
    files = [Path(f) for p in inside for f in glob.glob(p, root_dir=workspace, recursive=True)]
    entry = store / key
    for file in files:
        (entry / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workspace / file, entry / file)
    print(f"cache stand-in saved {key}: {len(files)} files")
else:
    prefixes = [p.strip() for p in os.environ["CACHE_RESTORE_KEYS"].splitlines() if p.strip()]
    entries = sorted(store.glob("*"), key=lambda e: e.stat().st_mtime, reverse=True)
    found = next((e for e in entries if e.name == key), None)
    hit = "true" if found else "false"
    for prefix in prefixes:
        found = found or next((e for e in entries if e.name.startswith(prefix)), None)
    if found is None:
        print(f"cache stand-in: no entry for {key}")
    else:
        files = [f for f in found.rglob("*") if f.is_file()]
        for file in files:
            target = workspace / file.relative_to(found)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
        print(f"cache stand-in restored {found.name}: {len(files)} files")
with open(os.environ["GITHUB_OUTPUT"], "a") as out:
    out.write(f"hit={hit}\\n")
"""


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
    store = folder / "cache-store"
    _write(folder / "cache" / "cache.py", CACHE_STAND_IN)
    for part in ("restore", "save"):
        _write(
            folder / "cache" / part / "action.yml",
            f"""
            name: cache {part} stand-in
            description: Paths inside the workspace kept in a local folder; others left alone.
            inputs:
              path: {{description: Paths or globs, one a line., required: true}}
              key: {{description: Key., required: true}}
              restore-keys: {{description: Key prefixes, one a line., default: ""}}
            outputs:
              cache-hit: {{description: Exact key found., value: "${{{{ steps.c.outputs.hit }}}}"}}
            runs:
              using: composite
              steps:
                - id: c
                  shell: bash
                  env:
                    CACHE_PATHS: ${{{{ inputs.path }}}}
                    CACHE_KEY: ${{{{ inputs.key }}}}
                    CACHE_RESTORE_KEYS: ${{{{ inputs.restore-keys }}}}
                    CACHE_STORE: {store}
                  run: '"{python}" "{folder / "cache" / "cache.py"}" {part}'
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
    _write(
        folder / "download-artifact" / "action.yml",
        """
        name: download-artifact stand-in
        description: Downloads with @actions/artifact, the library actions/download-artifact wraps.
        inputs:
          name: {description: Artifact name., required: true}
          path: {description: Destination folder., default: "."}
        outputs:
          download-path: {description: Where the files went.}
        runs:
          using: node20
          main: index.js
        """,
    )
    _write(
        folder / "download-artifact" / "index.js",
        f"""
        const path = require('path');
        const modules = {str(node_modules())!r};
        const core = require(path.join(modules, '@actions/core'));
        const {{DefaultArtifactClient}} = require(path.join(modules, '@actions/artifact'));

        async function main() {{
          const client = new DefaultArtifactClient();
          const {{artifact}} = await client.getArtifact(core.getInput('name'));
          const target = path.resolve(core.getInput('path'));
          await client.downloadArtifact(artifact.id, {{path: target}});
          core.setOutput('download-path', target);
          console.log(`downloaded ${{artifact.name}} to ${{target}}`);
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

    def entries(self, job: str | None = None) -> list[str]:
        """act's log entries (a line prefixed `[workflow/job]`, with the unprefixed lines
        that continue it), of one job or all."""
        found: list[tuple[str, str]] = []
        for line in self.log.splitlines():
            match = re.match(r"\[([^\]]+)\] ", line)
            if match:
                found.append((match.group(1), line[match.end() :]))
            elif found:
                found[-1] = (found[-1][0], found[-1][1] + "\n" + line)
        # act pads the job names of a multi-job run to one width.
        return [t for name, t in found if job is None or name.strip().endswith("/" + job)]

    def outputs(self, job: str) -> dict[str, str]:
        """Step outputs act reports for a job (`::set-output:: name=value`), last one wins."""
        found: dict[str, str] = {}
        for text in self.entries(job):
            match = re.search(r"::set-output:: ([\w-]+)=(.*)", text)
            if match:
                found[match.group(1)] = match.group(2).strip()
        return found

    def summary(self, job: str) -> str:
        """What a job's steps appended to its job summary (act logs `Summary - ...`)."""
        parts = []
        for text in self.entries(job):
            match = re.search(r"⚙\s+Summary - (.*)", text, flags=re.S)
            if match:
                parts.append(match.group(1))
        return "\n".join(parts)

    def artifact_zips(self) -> list[Path]:
        return sorted(self.artifacts.rglob("*.zip"))


def act_cache() -> Path:
    """act's action cache; its `tool_cache/` holds the environments the setup action made."""
    return ci_cache() / "github-actions" / "act-cache"


def run_act(
    repo: Path,
    work: Path,
    *,
    event: str = "push",
    job: str | None = None,
    inputs: dict[str, str] | None = None,
    timeout: float = 600,
) -> ActRun:
    """Run the repository's workflows for `event` with act; its log is kept in `work`."""
    stand_ins = make_stand_ins(work / "stand-ins")
    number = len(list(work.glob("artifacts-*")))
    artifacts = work / f"artifacts-{event}-{number}"
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
        str(act_cache()),
        "--action-offline-mode",
    ]
    for name, folder in stand_ins.items():
        argv += ["--local-repository", f"{name}@{PINS[name]}={folder}"]
    if job:
        argv += ["--job", job]
    for key, value in (inputs or {}).items():
        argv += ["--input", f"{key}={value}"]
    # The steps run as processes on this machine with this environment: keep the test's own
    # CI variables out of them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_"))}
    env.pop("LEGION_CI_PIPELINE", None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    code, out = run_group(argv, cwd=repo, env=env, timeout=timeout)
    (work / f"act-{event}-{number}.log").write_text(out, encoding="utf-8")
    return ActRun(code, out, artifacts)


# --- A GitHub REST API emulator for the pull request comment ----------------------------------
# The few issue-comment routes the run action's pr-comment.sh calls through the real `gh` CLI,
# served over HTTPS on 127.0.0.1 (gh talks HTTPS to a GitHub Enterprise host), in memory.
# Started by the tests with procs.service(): `python tests/act_support.py github-api ...`.


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (gh trusts it through SSL_CERT_FILE)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def serve_github_api(port: int, cert: str, key: str, token: str) -> None:
    import json
    import ssl
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    comments: dict[int, dict[str, object]] = {}  # id -> {id, issue, body}
    issue_route = re.compile(r"/api/v3/repos/[\w.-]+/[\w.-]+/issues/(\d+)/comments")
    comment_route = re.compile(r"/api/v3/repos/[\w.-]+/[\w.-]+/issues/comments/(\d+)")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, data: object, headers: dict[str, str] | None = None):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") in (f"token {token}", f"Bearer {token}"):
                return True
            self._answer(401, {"message": "Bad credentials"})
            return False

        def _json_body(self) -> dict[str, object]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            if not self._authorized():
                return
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            match = issue_route.fullmatch(url.path)
            if not match:
                self._answer(404, {"message": "Not Found"})
                return
            issue = int(match.group(1))
            listed = [c for c in comments.values() if c["issue"] == issue]
            per_page = int(query.get("per_page", ["30"])[0])
            page = int(query.get("page", ["1"])[0])
            headers = {}
            if page * per_page < len(listed):
                next_url = f"https://{self.headers['Host']}{url.path}?per_page={per_page}"
                headers["Link"] = f'<{next_url}&page={page + 1}>; rel="next"'
            self._answer(200, listed[(page - 1) * per_page : page * per_page], headers)

        def do_POST(self) -> None:
            if not self._authorized():
                return
            match = issue_route.fullmatch(urllib.parse.urlsplit(self.path).path)
            if not match:
                self._answer(404, {"message": "Not Found"})
                return
            new_id = max(comments, default=1000) + 1
            comments[new_id] = {
                "id": new_id,
                "issue": int(match.group(1)),
                "body": self._json_body()["body"],
            }
            self._answer(201, comments[new_id])

        def do_PATCH(self) -> None:
            if not self._authorized():
                return
            match = comment_route.fullmatch(urllib.parse.urlsplit(self.path).path)
            if not match or int(match.group(1)) not in comments:
                self._answer(404, {"message": "Not Found"})
                return
            comment = comments[int(match.group(1))]
            comment["body"] = self._json_body()["body"]
            self._answer(200, comment)

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["github-api"]:
        port_arg, cert_arg, key_arg, token_arg = sys.argv[2:6]
        serve_github_api(int(port_arg), cert_arg, key_arg, token_arg)
