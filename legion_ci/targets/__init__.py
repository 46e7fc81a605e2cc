"""Deploy targets (Legion's Model Deployers), registered as `kind: DeployTarget`.

- `process` (process.py): `legion-ci serve` as a background process on this machine;
- `kubernetes` (kubernetes.py): a Deployment and a Service applied through the Python client.
Every target records what it deployed in the state store (state.py), which
`legion-ci deployments` reads.
"""
