"""`legion-ci validate` never crashes: odd YAML (impossible dates, bad explicit tags, deep
nesting, huge integers, long paths, non-UTF-8 secrets, devices) and property-based fuzzing
(random structures, mutations of the example pipelines, odd scalars and tags, encodings) each
end in success or located errors with exit 2, in bounded time."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Figures, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legion_ci.cli.main import main

LOCATED = re.compile(r"^.+:\d+:\d+: ")
WINE = (
    (REPO / "pipelines" / "wine.yaml")
    .read_text()
    .replace("../examples/wine", str(REPO / "examples" / "wine"))
    .replace(
        "baselines/wine-metrics.json", str(REPO / "pipelines" / "baselines" / "wine-metrics.json")
    )
)
HEAD = "apiVersion: legion-ci/v1\nkind: Pipeline\nmodel:\n  name: a\n"


def validate_in_process(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(path)])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out + err, time.monotonic() - started


# Every case any test here hands to assert_clean, for the run's hardening table.
TALLY = {"tried": 0, "refused": 0, "crashed": 0}


@pytest.fixture(scope="module", autouse=True)
def _hardening_figures():
    yield
    figures = Figures()
    figures.add("validate fuzz cases tried", TALLY["tried"])
    figures.add("validate fuzz cases refused", TALLY["refused"])
    figures.add("validate fuzz cases crashed", TALLY["crashed"])


def assert_clean(code: int, output: str, elapsed: float) -> None:
    TALLY["tried"] += 1
    TALLY["refused"] += code == 2
    TALLY["crashed"] += code not in (0, 2) or "Traceback" in output
    assert code in (0, 2), f"exit {code}:\n{output[-3000:]}"
    assert "Traceback" not in output and "internal error" not in output, output[-3000:]
    if code == 2:
        # A warning (a secret too short to redact) comes first, once per process and secret:
        # Hypothesis replays a case in the same process, so the error is looked for after it.
        lines = [x for x in output.splitlines() if not x.startswith("legion-ci: warning: ")]
        assert len(lines) >= 2 and all(LOCATED.match(line) for line in lines[1:2]), output[:2000]
        assert len(lines) <= 60, f"{len(lines)} lines printed"
    assert elapsed < 20, f"validation took {elapsed:.1f} s"


ODD_VERSIONS = [
    "2024-02-30",
    "!!int abc",
    "!!float x",
    "!!bool maybe",
    "!!timestamp foo",
    "!!binary '%%%'",
    "!!python/object:os.system ls",
    "!!set {a, b}",
    "1" * 5000,
    "-" + "9" * 4400,
    "0x" + "f" * 5000,
    ".nan",
    "~",
    "!!str",
    "&a [*a]",
]


@pytest.mark.parametrize("value", ODD_VERSIONS, ids=range(len(ODD_VERSIONS)))
def test_odd_scalars_are_located_errors(tmp_path: Path, value: str, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"{HEAD}  version: {value}\nstages: {{train: {{toolchain: mlflow}}}}\n")
    code, output, elapsed = validate_in_process(path, capsys)
    assert code == 2
    assert_clean(code, output, elapsed)


@pytest.mark.parametrize("depth", [10, 65, 490, 700, 999, 1000, 5000])
def test_deep_nesting_is_refused_with_location(tmp_path: Path, depth: int, capsys) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(HEAD + "  version: '1'\nstages: " + "[" * depth + "]" * depth + "\n")
    code, output, elapsed = validate_in_process(path, capsys)
    assert code == 2
    assert_clean(code, output, elapsed)


@pytest.mark.parametrize("field", ["workDir", "baseline", "integrations"])
def test_file_names_too_long_are_located_errors(tmp_path: Path, field: str, capsys) -> None:
    long = "x" * 300
    if field == "integrations":
        text = (
            f"{HEAD}  version: '1'\nintegrations: [{long}]\nstages: {{train: {{toolchain: x}}}}\n"
        )
    else:
        text = (
            f"{HEAD}  version: '1'\nstages:\n  train:\n    toolchain: mlflow\n"
            f"    workDir: {str(REPO / 'examples' / 'wine') if field == 'baseline' else long}\n"
            + (f"    baseline: {long}\n" if field == "baseline" else "")
        )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    code, output, elapsed = validate_in_process(path, capsys)
    assert code == 2, output
    assert_clean(code, output, elapsed)
    assert field in output


def test_non_utf8_secret_file_is_a_located_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "pw").write_bytes(b"\xff\xfe\x00secret")
    path = tmp_path / "p.yaml"
    path.write_text(
        WINE.replace(
            "stages:",
            "connections:\n  t: {type: mlflow, uri: 'http://x', password: '${file:pw}'}\nstages:",
        )
    )
    code, output, elapsed = validate_in_process(path, capsys)
    assert code == 2
    assert_clean(code, output, elapsed)
    assert "connections.t.password: secret file pw is not UTF-8 text" in output


def test_devices_and_huge_files_are_refused_unread(tmp_path: Path) -> None:
    outcome = run_cli("validate", "/dev/zero", timeout=30).assert_failed(2)
    assert "/dev/zero:1:1: not a regular file" in outcome.err
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (1024 * 1024) + "\n")
    outcome = run_cli("validate", str(big), timeout=30).assert_failed(2)
    assert "refusing files over 1048576 bytes" in outcome.err


def test_thousands_of_unknown_keys_print_a_capped_list(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(WINE + "".join(f"unknown{i}: 1\n" for i in range(60_000)))
    code, output, elapsed = validate_in_process(path, capsys)
    assert code == 2
    assert_clean(code, output, elapsed)
    assert "... and 59950 more errors not shown" in output
    assert "validation failed: 60000 errors" in output


# -- property-based fuzzing ------------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [":", "- ", "{", "}", "[", "]", "!!int ", "!!float ", "&a ", "*a", "\t", "\n", "  ", "#",
     "'", '"', "${env:", "${file:", "}", "é", "\u2028", "\x00", "---\n", "? ", "|\n", ">-\n",
     "2024-02-30", "9" * 5000, "!!timestamp x", "<<: *a\n", "%YAML 1.1\n"]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    ODD_TEXT,
)
STRUCTURES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


def _mutate(text: str, ops: list[tuple[int, int, int, str]]) -> str:
    for op, a, b, insert in ops:
        if not text:
            break
        i, j = sorted((a % len(text), b % len(text)))
        if op == 0:
            text = text[:i] + text[j:]
        elif op == 1:
            text = text[:i] + insert + text[i:]
        elif op == 2:
            lines = text.splitlines(keepends=True)
            k = a % len(lines)
            text = "".join([*lines[:k], lines[k], *lines[k:]])
        else:
            text = text[:i] + insert + text[j:]
    return text


MUTATIONS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 10**6), ODD_TEXT),
    min_size=1,
    max_size=6,
)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "utf-32"])
CASES = {"random structures": 0, "mutations": 0, "odd scalars": 0, "encodings": 0}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def test_fuzz_validate_never_crashes(tmp_path: Path, capsys) -> None:
    from jsonschema import Draft202012Validator

    from legion_ci.api import pipeline_schema
    from legion_ci.errors import SpecError
    from legion_ci.spec.fastcheck import is_valid
    from legion_ci.yaml_loader import load_located

    path = tmp_path / "fuzz.yaml"
    schema = pipeline_schema()
    full = Draft202012Validator(schema)
    vouched = []

    def check(raw: bytes, kind: str) -> None:
        CASES[kind] += 1
        path.write_bytes(raw)
        assert_clean(*validate_in_process(path, capsys))
        try:
            data = load_located(path).data
        except SpecError:
            return
        # The fast path may only ever say yes where jsonschema says yes.
        if is_valid(schema, data):
            vouched.append(kind)
            assert full.is_valid(data), f"fast path accepted what jsonschema refuses: {data!r}"

    @FUZZ
    @given(STRUCTURES)
    def random_structures(data: object) -> None:
        check(yaml.safe_dump(data, allow_unicode=True).encode(), "random structures")

    @FUZZ
    @given(MUTATIONS)
    def mutations(ops: list) -> None:
        check(_mutate(WINE, ops).encode("utf-8", "surrogatepass"), "mutations")

    @FUZZ
    @given(SCALARS, st.sampled_from(["version", "name", "workDir", "entrypoint", "alpha"]))
    def odd_scalars(value: object, key: str) -> None:
        shown = value if isinstance(value, str) else yaml.safe_dump(value).split("\n")[0]
        text = re.sub(rf"(\b{key}: ).*", lambda m: m.group(1) + str(shown).replace("\n", " "), WINE)
        check(text.encode("utf-8", "surrogatepass"), "odd scalars")

    @FUZZ
    @given(ENCODINGS, MUTATIONS)
    def encodings(encoding: str, ops: list) -> None:
        text = _mutate(WINE.replace("wine", "vin-é"), ops)
        check(text.encode(encoding, "replace"), "encodings")

    for fuzz in (random_structures, mutations, odd_scalars, encodings):
        fuzz()
    with capsys.disabled():
        total = sum(CASES.values())
        print(
            f"\nvalidate fuzz: {total} cases tried ({CASES}), all exit 0 or located exit 2;"
            f" the fast schema check vouched for {len(vouched)}, jsonschema agreed on each"
        )
    assert total >= 4 * 100


# -- hostile files and paths (issue 21) ------------------------------------------------------
# Every `${file:}` target kind and every field that names a file or becomes a path, each drawn
# by a generator: validate must end in exit 0 or a located exit 2, in bounded time and memory,
# and must write nothing (the workspace included: validation runs nothing).

SECRET_CAP = 64 * 1024
FILE_KINDS = st.sampled_from(
    ["regular", "missing", "directory", "fifo", "/dev/zero", "/dev/urandom", "/dev/null",
     "/proc/self/mem", "oversized", "non-utf-8", "symlink to /dev/zero", "empty"]
)  # fmt: skip
# Where a `${file:}` reference may sit: a credential, a header, a hyper-parameter, a URI.
SECRET_PLACES = st.sampled_from(["password", "token", "header", "hyperParameter", "uri"])
SEGMENTS = st.sampled_from(
    ["..", ".", "", "x", "wine", "~", "..." , "a b", "é", "\n", "\r", "\t", "\x00", "\x1b",
     "\u2028", "*", "${env:HOME}", "-", "--help", "x" * 300, "/dev/zero", "/proc/self"]
)  # fmt: skip
PATH_VALUES = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.booleans(),
    st.lists(SEGMENTS, min_size=0, max_size=6),
)
PATH_FIELDS = st.sampled_from(
    ["workDir", "workspace", "baseline", "localPath", "remotePath", "integrations",
     "model.name", "model.version", "kubeconfig", "cluster.pipeline", "localUri"]
)  # fmt: skip
HOSTILE = {"cases tried": 0, "refused (exit 2)": 0, "accepted (exit 0)": 0, "crashed": 0}


def _secret_target(root: Path, kind: str, content: bytes) -> str:
    """Make a `${file:}` target of `kind` under `root`; returns the reference's path."""
    secrets = root / "secrets"
    secrets.mkdir(exist_ok=True)
    target = secrets / "pw"
    if target.is_symlink() or target.is_file() or target.is_fifo():
        target.unlink()
    elif target.is_dir():
        target.rmdir()
    if kind in ("/dev/zero", "/dev/urandom", "/dev/null", "/proc/self/mem"):
        return kind
    if kind == "missing":
        return "secrets/pw"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink to /dev/zero":
        target.symlink_to("/dev/zero")
    elif kind == "oversized":
        target.write_bytes(b"x" * (SECRET_CAP + 1 + len(content)))
    elif kind == "non-utf-8":
        target.write_bytes(b"\xff" + content)
    elif kind == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(content[:SECRET_CAP])
    return "secrets/pw"


