"""Data bindings against real storage: local dirs, an HTTP server and moto's S3 server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import jsonschema
import pytest
from data_support import HttpFiles, free_port, http_files, moto_server

from legion_ci.data.bindings import connection_types, place_data
from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection
from legion_ci.processes import StageLog
from legion_ci.redact import Redactor
from legion_ci.stage_schemas import BINDING_SCHEMA

KEY_ID = "AKIATESTDATABINDINGS"
KEY_SECRET = "s3-secret-Zq8vW2nRx"
HTTP_USER = "reader"
HTTP_PASSWORD = "http-password-Kp3tY7"
HTTP_TOKEN = "header-token-Ld9sQ4"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_sha(files: dict[str, bytes]) -> str:
    """The documented directory checksum, recomputed independently: sha256 of a sha256sum list."""
    listing = "".join(f"{sha(data)}  {rel}\n" for rel, data in sorted(files.items()))
    return sha(listing.encode())


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def leftovers(root: Path) -> list[str]:
    """Staging folders or files a failed placement left behind."""
    return sorted(p.name for p in root.rglob(".*partial*")) if root.exists() else []


@pytest.fixture
def log(tmp_path: Path) -> Iterator[StageLog]:
    # An empty redactor: the tests prove secrets are never written, not merely masked.
    stage_log = StageLog(tmp_path / "logs" / "train.log", redact=Redactor())
    yield stage_log
    stage_log.close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


# --- local ---------------------------------------------------------------------------------

DATASET = {
    "train.csv": b"a,b\n1,2\n",
    "nested/deeper/test.csv": b"a,b\n3,4\n",
    "nested/readme.txt": b"data\n",
}


@pytest.fixture
def local(tmp_path: Path) -> dict[str, Connection]:
    root = tmp_path / "source"
    write_tree(root / "wine", DATASET)
    (root / "single.bin").write_bytes(b"\x00\x01payload")
    (tmp_path / "outside.txt").write_text("not yours")
    return {
        "files": Connection(name="files", type="local", uri=str(root)),
        "tracking": Connection(name="tracking", type="mlflow", uri="http://127.0.0.1:1"),
    }


def test_local_file_is_placed_with_its_record(local, work, log):
    records = place_data(
        [{"connection": "files", "remotePath": "single.bin", "localPath": "data/in.bin"}],
        local,
        work,
        log,
    )
    assert (work / "data/in.bin").read_bytes() == b"\x00\x01payload"
    assert records == [
        {
            "connection": "files",
            "remotePath": "single.bin",
            "localPath": "data/in.bin",
            "files": 1,
            "bytes": 9,
            "sha256": sha(b"\x00\x01payload"),
        }
    ]
    assert "data/in.bin" in log.path.read_text()


def test_local_directory_is_copied_recursively(local, work, log):
    (record,) = place_data(
        [{"connection": "files", "remotePath": "wine", "localPath": "wine"}], local, work, log
    )
    for rel, data in DATASET.items():
        assert (work / "wine" / rel).read_bytes() == data
    assert record["files"] == 3
    assert record["bytes"] == sum(len(d) for d in DATASET.values())
    assert record["sha256"] == tree_sha(DATASET)


def test_directory_checksum_matches_the_documented_shell_recipe(local, work, log):
    (record,) = place_data(
        [{"connection": "files", "remotePath": "wine/", "localPath": "wine"}], local, work, log
    )
    recipe = "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    out = subprocess.run(
        ["bash", "-c", recipe], cwd=work / "wine", capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[0] == record["sha256"]


def test_local_missing_object_names_the_path(local, work, log):
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "files", "remotePath": "nope.csv", "localPath": "x.csv"}],
            local,
            work,
            log,
        )
    message = str(err.value)
    assert "missing object" in message
    assert "nope.csv" in message and "'x.csv'" in message
    assert not (work / "x.csv").exists()


def test_matching_checksum_passes_in_any_case(local, work, log):
    expected = sha(b"\x00\x01payload").upper()
    (record,) = place_data(
        [{"connection": "files", "remotePath": "single.bin", "localPath": "f", "sha256": expected}],
        local,
        work,
        log,
    )
    assert record["sha256"] == expected.lower()


def test_checksum_mismatch_fails_and_leaves_nothing_behind(local, work, log):
    (work / "wine").mkdir(parents=True)
    (work / "wine" / "old.csv").write_text("previous run")
    with pytest.raises(StageError) as err:
        place_data(
            [
                {
                    "connection": "files",
                    "remotePath": "wine",
                    "localPath": "wine",
                    "sha256": "0" * 64,
                }
            ],
            local,
            work,
            log,
        )
    assert "sha256 mismatch" in str(err.value) and "'wine'" in str(err.value)
    assert tree_sha(DATASET) in str(err.value)
    # The previous content is untouched: nothing half-placed, no staging left over.
    assert sorted(p.name for p in (work / "wine").iterdir()) == ["old.csv"]
    assert leftovers(work) == []


def test_existing_directory_is_replaced_whole(local, work, log):
    (work / "wine").mkdir(parents=True)
    (work / "wine" / "stale.csv").write_text("stale")
    place_data(
        [{"connection": "files", "remotePath": "wine", "localPath": "wine"}], local, work, log
    )
    assert not (work / "wine" / "stale.csv").exists()
    assert (work / "wine" / "train.csv").read_bytes() == DATASET["train.csv"]
    assert leftovers(work) == []


def test_file_and_directory_replace_each_other(local, work, log):
    work.mkdir()
    (work / "a").write_text("a file from an earlier run")
    (work / "b").mkdir()
    (work / "b" / "old.csv").write_text("old")
    place_data(
        [
            {"connection": "files", "remotePath": "wine", "localPath": "a"},
            {"connection": "files", "remotePath": "single.bin", "localPath": "b"},
        ],
        local,
        work,
        log,
    )
    assert (work / "a" / "train.csv").read_bytes() == DATASET["train.csv"]
    assert (work / "b").read_bytes() == b"\x00\x01payload"
    assert leftovers(work) == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("localPath", "/etc/passwd", "must be relative"),
        ("localPath", "../escape.bin", "'..'"),
        ("localPath", "data/../../escape.bin", "'..'"),
        ("localPath", "", "inside the work dir"),
        ("localPath", ".", "inside the work dir"),
        ("remotePath", "../outside.txt", "'..'"),
        ("remotePath", "/etc/passwd", "must be relative"),
        ("remotePath", "//other.host/x", "must be relative"),
    ],
)
def test_paths_escaping_their_root_are_rejected(local, work, log, field, value, reason):
    binding = {"connection": "files", "remotePath": "single.bin", "localPath": "ok.bin"}
    binding[field] = value
    with pytest.raises(StageError) as err:
        place_data([binding], local, work, log)
    assert reason in str(err.value)
    assert repr(value) in str(err.value)
    assert not (work.parent / "escape.bin").exists()
    assert not (work / "ok.bin").exists()


def test_localpath_through_a_symlink_out_of_the_work_dir_is_rejected(local, work, log, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    work.mkdir()
    os.symlink(outside, work / "link")
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "files", "remotePath": "single.bin", "localPath": "link/in.bin"}],
            local,
            work,
            log,
        )
    assert "leaves the work dir" in str(err.value) and "link/in.bin" in str(err.value)
    assert list(outside.iterdir()) == []


def test_unknown_connection_lists_the_data_connections(local, work, log):
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "fiels", "remotePath": "single.bin", "localPath": "f"}],
            local,
            work,
            log,
        )
    assert "unknown connection 'fiels'" in str(err.value)
    assert "data connections: files" in str(err.value)


def test_connection_that_is_not_a_data_store_is_rejected(local, work, log):
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "tracking", "remotePath": "x", "localPath": "f"}], local, work, log
        )
    assert "'mlflow'" in str(err.value) and "not a data store" in str(err.value)
    assert "http, local, s3" in str(err.value) and "data connections: files" in str(err.value)


def test_every_binding_is_checked_before_anything_is_fetched(local, work, log):
    with pytest.raises(StageError, match="fiels"):
        place_data(
            [
                {"connection": "files", "remotePath": "single.bin", "localPath": "first.bin"},
                {"connection": "fiels", "remotePath": "single.bin", "localPath": "second.bin"},
            ],
            local,
            work,
            log,
        )
    assert not (work / "first.bin").exists()


def test_overlapping_local_paths_are_rejected(local, work, log):
    with pytest.raises(StageError, match="overlap"):
        place_data(
            [
                {"connection": "files", "remotePath": "wine", "localPath": "data"},
                {"connection": "files", "remotePath": "single.bin", "localPath": "data/x.bin"},
            ],
            local,
            work,
            log,
        )


def test_schema_and_connection_types():
    assert connection_types() == ["http", "local", "s3"]
    jsonschema.Draft202012Validator.check_schema(BINDING_SCHEMA)
    validator = jsonschema.Draft202012Validator(BINDING_SCHEMA)
    good = {"connection": "c", "remotePath": "r", "localPath": "l", "sha256": "a" * 64}
    assert validator.is_valid(good)
    assert not validator.is_valid({"connection": "c", "remotePath": "r"})
    assert not validator.is_valid({**good, "extra": 1})
    assert not validator.is_valid({**good, "sha256": "xyz"})
    assert all("description" in prop for prop in BINDING_SCHEMA["properties"].values())


# --- http ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpFiles]:
    root = tmp_path_factory.mktemp("site")
    write_tree(root, {"base/model.csv": b"x,y\n1,2\n", "private/secret.csv": b"classified\n"})
    with http_files(root, HTTP_USER, HTTP_PASSWORD) as state:
        yield state


def http_connection(uri: str, **options) -> dict[str, Connection]:
    return {"web": Connection(name="web", type="http", uri=uri, options=options)}


def test_http_file_is_downloaded(site, work, log):
    (record,) = place_data(
        [{"connection": "web", "remotePath": "model.csv", "localPath": "in/model.csv"}],
        http_connection(site.url + "base/"),
        work,
        log,
    )
    assert (work / "in/model.csv").read_bytes() == b"x,y\n1,2\n"
    assert record["bytes"] == 8 and record["sha256"] == sha(b"x,y\n1,2\n")


def test_http_basic_auth_and_headers_are_sent_but_never_logged(site, work, log):
    conns = http_connection(
        site.url + "private",
        username=HTTP_USER,
        password=HTTP_PASSWORD,
        headers={"X-Token": HTTP_TOKEN},
    )
    (record,) = place_data(
        [{"connection": "web", "remotePath": "secret.csv", "localPath": "s.csv"}],
        conns,
        work,
        log,
    )
    assert (work / "s.csv").read_bytes() == b"classified\n"
    assert site.seen_headers[-1]["X-Token"] == HTTP_TOKEN
    text = log.path.read_text()
    assert "secret.csv" in text
    for secret in (HTTP_PASSWORD, HTTP_TOKEN, "***"):
        assert secret not in text and secret not in repr(record)


def test_http_wrong_password_is_access_denied_without_echoing_it(site, work, log):
    wrong = "wrong-password-Hx5"
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "web", "remotePath": "secret.csv", "localPath": "s.csv"}],
            http_connection(site.url + "private/", username=HTTP_USER, password=wrong),
            work,
            log,
        )
    assert "access denied" in str(err.value) and "401" in str(err.value)
    assert wrong not in str(err.value) and wrong not in log.path.read_text()
    assert not (work / "s.csv").exists()


def test_http_404_is_a_missing_object_naming_the_url(site, work, log):
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "web", "remotePath": "gone.csv", "localPath": "g.csv"}],
            http_connection(site.url + "base/"),
            work,
            log,
        )
    assert "missing object" in str(err.value)
    assert f"{site.url}base/gone.csv" in str(err.value) and "'g.csv'" in str(err.value)


def test_http_unreachable_server_fails(work, log):
    port = free_port()
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "web", "remotePath": "model.csv", "localPath": "m.csv"}],
            http_connection(f"http://127.0.0.1:{port}/base/"),
            work,
            log,
        )
    assert "unreachable" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    assert "'m.csv'" in str(err.value)


def test_http_download_that_breaks_off_leaves_no_partial_file(site, work, log):
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "web", "remotePath": "truncated", "localPath": "big.bin"}],
            http_connection(site.url),
            work,
            log,
        )
    assert "truncated" in str(err.value) and "'big.bin'" in str(err.value)
    assert not (work / "big.bin").exists()
    assert leftovers(work) == []


# --- s3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


def s3_client(endpoint: str):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=KEY_SECRET,
    )


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh bucket holding a single object and a small dataset under a prefix."""
    client = s3_client(s3_endpoint)
    name = f"data-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="models/v1/weights.bin", Body=b"w" * 1000)
    for rel, data in DATASET.items():
        client.put_object(Bucket=name, Key=f"models/v1/wine/{rel}", Body=data)
    client.put_object(Bucket=name, Key="models/v1/wine/nested/", Body=b"")  # a folder marker
    return name


