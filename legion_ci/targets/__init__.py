"""Deploy targets (Legion's Model Deployers), registered as `kind: DeployTarget`.

- `process` (process.py): `legion-ci serve` as a background process on this machine;
- `docker` (docker.py, containers.py, docker_deployments.py): the packaged image as a
  container on the local Docker engine;
- `kubernetes` (kubernetes.py): a Deployment and a Service applied through the Python client.
Process and docker replace a running version the same way (replacement.py).
Every target records what it deployed in the state store (state.py), which
`legion-ci deployments` reads.
"""
