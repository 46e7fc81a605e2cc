"""Pushing the built image, and proving that the registry holds what was built.

The push's JSON stream is read to its end and every `error` / `errorDetail` in it fails the
stage: a push that reports an error is never taken for a success. The digest the registry
gives is pulled back through the engine, which checks the manifest against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from legion_ci.errors import StageError
from legion_ci.integrations.clients import RegistryAuth
from legion_ci.integrations.docker_engine import (
    api_error_text,
    connection_errors,
    lost_engine_text,
    one_line,
    stream_error,
)
from legion_ci.processes import StageLog


def _split_reference(reference: str) -> tuple[str, str]:
    """`host:5000/name:tag` -> (`host:5000/name`, `tag`)."""
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"


def push(client: Any, reference: str, auth: RegistryAuth, log: StageLog) -> str:
    """Push `reference`, read the stream to its end, return the digest the registry gave."""
    from docker.errors import APIError

    repository, tag = _split_reference(reference)
    log.line(f"$ docker push {reference}")
    digest = None
    seen: set[tuple[str, str]] = set()
    try:
        stream: Iterable[dict[str, Any]] = client.api.push(
            repository, tag=tag, stream=True, decode=True, auth_config=auth.auth_config()
        )
        for chunk in stream:
            error = stream_error(chunk)
            if error:
                raise StageError(f"push of {reference} failed: {one_line(error)}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            status = str(chunk.get("status", ""))
            key = (str(chunk.get("id", "")), status)
            if status and key not in seen and not chunk.get("progressDetail", {}).get("total"):
                seen.add(key)
                log.line(f"{key[0]}: {status}" if key[0] else status)
    except APIError as exc:
        raise StageError(f"push of {reference} failed: {api_error_text(exc)}") from None
    except connection_errors() as exc:
        raise StageError(f"push of {reference} failed: {lost_engine_text(exc)}") from None
    except OSError as exc:
        raise StageError(f"push of {reference} failed: {exc}") from None
    if not digest:
        raise StageError(f"push of {reference}: the registry returned no digest")
    return digest


def verify_digest(
    client: Any, repository: str, digest: str, auth: RegistryAuth, image_id: str, log: StageLog
) -> str:
    """Pull `repository@digest` back through the engine (which checks the manifest against
    the digest) and check it is the image that was built."""
    from docker.errors import APIError

    reference = f"{repository}@{digest}"
    try:
        pulled = client.images.pull(reference, auth_config=auth.auth_config())
    except APIError as exc:
        raise StageError(f"pull of {reference} failed: {api_error_text(exc)}") from None
    if pulled.id != image_id:
        raise StageError(f"{reference} is image {pulled.id}, not the image just built ({image_id})")
    log.line(f"verified: {reference} pulls back as {image_id}")
    return reference
