"""Training on a Kubernetes cluster, the train stage's `cluster:`.

- handoff.py: what the CI side and the pod agree on (the pod marker, the storage endpoint
  variable, the s3://bucket/prefix form); imports nothing of legion-ci, so both sides can;
- job.py: the CI side: render the Job, follow it, fetch and check its result;
- pod.py: the pod's entry point (`python -m legion_ci.training.pod`): the train stage, then
  the result to object storage. It sits on top (it runs a pipeline through legion_ci.api), and
  nothing of legion-ci imports it.
"""
