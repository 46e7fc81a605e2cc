"""Data bindings: place the data a training declares inside its work dir before it runs.

A binding names a connection, a path on that connection and a path inside the work dir. Every
binding is checked (paths, connection names, checksums' shape) before anything is fetched, so a
typo fails the stage in a second instead of after a long download. Each binding is fetched into
a hidden staging folder next to its destination, hashed, checked against the declared sha256 and
only then renamed into place: a failure never leaves a half-written file at localPath.

The checksum of a directory is the sha256 of the `sha256sum` listing of its files, sorted by
their relative POSIX path, so it can be recomputed with standard tools:

    cd <dir> && find . -type f -printf '%P\\n' | LC_ALL=C sort \\
        | xargs -d '\\n' sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection
from legion_ci.integrations.clients import s3_client
from legion_ci.processes import StageLog

# Generous for slow links yet bounded, so a stalled server fails the stage instead of hanging CI.
HTTP_TIMEOUT_SECONDS = 60.0

_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

# A fetcher writes the data at `payload` (a file or a directory; `payload` does not exist yet)
# and raises StageError naming the source on any failure.
_Fetcher = Callable[[Connection, str, Path, StageLog], None]


def connection_types() -> list[str]:
    """The connection types that can serve data bindings."""
    return sorted(_FETCHERS)


def place_data(
    bindings: list[dict],
    connections: Mapping[str, Connection],
    dest_root: Path,
    log: StageLog,
) -> list[dict]:
    """Fetch every binding into `dest_root` and return one record per binding, in order.

    Raises StageError naming the localPath (and the source) on a bad path, an unknown or
    non-data connection, a missing object, unreachable storage or a checksum mismatch.
    """
    dest_root = Path(dest_root)
    _register_secrets(connections, log)
    plans = [_plan(i, binding, connections, dest_root) for i, binding in enumerate(bindings)]
    _reject_overlaps(plans)
    return [_place(plan, log) for plan in plans]


@dataclass(frozen=True)
class _Plan:
    where: str  # how errors name the binding
    connection: Connection
    remote: str
    local: str
    target: Path
    sha256: str | None


def _plan(
    index: int, binding: Any, connections: Mapping[str, Connection], dest_root: Path
) -> _Plan:
    where = f"data binding {index + 1}"
    if not isinstance(binding, Mapping):
        raise StageError(f"{where}: expected a mapping with connection, remotePath, localPath")
    for key in ("connection", "localPath"):
        if not isinstance(binding.get(key), str):
            raise StageError(f"{where}: {key} must be a string")
    if not isinstance(binding.get("remotePath", ""), str):
        raise StageError(f"{where}: remotePath must be a string")
    local = binding["localPath"]
    where = f"data binding {index + 1} (localPath {local!r})"
    local_parts = _safe_parts(local, "localPath", where)
    if not local_parts:
        raise StageError(f"{where}: localPath must name a path inside the work dir")
    root = dest_root.resolve()
    target = root.joinpath(*local_parts)
    # A symlink already inside the work dir could still point the write elsewhere.
    if not target.parent.resolve().is_relative_to(root):
        raise StageError(f"{where}: localPath leaves the work dir {root}")
    # As in Legion, remotePath may be left out when the connection's URI names the object.
    remote = binding.get("remotePath", "")
    _safe_parts(remote, "remotePath", where)
    expected = binding.get("sha256")
    if expected is not None and not (isinstance(expected, str) and _SHA256.match(expected)):
        raise StageError(f"{where}: sha256 must be 64 hex digits")
    return _Plan(
        where=where,
        connection=_data_connection(binding["connection"], connections, where),
        remote=remote,
        local=local,
        target=target,
        sha256=expected.lower() if expected else None,
    )


def _safe_parts(path: str, field: str, where: str) -> tuple[str, ...]:
    """The path's parts; refuses absolute paths and '..' so no binding can escape its root."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("\\") or re.match(r"^[A-Za-z]:", path):
        raise StageError(f"{where}: {field} {path!r} must be relative")
    if ".." in pure.parts:
        raise StageError(f"{where}: {field} {path!r} must not contain '..'")
    return tuple(part for part in pure.parts if part != ".")


def _data_connection(name: str, connections: Mapping[str, Connection], where: str) -> Connection:
    known = sorted(n for n, c in connections.items() if c.type in _FETCHERS)
    listing = ", ".join(known) or "(none)"
    connection = connections.get(name)
    if connection is None:
        raise StageError(f"{where}: unknown connection {name!r}; data connections: {listing}")
    if connection.type not in _FETCHERS:
        raise StageError(
            f"{where}: connection {name!r} has type {connection.type!r}, which is not a data "
            f"store (types: {', '.join(connection_types())}); data connections: {listing}"
        )
    return connection