def _with_secret(text: str, place: str, reference: str) -> str:
    ref = json.dumps(reference)
    if place == "hyperParameter":
        return text.replace("alpha: 0.5", f"alpha: {ref}")
    conn = {
        "password": f"{{type: docker, uri: 127.0.0.1:5000, username: ci, password: {ref}}}",
        "token": f"{{type: mlflow, uri: 'http://127.0.0.1:1', token: {ref}}}",
        "header": f"{{type: http, uri: 'http://127.0.0.1:1', headers: {{X-Key: {ref}}}}}",
        "uri": f"{{type: http, uri: {ref}}}",
    }[place]
    return text.replace("stages:", f"connections:\n  c: {conn}\nstages:", 1)


def _with_path(text: str, field: str, value: str) -> str:
    v = json.dumps(value)
    data_line = "    data:\n      - {connection: d, remotePath: wine.csv, localPath: data/x.csv}\n"
    local = "connections:\n  d: {type: local, uri: .}\n"
    if field == "model.name":
        return text.replace("name: wine", f"name: {v}", 1)
    if field == "model.version":
        return text.replace('version: "1.0"', f"version: {v}", 1)
    if field == "workDir":
        return re.sub(r"workDir: .*", lambda _: f"workDir: {v}", text)
    if field == "workspace":
        return text + f"workspace: {v}\n"
    if field == "baseline":
        return re.sub(r"baseline: .*", lambda _: f"baseline: {v}", text)
    if field == "integrations":
        return text + f"integrations: [{v}]\n"
    if field in ("localPath", "remotePath"):
        line = data_line.replace(
            "localPath: data/x.csv" if field == "localPath" else "remotePath: wine.csv",
            f"{field}: {v}",
        )
        return text.replace("    gates:", line + "    gates:").replace("stages:", local + "stages:")
    if field == "localUri":
        return text.replace("    gates:", data_line + "    gates:").replace(
            "stages:", f"connections:\n  d: {{type: local, uri: {v}}}\nstages:"
        )
    if field == "kubeconfig":
        return text.replace(
            "stages:", f"connections:\n  k: {{type: kubernetes, kubeconfig: {v}}}\nstages:"
        )
    # cluster.pipeline: the path of the pipeline inside the training image
    return text.replace(
        "    gates:",
        "    cluster: {connection: k, image: i, storage: s, credentialsSecret: c,"
        f" pipeline: {v}}}\n    gates:",
    ).replace(
        "stages:",
        "connections:\n  k: {type: kubernetes}\n  s: {type: s3, uri: 's3://b'}\nstages:",
    )


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `root` (not followed), with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            found[path] = (info.st_size, info.st_mtime_ns)
    return found


