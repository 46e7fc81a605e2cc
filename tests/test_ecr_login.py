"""`type: ecr` connections against moto's ECR and STS, run as a real HTTP server on 127.0.0.1
with IAM authentication on (INITIAL_NO_AUTH_ACTION_COUNT): boto3 signs real requests, moto
checks the keys and the policies, assumes the role, and answers GetAuthorizationToken.

moto's token is always `AWS:<account>-auth-token`, so the tests' Debian registry gets that user
and password in its htpasswd: the push then proves the login went from ECR through the auth
file (buildah/skopeo) or the engine's auth_config (Docker) to a registry that checks it. The
registry is the local one, not ECR: moto serves no registry API.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_support import BASE_IMAGE, manifest_digest, package_ctx, registry, tiny_binary
from procs import free_port, http_ok, service
from test_buildah_packaging import no_engine, store  # noqa: F401 (fixtures: buildah, no dockerd)

from legion_ci.errors import StageError
from legion_ci.integrations.base import Connection, PackageTarget
from legion_ci.integrations.clients import registry_auth
from legion_ci.packaging.docker_rest import DockerRestPackager

ACCOUNT = "123456789012"  # moto's default account
TOKEN = f"{ACCOUNT}-auth-token"  # the password moto's GetAuthorizationToken hands out
ROLE = f"arn:aws:iam::{ACCOUNT}:role/legion-ci-pusher"
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/ci"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
# The IAM calls that set up the user and role, made before moto starts checking keys.
SETUP_CALLS = 6


class Moto:
    def __init__(self, url: str, key_id: str, secret: str) -> None:
        self.url, self.key_id, self.secret = url, key_id, secret


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = tmp_path_factory.mktemp("moto")
    argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}
    with service(argv, root / "moto.log", ready=http_ok(f"{url}/moto-api/"), env=env):
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="ci")
        iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument=ALLOW_ALL)
        key = iam.create_access_key(UserName="ci")["AccessKey"]
        iam.create_role(RoleName="legion-ci-pusher", AssumeRolePolicyDocument=TRUST)
        iam.put_role_policy(RoleName="legion-ci-pusher", PolicyName="all", PolicyDocument=ALLOW_ALL)
        # A role whose trust policy names someone else (moto answers 500 for an unknown role).
        iam.create_role(
            RoleName="not-for-ci", AssumeRolePolicyDocument=TRUST.replace("user/ci", "user/other")
        )
        yield Moto(url, key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture(scope="module")
def ecr_reg(tmp_path_factory: pytest.TempPathFactory):
    """The tests' registry, also accepting moto's ECR login (user AWS)."""
    with registry(tmp_path_factory.mktemp("ecr-registry"), more_users={"AWS": TOKEN}) as found:
        yield found


def ecr_connection(moto: Moto, uri: str, **options: str) -> Connection:
    given = {
        "region": "eu-west-1",
        "endpoint": moto.url,
        "keyID": moto.key_id,
        "keySecret": moto.secret,
        **options,
    }
    return Connection("ecr", "ecr", uri, {k: v for k, v in given.items() if v})


def assert_no_token(tmp_path: Path, *texts: str) -> None:
    """Neither the token nor the base64 `AWS:token` of an auth file in any file or text."""
    forms = [TOKEN, base64.b64encode(f"AWS:{TOKEN}".encode()).decode()]
    # The Docker CLI's and the containers tools' default credential stores, too.
    stores = [Path.home() / ".docker" / "config.json", Path("/run/containers/0/auth.json")]
    for path in [*tmp_path.rglob("*"), *(p for p in stores if p.exists())]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not any(form.encode() in data for form in forms), path
    assert not any(form in text for form in forms for text in texts)


def test_login_through_moto_with_a_role_gives_the_registry_user_and_token(moto, ecr_reg):
    auth = registry_auth(ecr_connection(moto, ecr_reg.address, role=ROLE))
    assert auth.username is None and TOKEN not in repr(auth)
    with pytest.raises(StageError, match="no ECR login fetched"):
        auth.auth_config()  # never anonymous by mistake
    fresh = auth.fresh()
    assert (fresh.username, fresh.password, fresh.registry) == ("AWS", TOKEN, ecr_reg.address)
    assert TOKEN not in repr(fresh)


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"keySecret": "not-the-secret"}, "", "SignatureDoesNotMatch"),
        ({"keyID": "AKIAUNKNOWNKEY000000"}, "", "InvalidClientTokenId"),
        ({"role": f"arn:aws:iam::{ACCOUNT}:role/not-for-ci"}, "role", "sts:AssumeRole"),
        ({"endpoint": f"http://127.0.0.1:{free_port()}"}, "", "Could not connect"),
        ({"region": ""}, "", "region: missing"),
        ({"keySecret": ""}, "", "keySecret: missing"),
    ],
)
def test_a_refused_login_is_one_located_line(moto, tmp_path, options, field, says):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("connections:\n  ecr:\n    type: ecr\n    role: x\n")
    connection = ecr_connection(moto, "127.0.0.1:5000", **options)
    connection.located = {
        "": f"{pipeline}:2:3: connections.ecr",
        "role": f"{pipeline}:4:11: connections.ecr.role",
    }
    with pytest.raises(StageError) as info:
        registry_auth(connection).fresh()
    message = str(info.value)
    assert "\n" not in message and says in message, message
    where = "4:11: connections.ecr.role" if field else "2:3: connections.ecr"
    assert message.startswith(f"{pipeline}:{where}: "), message
    assert moto.secret not in message


def test_without_boto3_the_error_says_what_to_install(moto, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StageError) as info:
        registry_auth(ecr_connection(moto, "127.0.0.1:5000")).fresh()
    assert "needs boto3 (a legion-ci dependency): pip install boto3" in str(info.value)


ECR_CONNECTION = """\
  registry:
    type: ecr
    uri: 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    keyID: ${env:AWS_ACCESS_KEY_ID}
    keySecret: ${env:AWS_SECRET_ACCESS_KEY}
    role: arn:aws:iam::123456789012:role/legion-ci-pusher
