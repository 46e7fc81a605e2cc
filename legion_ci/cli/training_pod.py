"""What a Kubernetes training Job's pod runs: the train stage, then the result to object storage.

    python -m legion_ci.cli.training_pod --pipeline PIPELINE --upload s3://BUCKET/PREFIX

Runs `legion-ci stage train PIPELINE` in-process (data bindings, tracking, gates and the
self-check as usual), then uploads `<prefix>/<model>-<version>.zip` and `<prefix>/result.json`
(the zip's sha256 and size, the stage's metrics, tags and outputs) to S3-compatible storage:
endpoint from $LEGION_S3_ENDPOINT, credentials from the usual AWS variables, which the Job
takes from a Secret. result.json is written last, so its presence means the upload is whole.
Exit codes are legion-ci's (1: the stage failed; 2: invalid input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from legion_ci.training.handoff import ENDPOINT_ENV, IN_TRAINING_POD, split_s3


def upload(record_stage: dict, upload_url: str) -> dict:
    from legion_ci.gppi.archive import sha256_file

    artifact = Path(record_stage["outputs"]["artifact"])
    bucket, prefix = split_s3(upload_url)
    from legion_ci.integrations.clients import s3_client

    # No connection in the pod: the AWS_* variables from the Job's Secret, boto3's own chain.
    client = s3_client(endpoint=os.environ.get(ENDPOINT_ENV))
    key = f"{prefix}/{artifact.name}"
    client.upload_file(str(artifact), bucket, key)
    result = {
        "artifact_key": key,
        "sha256": sha256_file(artifact),
        "size": artifact.stat().st_size,
        "metrics": record_stage.get("metrics", {}),
        "tags": record_stage.get("tags", {}),
        "outputs": record_stage.get("outputs", {}),
    }
    client.put_object(Bucket=bucket, Key=f"{prefix}/result.json", Body=json.dumps(result).encode())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="legion_ci.cli.training_pod")
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--upload", required=True, metavar="s3://BUCKET/PREFIX")
    options = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The pipeline may say `cluster:`: inside the pod the train stage runs here, not again.
    os.environ[IN_TRAINING_POD] = "1"

    from botocore.exceptions import BotoCoreError, ClientError

    from legion_ci.api import run_pipeline
    from legion_ci.errors import LegionError

    try:
        split_s3(options.upload)
        record = run_pipeline(options.pipeline, stage="train", echo=sys.stdout)
        stage = record.to_dict()["stages"]["train"]
        result = upload(stage, options.upload)
    except (BotoCoreError, ClientError) as exc:
        print(f"legion-ci: error: upload to {options.upload} failed: {exc}", file=sys.stderr)
        return 1
    except LegionError as exc:
        print(f"legion-ci: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:
        print(f"legion-ci: error: {exc}", file=sys.stderr)
        return 2
    print(f"uploaded {result['artifact_key']} (sha256 {result['sha256']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
