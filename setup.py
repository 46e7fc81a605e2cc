from setuptools import find_packages, setup

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
    },
    install_requires=[
        "click>=8.1",
        "pyyaml>=6",
        "jsonschema>=4.18",
        "mlflow>=3",
        "docker>=7",
        "kubernetes>=29",
        "python-jenkins>=1.8",
        "jenkins-job-builder>=6",
        "boto3>=1.28",
        "uvicorn>=0.30",
        "httptools>=0.6",
        "uvloop>=0.19",
        "orjson>=3.9",
        "fastjsonschema>=2.19",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "ruff>=0.5",
            "moto[server]>=5",
            "scikit-learn>=1.3",
            "hypothesis>=6.100",
            "schemathesis>=4",
        ],
        # legion_ci.airflow: the operators (legion-ci itself may live in another venv).
        "airflow": ["apache-airflow>=3"],
    },
    entry_points={
        "console_scripts": ["legion-ci=legion_ci.cli.main:main"],
    },
)