def s3_connection(endpoint: str, uri: str, secret: str = KEY_SECRET) -> dict[str, Connection]:
    options = {"endpoint": endpoint, "region": "us-east-1", "keyID": KEY_ID, "keySecret": secret}
    return {"store": Connection(name="store", type="s3", uri=uri, options=options)}


def test_s3_single_object(s3_endpoint, bucket, work, log):
    (record,) = place_data(
        [{"connection": "store", "remotePath": "weights.bin", "localPath": "w.bin"}],
        s3_connection(s3_endpoint, f"s3://{bucket}/models/v1"),
        work,
        log,
    )
    assert (work / "w.bin").read_bytes() == b"w" * 1000
    assert record == {
        "connection": "store",
        "remotePath": "weights.bin",
        "localPath": "w.bin",
        "files": 1,
        "bytes": 1000,
        "sha256": sha(b"w" * 1000),
    }


@pytest.mark.parametrize("remote", ["wine/", "wine"])
def test_s3_prefix_is_copied_as_a_directory(s3_endpoint, bucket, work, log, remote):
    (record,) = place_data(
        [{"connection": "store", "remotePath": remote, "localPath": "data/wine"}],
        s3_connection(s3_endpoint, f"s3://{bucket}/models/v1/"),
        work,
        log,
    )
    for rel, data in DATASET.items():
        assert (work / "data/wine" / rel).read_bytes() == data
    assert record["files"] == 3 and record["sha256"] == tree_sha(DATASET)


