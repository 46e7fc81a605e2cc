"""Property-based fuzzing of trained model binaries' manifests through `legion-ci model info`
(in-process): random structures, mutations of a valid manifest, alias and depth bombs, other
encodings and hostile path fields. Each case ends in success or a one-line refusal naming the
binary (exit 1 or 2, never 3, never a traceback), never runs a refused binary's code, and
never leaves a refused binary unpacked in the cache. Run alone with `-m hostile`."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import Figures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_support import TINY_ENTRYPOINT, TINY_MANIFEST
from test_validate_fuzz import MUTATIONS, SCALARS, STRUCTURES, _mutate

from legion_ci.cli.main import main

pytestmark = pytest.mark.hostile

CANARY = "import pathlib; pathlib.Path({marker!r}).write_text('model code ran')\n"
PATH_FIELDS = ("workDir", "requirements_path", "conda_path", "entrypoint")
HOSTILE_PATHS = st.sampled_from(
    ["/etc/passwd", "/tmp", "..", "../x", "a/../../b", "legion_model/../..", "~root/x", "~",
     "\x00", "a\x00b", "legion_model", ".", "", "/", "\\..\\x", "C:\\x", "x" * 5000,
     "legion_model/" * 300, "é/ü", "\u2028"]
)  # fmt: skip
ENCODINGS = st.sampled_from(["utf-16", "utf-32", "latin-1", "cp500", "utf-8-sig"])
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
TALLY = {"tried": 0, "refused": 0, "crashed": 0}


def alias_bomb(levels: int, width: int, where: str) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    top = f"*a{levels - 1}"
    model = {
        "name": f"{{name: {top}, version: '1'}}",
        "version": f"{{name: m, version: {top}}}",
        "output": "{name: m, version: '1'}\noutput: " + top,
    }[where]
    return "\n".join([*lines, "binaries: {type: python, dependencies: pip}", f"model: {model}"])


def deep(depth: int, opener: str) -> str:
    closer = {"[": "]", "{a: ": "}"}[opener]
    return "model:\n  name: " + opener * depth + "1" + closer * depth + "\n"


def with_path_field(field: str, value: str) -> str:
    quoted = yaml.safe_dump(value, allow_unicode=True, width=10**9).strip()
    quoted = quoted.removesuffix("\n...").removesuffix("...").strip()
    if field in ("workDir", "entrypoint"):
        default = {"workDir": "legion_model", "entrypoint": "entrypoint"}[field]
        return TINY_MANIFEST.replace(f"{field}: {default}", f"{field}: {quoted}")
    return TINY_MANIFEST.replace("dependencies: pip}", f"dependencies: pip, {field}: {quoted}}}")


def test_fuzz_model_info_on_hostile_manifests(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MODEL_LOCATION", "")  # load_model sets it; put it back afterwards
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    cache = Path(os.environ["LEGION_CI_CACHE"]) / "gppi"
    marker = tmp_path / "ran"
    artifact = tmp_path / "fuzz.zip"
    entrypoint = CANARY.format(marker=str(marker)) + TINY_ENTRYPOINT

    def check(manifest: bytes) -> None:
        TALLY["tried"] += 1
        marker.unlink(missing_ok=True)
        artifact.unlink(missing_ok=True)
        with zipfile.ZipFile(artifact, "w") as zf:
            zf.writestr("legion.project.yaml", manifest)
            zf.writestr("legion_model/entrypoint.py", entrypoint)
        before = sorted(cache.iterdir()) if cache.is_dir() else []
        started = time.monotonic()
        with pytest.raises(SystemExit) as exit_info:
            main(["model", "info", str(artifact)])
        elapsed = time.monotonic() - started
        out, err = capsys.readouterr()
        code = int(exit_info.value.code or 0)
        after = sorted(cache.iterdir()) if cache.is_dir() else []
        try:
            assert code in (0, 1, 2), f"exit {code}: {err[-2000:]}"
            assert "Traceback" not in out + err and "internal error" not in err, err[-2000:]
            assert elapsed < 10, f"took {elapsed:.1f} s"
            if code != 0:
                TALLY["refused"] += 1
                lines = err.splitlines()
                assert len(lines) == 1 and lines[0].startswith("legion-ci: error: "), err[:2000]
                assert str(artifact) in lines[0], lines[0]
                assert not marker.exists(), "a refused binary's code ran"
                assert after == before, f"a refused binary was left unpacked: {after}"
        except AssertionError:
            TALLY["crashed"] += 1
            raise

    valid = TINY_MANIFEST

    @FUZZ
    @given(STRUCTURES)
    def random_structures(data: object) -> None:
        check(yaml.safe_dump(data, allow_unicode=True).encode())

    @FUZZ
    @given(MUTATIONS)
    def mutations(ops: list) -> None:
        check(_mutate(valid, ops).encode("utf-8", "surrogatepass"))

    @settings(FUZZ, max_examples=15)
    @given(
        st.integers(2, 9),
        st.integers(2, 9),
        st.sampled_from(["name", "version", "output"]),
    )
    def alias_bombs(levels: int, width: int, where: str) -> None:
        check(alias_bomb(levels, width, where).encode())

    @settings(FUZZ, max_examples=15)
    @given(st.integers(1, 30_000), st.sampled_from(["[", "{a: "]))
    def depth_bombs(depth: int, opener: str) -> None:
        check(deep(depth, opener).encode())

    @FUZZ
    @given(ENCODINGS, MUTATIONS)
    def encodings(encoding: str, ops: list) -> None:
        text = _mutate(valid.replace("tiny", "tiny-é"), ops)
        check(text.encode(encoding, "replace"))

    @FUZZ
    @given(st.sampled_from(PATH_FIELDS), st.one_of(HOSTILE_PATHS, st.text(max_size=40)))
    def path_fields(field: str, value: str) -> None:
        check(with_path_field(field, value).encode("utf-8", "surrogatepass"))

    @FUZZ
    @given(st.sampled_from(["name", "version", "workDir", "legionVersion", "output"]), SCALARS)
    def odd_scalars(key: str, value: object) -> None:
        shown = yaml.safe_dump(value, allow_unicode=True).split("\n")[0]
        if key in ("legionVersion", "output"):
            text = valid.replace(f"{key}:", f"{key}: {shown} #", 1)
        else:
            text = valid.replace(f"{key}: ", f"{key}: {shown}, _{key}: ", 1)
        check(text.encode("utf-8", "surrogatepass"))

    started = time.monotonic()
    for fuzz in (
        random_structures,
        mutations,
        alias_bombs,
        depth_bombs,
        encodings,
        path_fields,
        odd_scalars,
    ):
        fuzz()
    figures = Figures()
    figures.add("binary fuzz cases tried", TALLY["tried"])
    figures.add("binary fuzz cases refused", TALLY["refused"])
    figures.add("binary fuzz cases crashed", TALLY["crashed"])
    with capsys.disabled():
        print(
            f"\nmodel binary fuzz: {TALLY['tried']} cases tried in"
            f" {time.monotonic() - started:.1f} s, {TALLY['refused']} refused in one line,"
            f" {TALLY['crashed']} crashed"
        )
    assert TALLY["tried"] >= 5 * 50 + 2 * 10
    assert TALLY["crashed"] == 0
