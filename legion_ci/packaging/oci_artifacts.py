"""The SBOM and provenance beside an image in its registry, as OCI artifacts, by cosign's tag
scheme (`sha256-<hex>.sbom`, `sha256-<hex>.att`): Debian's registry has no referrers API.

Plain OCI distribution calls (urllib), not the `oras` package: four requests (blob upload,
manifest put, manifest and blob get), with the credentials kept in memory only, Basic auth or
the registry's Bearer token exchange, and nothing of oras' own login store on disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from legion_ci.errors import InputError, StageError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
_ACCEPT = ", ".join(
    [
        MANIFEST_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
SUFFIXES = {"sbom": ".sbom", "provenance": ".att"}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TIMEOUT = 30


class NotFound(StageError):
    """The registry has no such manifest or blob (HTTP 404)."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """`host[:port]/path[:tag][@sha256:...]`; the registry part is required."""
        rest, _, digest = text.partition("@")
        registry, slash, path = rest.partition("/")
        if (
            not slash
            or not path
            or not ("." in registry or ":" in registry or registry == "localhost")
        ):
            raise InputError(f"{text!r}: not an image reference with a registry (host[:port]/name)")
        tag = None
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if digest and not _DIGEST.match(digest):
            raise InputError(f"{text!r}: the digest is not sha256:<64 hex>")
        return cls(registry, path, tag, digest or None)


def tag_for(digest: str, kind: str) -> str:
    """cosign's tag for `kind` (sbom | provenance) beside the image `digest`."""
    return digest.replace(":", "-") + SUFFIXES[kind]


class Registry:
    """One registry, with optional credentials (kept in memory, never logged)."""

    def __init__(self, registry: str, username: str | None = None, password: str | None = None):
        self.registry = registry
        host = registry.rsplit(":", 1)[0]
        # Plain HTTP only on this machine, as the Docker engine and skopeo allow it.
        self.base = ("http" if host in ("127.0.0.1", "localhost") else "https") + f"://{registry}"
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username and password is not None
            else None
        )
        self._auth: str | None = self._basic

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            request = urllib.request.Request(url, data=body, method=method)
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            if self._auth:
                request.add_header("Authorization", self._auth)
            try:
                with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:
                    return answer.status, dict(answer.headers), answer.read()
            except urllib.error.HTTPError as exc:
                challenge = exc.headers.get("WWW-Authenticate", "")
                if exc.code == 401 and attempt == 1 and challenge.lower().startswith("bearer"):
                    self._auth = "Bearer " + self._token(challenge)
                    continue
                if exc.code == 401:
                    raise StageError(f"registry {self.registry}: unauthorized ({method})") from None
                if exc.code == 404:
                    path = urllib.parse.urlparse(url).path
                    raise NotFound(f"registry {self.registry}: {path}: not found") from None
                detail = exc.read()[:300].decode("utf-8", "replace").replace("\n", " ")
                raise StageError(
                    f"registry {self.registry}: {method} {urllib.parse.urlparse(url).path} "
                    f"answered HTTP {exc.code} {detail}".strip()
                ) from None
            except OSError as exc:
                raise StageError(f"registry {self.registry} does not answer: {exc}") from None
        raise StageError(f"registry {self.registry}: unauthorized ({method})")

    def _token(self, challenge: str) -> str:
        """The Bearer token exchange (Docker Hub, GHCR, ...), with the Basic credentials."""
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = fields.pop("realm", "")
        if not realm:
            raise StageError(f"registry {self.registry}: a Bearer challenge without a realm")
        request = urllib.request.Request(realm + "?" + urllib.parse.urlencode(fields))
        if self._basic:
            request.add_header("Authorization", self._basic)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:
                found = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise StageError(
                f"registry {self.registry}: no token from its auth server: {exc}"
            ) from None
        token = found.get("token") or found.get("access_token")
        if not token:
            raise StageError(f"registry {self.registry}: the auth server gave no token")
        return str(token)

    def _url(self, repository: str, *parts: str) -> str:
        return f"{self.base}/v2/{repository}/" + "/".join(parts)

    # -- writing -----------------------------------------------------------------------------
    def put_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _, headers, _ = self._request("POST", self._url(repository, "blobs", "uploads/"))
        location = urllib.parse.urljoin(self.base, _header(headers, "Location"))
        separator = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        return digest

    def push_artifact(
        self, repository: str, tag: str, document: bytes, media_type: str, subject: str
    ) -> str:
        """One document as an OCI artifact (empty config, one layer) under `tag`; its manifest
        digest, read back from the registry."""
        empty = self.put_blob(repository, b"{}")
        layer = self.put_blob(repository, document)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": media_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": empty, "size": 2},
            "layers": [{"mediaType": media_type, "digest": layer, "size": len(document)}],
            "annotations": {"org.opencontainers.image.description": f"{media_type} of {subject}"},
        }
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        self._request(
            "PUT", self._url(repository, "manifests", tag), body, {"Content-Type": MANIFEST_TYPE}
        )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if self.resolve(repository, tag) != digest:
            raise StageError(f"{self.registry}/{repository}:{tag}: the registry serves another")
        return digest

    # -- reading -----------------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> tuple[str, dict[str, Any]]:
        _, headers, body = self._request(
            "GET", self._url(repository, "manifests", reference), headers={"Accept": _ACCEPT}
        )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        served = headers.get("Docker-Content-Digest") or headers.get("docker-content-digest")
        if served and served != digest:
            raise StageError(f"{self.registry}/{repository}@{served}: the manifest's bytes differ")
        return digest, json.loads(body)

    def resolve(self, repository: str, reference: str) -> str:
        return self.manifest(repository, reference)[0]

    def blob(self, repository: str, digest: str) -> bytes:
        _, _, body = self._request("GET", self._url(repository, "blobs", digest))
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise StageError(f"{self.registry}/{repository}@{digest}: the blob's bytes differ")
        return body