def test_s3_secret_never_reaches_the_log(s3_endpoint, bucket, work, log):
    place_data(
        [{"connection": "store", "remotePath": "models/v1/wine/", "localPath": "wine"}],
        s3_connection(s3_endpoint, f"s3://{bucket}"),
        work,
        log,
    )
    text = log.path.read_text()
    assert f"s3://{bucket}/models/v1/wine" in text
    assert KEY_SECRET not in text and "***" not in text


def test_s3_missing_key_names_the_object(s3_endpoint, bucket, work, log):
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "store", "remotePath": "nope.bin", "localPath": "n.bin"}],
            s3_connection(s3_endpoint, f"s3://{bucket}/models/v1"),
            work,
            log,
        )
    assert "missing object" in str(err.value)
    assert f"s3://{bucket}/models/v1/nope.bin" in str(err.value) and "'n.bin'" in str(err.value)
    assert not (work / "n.bin").exists() and leftovers(work) == []


def test_s3_missing_bucket_is_a_missing_object(s3_endpoint, work, log):
    with pytest.raises(StageError, match=r"missing object: .*s3://no-such-bucket-x/k"):
        place_data(
            [{"connection": "store", "remotePath": "k", "localPath": "k"}],
            s3_connection(s3_endpoint, "s3://no-such-bucket-x"),
            work,
            log,
        )


