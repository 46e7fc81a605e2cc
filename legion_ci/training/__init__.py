"""Training on a Kubernetes cluster, the train stage's `cluster:`.

- handoff.py: what the CI side and the pod agree on (the pod marker, the storage endpoint
  variable, the s3://bucket/prefix form); imports nothing of legion-ci, so both sides can;
- job.py: the CI side: render the Job, follow it, fetch and check its result;
- the pod's entry point is legion_ci/cli/training_pod.py (`python -m
  legion_ci.cli.training_pod`): the train stage, then the result to object storage. It runs a
  pipeline through legion_ci.api, so it sits on the top floor with the command line.
"""