def _header(headers: dict[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    raise StageError(f"registry answer without a {name} header")


def push_attestations(
    registry: Registry, repository: str, digest: str, documents: dict[str, bytes]
) -> dict[str, str]:
    """`documents` ({"sbom": ..., "provenance": ...}) beside `repository@digest`: kind ->
    `registry/repository:tag@manifest digest`."""
    from legion_ci.packaging.attestations import PROVENANCE_MEDIA_TYPE, SBOM_MEDIA_TYPE

    types = {"sbom": SBOM_MEDIA_TYPE, "provenance": PROVENANCE_MEDIA_TYPE}
    pushed = {}
    for kind, document in documents.items():
        tag = tag_for(digest, kind)
        found = registry.push_artifact(repository, tag, document, types[kind], digest)
        pushed[kind] = f"{registry.registry}/{repository}:{tag}@{found}"
    return pushed


def fetch_attestations(registry: Registry, reference: Reference) -> dict[str, Any]:
    """The image's digest (a tag resolved) and its SBOM and provenance documents, parsed."""
    digest = reference.digest or registry.resolve(reference.repository, reference.tag or "latest")
    found: dict[str, Any] = {"image": f"{reference.registry}/{reference.repository}@{digest}"}
    for kind in SUFFIXES:
        tag = tag_for(digest, kind)
        try:
            _, manifest = registry.manifest(reference.repository, tag)
        except NotFound:
            raise NotFound(
                f"{found['image']}: no {kind} beside it (no tag {tag}); was it pushed by "
                "legion-ci's docker-rest packager?"
            ) from None
        layers = manifest.get("layers") or []
        if len(layers) != 1:
            raise StageError(f"{reference.repository}:{tag}: not a one-document artifact")
        found[kind] = json.loads(registry.blob(reference.repository, str(layers[0]["digest"])))
    return found