def test_s3_checksum_mismatch_fails_before_placing(s3_endpoint, bucket, work, log):
    with pytest.raises(StageError, match="sha256 mismatch"):
        place_data(
            [
                {
                    "connection": "store",
                    "remotePath": "weights.bin",
                    "localPath": "w.bin",
                    "sha256": sha(b"something else"),
                }
            ],
            s3_connection(s3_endpoint, f"s3://{bucket}/models/v1"),
            work,
            log,
        )
    assert not (work / "w.bin").exists() and leftovers(work) == []


def test_s3_unreachable_storage_fails_without_the_secret(work, log):
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StageError) as err:
        place_data(
            [{"connection": "store", "remotePath": "weights.bin", "localPath": "w.bin"}],
            s3_connection(endpoint, "s3://bucket/models"),
            work,
            log,
        )
    assert "unreachable" in str(err.value) and endpoint in str(err.value)
    assert "'w.bin'" in str(err.value)
    assert KEY_SECRET not in str(err.value) and KEY_SECRET not in log.path.read_text()
    assert not (work / "w.bin").exists()


def test_s3_without_keys_goes_unsigned_not_through_ambient_credentials(
    s3_endpoint, bucket, work, log, monkeypatch
):
    # The emulator accepts any signed request, so these would succeed if the client fell back
    # to the environment; unsigned, only the public-read object is readable.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAAMBIENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ambient-secret")
    s3_client(s3_endpoint).put_object(
        Bucket=bucket, Key="public/readme.txt", Body=b"open", ACL="public-read"
    )
    conns = {
        "public": Connection(
            name="public", type="s3", uri=f"s3://{bucket}", options={"endpoint": s3_endpoint}
        )
    }
    place_data(
        [{"connection": "public", "remotePath": "public/readme.txt", "localPath": "r.txt"}],
        conns,
        work,
        log,
    )
    assert (work / "r.txt").read_bytes() == b"open"
    with pytest.raises(StageError, match="access denied"):
        place_data(
            [{"connection": "public", "remotePath": "models/v1/weights.bin", "localPath": "w"}],
            conns,
            work,
            log,
        )