def _reject_overlaps(plans: list[_Plan]) -> None:
    # A later binding would silently replace or nest inside an earlier one.
    for i, a in enumerate(plans):
        for b in plans[i + 1 :]:
            if b.target.is_relative_to(a.target) or a.target.is_relative_to(b.target):
                raise StageError(f"data bindings {a.local!r} and {b.local!r} overlap")


def _register_secrets(connections: Mapping[str, Connection], log: StageLog) -> None:
    # The runner already redacts resolved secrets; this also covers a caller that did not.
    for connection in connections.values():
        if connection.type not in _FETCHERS:
            continue
        options = connection.options or {}
        for key in ("keySecret", "password", "sessionToken"):
            if isinstance(options.get(key), str):
                log.redact.add(options[key])
        headers = options.get("headers")
        if isinstance(headers, Mapping):
            for value in headers.values():
                if isinstance(value, str):
                    log.redact.add(value)


def _place(plan: _Plan, log: StageLog) -> dict:
    where = plan.where
    plan.target.parent.mkdir(parents=True, exist_ok=True)
    # Staging next to the target keeps the final rename on one filesystem, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.target.name}.partial-", dir=plan.target.parent))
    try:
        payload = staging / "payload"
        try:
            _FETCHERS[plan.connection.type](plan.connection, plan.remote, payload, log)
            files, size, digest = _digest(payload)
            if plan.sha256 and digest != plan.sha256:
                raise StageError(
                    f"sha256 mismatch for {plan.connection.name}:{plan.remote}: "
                    f"expected {plan.sha256}, got {digest}"
                )
            _swap_into_place(payload, plan.target, staging)
        except StageError as exc:
            raise StageError(f"{where}: {exc}") from None
        except OSError as exc:  # the work dir's disk, not the source: full, read-only, ...
            raise StageError(f"{where}: cannot write {plan.target}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.line(f"data: placed {plan.local} ({files} files, {size} bytes, sha256 {digest})")
    return {
        "connection": plan.connection.name,
        "remotePath": plan.remote,
        "localPath": plan.local,
        "files": files,
        "bytes": size,
        "sha256": digest,
    }


def _swap_into_place(payload: Path, target: Path, staging: Path) -> None:
    if not os.path.lexists(target) or not (payload.is_dir() or target.is_dir()):
        os.replace(payload, target)  # a file over a file (or nothing): one atomic step
        return
    # os.replace cannot put anything over a directory or a directory over a file, so the old
    # entry is moved aside first, and moved back if the swap fails.
    previous = staging / "previous"
    os.rename(target, previous)
    try:
        os.replace(payload, target)
    except OSError:
        os.rename(previous, target)
        raise


def _digest(path: Path) -> tuple[int, int, str]:
    """(files, bytes, sha256) of a file, or of a directory's sorted sha256sum listing."""
    if path.is_file():
        return 1, path.stat().st_size, _file_sha256(path)
    entries = []
    total = 0
    for file in path.rglob("*"):
        if file.is_file():
            entries.append((file.relative_to(path).as_posix(), _file_sha256(file)))
            total += file.stat().st_size
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(entries))
    return len(entries), total, hashlib.sha256(listing.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- local ---------------------------------------------------------------------------------


def _fetch_local(connection: Connection, remote: str, payload: Path, log: StageLog) -> None:
    uri = connection.uri
    root = Path(urllib.parse.urlparse(uri).path if uri.startswith("file://") else uri)
    source = root.joinpath(*_safe_parts(remote, "remotePath", "local"))
    log.line(f"data: copying {source}")
    try:
        if source.is_dir():
            shutil.copytree(source, payload)
        elif source.is_file():
            shutil.copyfile(source, payload)
        else:
            raise StageError(f"missing object: {source} does not exist")
    except OSError as exc:
        raise StageError(f"cannot copy {source}: {exc}") from None


# --- http(s) -------------------------------------------------------------------------------


def _fetch_http(connection: Connection, remote: str, payload: Path, log: StageLog) -> None:
    base = urllib.parse.urlsplit(connection.uri)
    if base.scheme not in ("http", "https") or not base.hostname:
        raise StageError(f"connection {connection.name!r}: uri must be an http(s) URL")
    if remote.endswith("/"):
        raise StageError(f"{remote!r}: http connections serve single files, not directories")
    # Joined by hand, not urljoin: a remotePath like '//other.host/x' must not change the host
    # that receives the credentials.
    path = (
        base.path.rstrip("/") + "/" + urllib.parse.quote(remote.lstrip("/"))
        if remote
        else base.path
    )
    url = urllib.parse.urlunsplit((base.scheme, base.netloc, path, "", ""))
    # Never show userinfo, should a uri carry any.
    shown = urllib.parse.urlunsplit((base.scheme, base.netloc.rpartition("@")[2], path, "", ""))
    request = urllib.request.Request(url, headers={"User-Agent": "legion-ci"})
    options = connection.options or {}
    # Unredirected headers are not forwarded if the server redirects elsewhere.
    headers = options.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise StageError(f"connection {connection.name!r}: headers must be a mapping")
    for key, value in headers.items():
        request.add_unredirected_header(str(key), str(value))
    if options.get("username") is not None:
        token = f"{options['username']}:{options.get('password') or ''}".encode()
        request.add_unredirected_header("Authorization", "Basic " + b64encode(token).decode())
    log.line(f"data: downloading {shown}")
    try:
        with (
            urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response,
            open(payload, "wb") as out,
        ):
            shutil.copyfileobj(response, out, _CHUNK)
            announced = response.headers.get("Content-Length")
            written = out.tell()
        # Sized reads from http.client end quietly when the server hangs up early; only the
        # announced length tells a complete download from a truncated one.
        if announced and announced.isdigit() and int(announced) != written:
            raise StageError(f"truncated download of {shown}: got {written} of {announced} bytes")
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (404, 410):
            raise StageError(f"missing object: {shown} (HTTP {exc.code})") from None
        if exc.code in (401, 403):
            raise StageError(
                f"access denied to {shown} (HTTP {exc.code}); check the "
                f"credentials of connection {connection.name!r}"
            ) from None
        raise StageError(f"{shown} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise StageError(f"storage unreachable: {shown} ({exc.reason})") from None
    except (TimeoutError, ConnectionError) as exc:
        raise StageError(f"storage unreachable: {shown} ({exc})") from None
    except http.client.HTTPException as exc:
        raise StageError(f"truncated download of {shown} ({type(exc).__name__})") from None


# --- s3 ------------------------------------------------------------------------------------


def _fetch_s3(connection: Connection, remote: str, payload: Path, log: StageLog) -> None:
    # Imported here: boto3 takes a noticeable time to import and most commands never need it.
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as S3ConnectionError

    parsed = urllib.parse.urlsplit(connection.uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StageError(f"connection {connection.name!r}: uri must look like s3://bucket/prefix")
    bucket = parsed.netloc
    prefix = parsed.path.strip("/")
    key = "/".join(part for part in (prefix, remote.strip("/")) if part)
    want_tree = remote.endswith("/") or (
        not remote.strip("/.") and (not prefix or parsed.path.endswith("/"))
    )
    shown = f"s3://{bucket}/{key}"

    client = s3_client(connection)

    def fail(exc: Exception, what: str) -> StageError:
        if isinstance(exc, ClientError):
            if _s3_missing(exc):
                return StageError(f"missing object: {what}")
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StageError(
                    f"access denied to {what} ({code}); check the credentials of "
                    f"connection {connection.name!r}"
                )
            return StageError(f"{what}: {code} {error.get('Message', '')}".rstrip())
        if isinstance(exc, S3ConnectionError | HTTPClientError):
            return StageError(f"storage unreachable: {what} ({exc})")
        return StageError(f"{what}: {exc}")

    log.line(f"data: downloading {shown}" + ("/" if want_tree and key else ""))
    try:
        objects: list[tuple[str, str]] = []  # (key, path relative to payload)
        if not want_tree:
            try:
                client.head_object(Bucket=bucket, Key=key)
                objects = [(key, "")]
            except ClientError as exc:
                # Not an object: it may still name a "folder" of several objects.
                if not _s3_missing(exc):
                    raise
        if not objects:
            objects = _s3_tree(client, bucket, key + "/" if key else "", shown)
        for object_key, relative in objects:
            out = payload.joinpath(*_safe_parts(relative, "object key", shown))
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                body = client.get_object(Bucket=bucket, Key=object_key)["Body"]
                with open(out, "wb") as handle:
                    for chunk in body.iter_chunks(_CHUNK):
                        handle.write(chunk)
            except (ClientError, BotoCoreError) as exc:
                raise fail(exc, f"s3://{bucket}/{object_key}") from None
    except (ClientError, BotoCoreError) as exc:
        raise fail(exc, shown) from None


def _s3_missing(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


def _s3_tree(client: Any, bucket: str, prefix: str, shown: str) -> list[tuple[str, str]]:
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            # Keys ending in '/' are folder markers some tools create, not data.
            if not item["Key"].endswith("/"):
                objects.append((item["Key"], item["Key"][len(prefix) :]))
    if not objects:
        raise StageError(f"missing object: no object at or under {shown}")
    return objects


_FETCHERS: dict[str, _Fetcher] = {
    "local": _fetch_local,
    "http": _fetch_http,
    "s3": _fetch_s3,
}
