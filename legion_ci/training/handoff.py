"""What a training Job and its pod agree on; below both, so neither imports the other."""

from __future__ import annotations

# Set inside the training Job's pod, where the same pipeline runs the train stage locally
# instead of creating another Job.
IN_TRAINING_POD = "LEGION_CI_TRAINING_POD"
# The pod's S3-compatible endpoint (the `s3` connection's `endpoint`), set on the Job.
ENDPOINT_ENV = "LEGION_S3_ENDPOINT"


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix; ValueError for anything else."""
    if not url.startswith("s3://") or "/" not in url[5:]:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")