# --- remotePath left out: the connection's uri names the object (Legion's form) ------------


def test_local_uri_naming_the_file_needs_no_remote_path(local, work, log):
    conns = {"one": Connection(name="one", type="local", uri=local["files"].uri + "/single.bin")}
    (record,) = place_data([{"connection": "one", "localPath": "in.bin"}], conns, work, log)
    assert (work / "in.bin").read_bytes() == b"\x00\x01payload"
    assert record["files"] == 1 and record["remotePath"] == ""


def test_http_uri_naming_the_file_needs_no_remote_path(site, work, log):
    conns = http_connection(site.url + "base/model.csv")
    place_data([{"connection": "web", "localPath": "m.csv"}], conns, work, log)
    assert (work / "m.csv").read_bytes() == b"x,y\n1,2\n"


def test_s3_uri_naming_the_object_needs_no_remote_path(s3_endpoint, bucket, work, log):
    conns = s3_connection(s3_endpoint, f"s3://{bucket}/models/v1/weights.bin")
    (record,) = place_data([{"connection": "store", "localPath": "w.bin"}], conns, work, log)
    assert (work / "w.bin").read_bytes() == b"w" * 1000 and record["bytes"] == 1000
    tree = s3_connection(s3_endpoint, f"s3://{bucket}/models/v1/wine/")
    place_data([{"connection": "store", "localPath": "wine"}], tree, work, log)
    assert (work / "wine" / "nested" / "deeper" / "test.csv").read_bytes() == b"a,b\n3,4\n"
