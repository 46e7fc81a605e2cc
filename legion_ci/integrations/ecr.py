"""An `ecr` connection's registry login: its AWS credentials (or boto3's own chain), after
assuming its `role` when it has one, traded through ECR's GetAuthorizationToken for the
registry's user `AWS` and a password valid for 12 hours.

Called just before the login is used (RegistryAuth.fresh), so the token lives in memory only:
the Docker SDK's auth_config, or buildah's owner-only auth file that is removed after the
push. It is added to the process's redactor too, in case a tool ever echoes it back.
boto3 is imported here, lazily, so `legion-ci --help` does not pay for it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from legion_ci.errors import StageError

if TYPE_CHECKING:
    from legion_ci.integrations.base import Connection

# <account>.dkr.ecr.<region>.amazonaws.com[.cn]: the registry id and region an ECR URI names.
_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
# Bounded, so an AWS endpoint that does not answer fails the stage instead of hanging CI.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30


def _fail(connection: Connection, key: str, message: str) -> StageError:
    return StageError(f"{connection.where(key)}: {message}")


def _text(value: Any) -> str:
    return str(value) if value else ""


def login(connection: Connection, registry: str) -> tuple[str, str]:
    """The registry login (user, password) of `connection`, an `ecr` connection whose uri is
    `registry`; one-line StageError, located at the connection's field, when it cannot be had."""
    from legion_ci.redact import ACTIVE

    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        needs = "an ecr connection needs boto3 (a legion-ci dependency): pip install boto3"
        raise _fail(connection, "", needs) from None

    options = connection.options or {}
    host = _ECR_HOST.match(registry.split("/", 1)[0])
    region = _text(options.get("region")) or (host.group(2) if host else "")
    if not region:
        raise _fail(connection, "", "region: missing, and the uri names no ECR region")
    key_id, secret = _text(options.get("keyID")), _text(options.get("keySecret"))
    if bool(key_id) != bool(secret):
        missing = "keySecret" if key_id else "keyID"
        raise _fail(connection, "", f"{missing}: missing (keyID and keySecret go together)")
    role = _text(options.get("role"))
    # None: boto3 honours AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL.
    endpoint = _text(options.get("endpoint")) or None
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": 2},
    )
    step, field = "sts:AssumeRole" if role else "ecr:GetAuthorizationToken", "role" if role else ""
    try:
        # Without keys: boto3's chain (environment, profile, instance or pod role).
        session = boto3.session.Session(
            aws_access_key_id=key_id or None,
            aws_secret_access_key=secret or None,
            aws_session_token=_text(options.get("sessionToken")) or None,
            region_name=region,
        )
        if role:
            sts = session.client("sts", endpoint_url=endpoint, config=config)
            assumed = sts.assume_role(RoleArn=role, RoleSessionName="legion-ci-push")
            keys = assumed["Credentials"]
            ACTIVE.add(keys["SecretAccessKey"])  # the role's keys are secrets like the token
            ACTIVE.add(keys["SessionToken"])
            session = boto3.session.Session(
                aws_access_key_id=keys["AccessKeyId"],
                aws_secret_access_key=keys["SecretAccessKey"],
                aws_session_token=keys["SessionToken"],
                region_name=region,
            )
            step, field = "ecr:GetAuthorizationToken", ""
        ecr = session.client("ecr", endpoint_url=endpoint, config=config)
        ids = {"registryIds": [host.group(1)]} if host else {}
        data = ecr.get_authorization_token(**ids)["authorizationData"][0]
    except ClientError as exc:
        error = exc.response.get("Error") or {}
        code, text = error.get("Code", "error"), " ".join(str(error.get("Message", "")).split())
        raise _fail(
            connection, field, f"AWS refused {step} in {region}: {code}: {text[:200]}"
        ) from None
    except BotoCoreError as exc:
        text = " ".join(str(exc).split())
        raise _fail(connection, field, f"{step} in {region} failed: {text[:200]}") from None
    except (KeyError, IndexError, TypeError):
        raise _fail(connection, "", f"{step}: ECR answered without authorizationData") from None
    try:
        decoded = base64.b64decode(str(data["authorizationToken"]), validate=True).decode()
    except (KeyError, binascii.Error, UnicodeDecodeError):
        raise _fail(
            connection, "", "ECR's authorizationToken is not base64 of user:password"
        ) from None
    username, _, password = decoded.partition(":")
    if not username or not password:
        raise _fail(connection, "", "ECR's authorizationToken holds no user:password")
    ACTIVE.add(password)
    ACTIVE.add_basic_auth(username, password)
    return username, password