"""


def test_the_pipeline_locates_the_connection_and_accepts_it_only_for_pushing(moto, tmp_path):
    from conftest import copy_wine_project

    from legion_ci.errors import SpecError
    from legion_ci.spec.validate import load_pipeline

    pipeline = copy_wine_project(tmp_path).with_name("wine-docker.yaml")
    text = pipeline.read_text()
    start = text.index("  registry:\n")
    end = text.index("stages:")
    text = text[:start] + ECR_CONNECTION + text[end:]
    pipeline.write_text(text)
    env = {"AWS_ACCESS_KEY_ID": moto.key_id, "AWS_SECRET_ACCESS_KEY": moto.secret}
    loaded = load_pipeline(pipeline, env)
    connection = loaded.connections["registry"]
    line = text[: text.index("    role:")].count("\n") + 1
    assert connection.where("role") == f"{pipeline}:{line}:11: connections.registry.role"
    # An STS endpoint that does not answer: one line, located at the role.
    connection.options["endpoint"] = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StageError) as info:
        registry_auth(connection).fresh()
    assert str(info.value).startswith(f"{pipeline}:{line}:11: connections.registry.role: ")
    # Not a deploy target's connection: refused where the pipeline names it there.
    pipeline.write_text(text + "  deploy:\n    target: docker\n    connection: registry\n")
    with pytest.raises(SpecError, match="of type 'ecr'"):
        load_pipeline(pipeline, env)


@pytest.mark.slow
def test_buildah_pushes_with_the_ecr_login_and_leaves_no_token(
    moto,
    ecr_reg,
    no_engine,  # noqa: F811 (the fixture imported above)
    tmp_path,
    monkeypatch,
):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)
    target = PackageTarget("docker-push", ecr_connection(moto, ecr_reg.address, role=ROLE))
    ctx = package_ctx(
        tiny_binary(tmp_path, "ecrbh"),
        tmp_path / "w",
        targets=[target],
        arguments={"baseImage": BASE_IMAGE, "builder": "buildah", "smokeTest": False},
        secrets=(moto.secret,),
    )
    out = DockerRestPackager().pack(ctx).outputs
    assert out["builder"] == "buildah"
    tag = out["image"].rsplit(":", 1)[1]
    assert manifest_digest(ecr_reg.address, "ecrbh", tag) == out["digest"].split("@")[1]
    log = (tmp_path / "w" / "package.log").read_text()
    assert "verified:" in log
    assert [p for p in temp.rglob("*") if "auth" in p.name] == []
    assert_no_token(tmp_path, json.dumps(out), log)


@pytest.mark.slow
def test_the_docker_engine_pushes_with_the_ecr_login(moto, ecr_reg, engine_env, tmp_path):
    target = PackageTarget("docker-push", ecr_connection(moto, ecr_reg.address))
    ctx = package_ctx(
        tiny_binary(tmp_path, "ecrdk"),
        tmp_path / "w",
        targets=[target],
        arguments={"baseImage": BASE_IMAGE, "builder": "docker", "smokeTest": False},
        secrets=(moto.secret,),
    )
    out = DockerRestPackager().pack(ctx).outputs
    assert out["builder"] == "docker"
    tag = out["image"].rsplit(":", 1)[1]
    assert manifest_digest(ecr_reg.address, "ecrdk", tag) == out["digest"].split("@")[1]
    log = (tmp_path / "w" / "package.log").read_text()
    assert "logged in as AWS" in log and "verified:" in log
    assert_no_token(tmp_path, json.dumps(out), log)