def test_fuzz_hostile_files_and_paths(tmp_path: Path, capsys) -> None:
    root = tmp_path / "project"
    (root / "pipelines").mkdir(parents=True)
    path = root / "pipelines" / "p.yaml"

    def check(text: str) -> None:
        HOSTILE["cases tried"] += 1
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        before = _tree(tmp_path)
        code, output, elapsed = validate_in_process(path, capsys)
        if code not in (0, 2):
            HOSTILE["crashed"] += 1
        assert_clean(code, output, elapsed)
        HOSTILE["refused (exit 2)" if code == 2 else "accepted (exit 0)"] += 1
        assert _tree(tmp_path) == before, "validate wrote or removed files"
        assert not (tmp_path / "outside").exists()

    @FUZZ
    @given(FILE_KINDS, SECRET_PLACES, st.binary(max_size=64))
    def file_targets(kind: str, place: str, content: bytes) -> None:
        reference = "${file:" + _secret_target(root / "pipelines", kind, content) + "}"
        check(_with_secret(WINE, place, reference))

    @FUZZ
    @given(PATH_FIELDS, PATH_VALUES)
    def path_fields(field: str, value: str) -> None:
        check(_with_path(WINE, field, value))

    @FUZZ
    @given(PATH_VALUES)
    def file_reference_names(value: str) -> None:
        # The reference's own path: '..', absolute, control characters, NUL, very long.
        check(_with_secret(WINE, "password", "${file:" + value.replace("}", "") + "}"))

    for fuzz in (file_targets, path_fields, file_reference_names):
        fuzz()
    with capsys.disabled():
        print(f"\nhostile files and paths fuzz: {HOSTILE}")
    assert HOSTILE["crashed"] == 0
    assert HOSTILE["cases tried"] >= 3 * 100
    assert HOSTILE["refused (exit 2)"] > 0 and HOSTILE["accepted (exit 0)"] > 0
