"""Jenkins jobs from pipeline files: rendered offline (jenkins-job-builder), synced to a
controller (python-jenkins). The shared library itself lives in jenkins/shared-library/."""
